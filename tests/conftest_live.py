"""Fixtures for the live adapter tests: the fake provider, and real adapters pointed at it.

Not a conftest.py: a test module that needs them says `pytest_plugins = ["tests.conftest_live"]`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fake_provider import KEY_ENV, KEYS, KINDS, FakeProvider, Rig, make_adapter, provider_for


@pytest.fixture
def fake_provider() -> Iterator[FakeProvider]:
    """A running fake provider of its own, stopped after the test."""
    with FakeProvider() as fake:
        yield fake


@pytest.fixture(scope="module")
def live_rig() -> Iterator[Rig]:
    """One fake provider and one adapter per provider type, shared by a test module."""
    with pytest.MonkeyPatch.context() as patch, FakeProvider() as fake:
        for kind in KINDS:
            patch.setenv(KEY_ENV[kind], KEYS[kind])
        providers = {kind: provider_for(fake, kind) for kind in KINDS}
        adapters = {kind: make_adapter(providers[kind]) for kind in KINDS}
        try:
            yield Rig(fake, providers, adapters)
        finally:
            for adapter in adapters.values():
                adapter.close()


@pytest.fixture
def live(live_rig: Rig) -> Rig:
    """The shared rig, with the fake's record of received requests emptied."""
    live_rig.fake.clear()
    return live_rig
