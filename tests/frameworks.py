"""What the framework-binding tests and benchmarks share: a registry of fake-provider models.

Model names are the fake provider's directives ("hang", "ttft-3000", "status-503"), so a
registry line says what each model will do; providers are `fake-openai` and `fake-anthropic`.
The fixture is in tests/conftest_frameworks.py.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.fake_provider import KEY_ENV, KINDS, FakeProvider

BUDGET_MS = 300
TURN_PROMPT = "Hello?"  # what every test turn says
TIMEOUT_S = 3.0


def registry_text(
    url: str,
    model_ids: Sequence[str],
    *,
    budget_ms: int = BUDGET_MS,
    timeout_s: float = TIMEOUT_S,
    prefix: str = "fake-",
) -> str:
    """A registry whose providers `<prefix>openai` and `<prefix>anthropic` are the fake."""
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
            f"[providers.{prefix}{kind}]",
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

    def rows(self, kind: str = "session") -> list[tuple[str, str, bool, str | None]]:
        """(model, kind, ok, error) of every recorded call of `kind`, oldest first (the
        router also probes never-checked models in the background: kind "probe")."""
        if not self.db.exists():
            return []
        with sqlite3.connect(self.db) as conn:
            found = conn.execute(
                "SELECT model, kind, ok, error FROM probes WHERE kind = ? ORDER BY id", (kind,)
            )
            return [(m, k, bool(ok), e) for m, k, ok, e in found]

    def messages(self) -> list[str]:
        with sqlite3.connect(self.db) as conn:
            return [m for (m,) in conn.execute("SELECT message FROM probes") if m]

    def asked(self, model_id: str) -> int:
        """How many turns the fake received for the model `model_id` names (not probes)."""
        received = self.fake.received(model_id.split(":", 1)[1])
        return sum(TURN_PROMPT in str(r.body.get("messages")) for r in received)
