"""The `fleet` fixture: a fake provider, keys set, and a directory for a registry and a state.

Not a conftest.py: a test module that needs it says
`pytest_plugins = ["tests.conftest_live", "tests.conftest_frameworks"]`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fake_provider import KEY_ENV, KEYS, KINDS, FakeProvider
from tests.frameworks import Fleet


@pytest.fixture
def fleet(fake_provider: FakeProvider, isolated: Path, monkeypatch: pytest.MonkeyPatch) -> Fleet:
    for kind in KINDS:
        monkeypatch.setenv(KEY_ENV[kind], KEYS[kind])
    return Fleet(fake_provider, isolated)
