"""Hot queries use their indexes, so commands cost the same on a year of history.

Every statement the commands run is captured and explained: a probe-history query must
search an index, and an events query must search one or be bounded by LIMIT.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator

import pytest

import voicefallback.store.statefile as store_module

SONNET = "anthropic:claude-3-5-sonnet-latest"


@pytest.fixture
def statements(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    seen: list[str] = []
    original = store_module.connect

    def tracing(*args, **kwargs):  # type: ignore[no-untyped-def]
        conn = original(*args, **kwargs)
        conn.set_trace_callback(seen.append)
        return conn

    monkeypatch.setattr(store_module, "connect", tracing)
    yield seen


def plan(db, sql: str) -> list[str]:
    with sqlite3.connect(db) as conn:
        return [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}")]


def test_hot_queries_search_indexes(cli, db_file, statements):
    cli("probe", "--json")
    for index in range(30):
        cli("start", "--simulation-id", f"s{index % 3}", "--primary", SONNET, "--json")
    statements.clear()
    commands = [
        ("health", "--json"),
        ("fallbacks", "--json", "--limit", "50"),
        ("fallbacks", "--json", "--simulation-id", "s1"),
        ("fallbacks", "--json", "--since", "2026-01-01T00:00:00Z", "--limit", "5"),
        ("start", "--simulation-id", "s9", "--primary", SONNET, "--json"),
    ]
    for command in commands:
        assert cli(*command).exit_code == 0
    reads = [s for s in statements if re.match(r"\s*SELECT", s, re.I)]
    assert any("FROM events" in s for s in reads) and any("FROM snapshots" in s for s in reads)
    for sql in reads:
        for step in plan(db_file, sql):
            if re.search(r"\bSCAN probes\b", step):
                pytest.fail(f"full scan of probe history: {sql!r} -> {step}")
            bounded = "LIMIT" in sql.upper() or "USING" in step
            if re.search(r"\bSCAN events\b", step) and not bounded:
                pytest.fail(f"unbounded scan of events: {sql!r} -> {step}")
