"""Fixtures for the voice-framework bindings: a registry of fake-provider models, a router.

Not a conftest.py: a test module that needs them says
`pytest_plugins = ["tests.conftest_live", "tests.conftest_frameworks"]`. Model names are the
fake provider's directives ("hang", "ttft-3000", "status-503"), so a registry line says what
each model will do; providers are `fake-openai` and `fake-anthropic`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fake_provider import KEY_ENV, KEYS, KINDS, FakeProvider

BUDGET_MS = 300
TIMEOUT_S = 3.0


def registry_text(
    url: str,
    model_ids: Sequence[str],
    *,
    budget_ms: int = BUDGET_MS,
    timeout_s: float = TIMEOUT_S,
) -> str:
    lines = [
        "[settings]",
        'mode = "live"',
        f"timeout_s = {timeout_s}",
        f"ttft_budget_ms = {budget_ms}",
        "",
    ]
    for kind in KINDS:
        base_url = f"{url}/v1" if kind == "openai" else url
        lines += [
            f"[providers.fake-{kind}]",
            f'type = "{kind}"',
            f'base_url = "{base_url}"',
            f'api_key_env = "{KEY_ENV[kind]}"',
            "",
        ]
    for model_id in dict.fromkeys(model_ids):
        lines += ["[[models]]", f'id = "{model_id}"', ""]
    return "\n".join(lines)


@dataclass
class Fleet:
    """A fake provider and what a worker needs to point at it: a registry and a state file."""

    fake: FakeProvider
    directory: Path

    @property
    def db(self) -> Path:
        return self.directory / "state" / "state.db"

    def config(self, model_ids: Sequence[str], **settings: Any) -> Path:
        path = self.directory / "models.toml"
        path.write_text(registry_text(self.fake.url, model_ids, **settings))
        return path

    def rows(self) -> list[tuple[str, str, bool, str | None]]:
        """(model, kind, ok, error) of every recorded call, oldest first."""
        if not self.db.exists():
            return []
        with sqlite3.connect(self.db) as conn:
            found = conn.execute("SELECT model, kind, ok, error FROM probes ORDER BY id")
            return [(m, k, bool(ok), e) for m, k, ok, e in found]

    def messages(self) -> list[str]:
        with sqlite3.connect(self.db) as conn:
            return [m for (m,) in conn.execute("SELECT message FROM probes") if m]

    def asked(self, model_id: str) -> int:
        """How many requests the fake received for the model `model_id` names."""
        return len(self.fake.received(model_id.split(":", 1)[1]))


@pytest.fixture
def fleet(fake_provider: FakeProvider, isolated: Path, monkeypatch: pytest.MonkeyPatch) -> Fleet:
    for kind in KINDS:
        monkeypatch.setenv(KEY_ENV[kind], KEYS[kind])
    return Fleet(fake_provider, isolated)
