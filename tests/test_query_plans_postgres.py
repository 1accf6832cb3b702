"""On PostgreSQL too, hot queries use their indexes, so commands cost the same on a year of
history. Every read the commands run is captured and explained with sequential scans
and sorts priced out: what still scans, or sorts, probe history has no index to serve it."""

from __future__ import annotations

import re
from typing import Any

import psycopg
import pytest

from voicefallback.store.postgres import PostgresStore

SONNET = "anthropic:claude-3-5-sonnet-latest"
HISTORY = ("probes", "status_changes")


def nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    found = [plan]
    for child in plan.get("Plans", []):
        found += nodes(child)
    return found


def explain(url: str, sql: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
    with psycopg.connect(url, autocommit=True) as conn:
        # Tiny tables make scans and sorts the cheap choice: price them out, so what remains
        # is what no index can do.
        for setting in ("enable_seqscan", "enable_bitmapscan", "enable_sort"):
            conn.execute(f"SET {setting} = off")
        row = conn.execute(f"EXPLAIN (FORMAT JSON) {sql.replace('?', '%s')}", params).fetchone()
    assert row is not None
    return nodes(row[0][0]["Plan"])


def test_hot_queries_search_indexes_on_postgres(cli, pg_url, monkeypatch):
    monkeypatch.setenv("VOICEFALLBACK_DB", pg_url)
    cli("probe", "--json")
    for index in range(30):
        cli("start", "--simulation-id", f"s{index % 3}", "--primary", SONNET, "--json")
    seen: list[tuple[str, tuple[Any, ...]]] = []
    original = PostgresStore._fetch

    def tracing(self: PostgresStore, sql: str, params: Any = ()) -> list[Any]:
        seen.append((sql, tuple(params)))
        return original(self, sql, params)

    monkeypatch.setattr(PostgresStore, "_fetch", tracing)
    for command in [
        ("health", "--json"),
        ("health", "--history", SONNET, "--json"),
        ("fallbacks", "--json", "--limit", "50"),
        ("fallbacks", "--json", "--simulation-id", "s1"),
        ("fallbacks", "--json", "--since", "2026-01-01T00:00:00Z", "--limit", "5"),
        ("start", "--simulation-id", "s9", "--primary", SONNET, "--json"),
    ]:
        assert cli(*command).exit_code == 0
    reads = [(s, p) for s, p in seen if re.match(r"\s*SELECT .* FROM (probes|events|status)", s)]
    assert any("FROM events" in s for s, _ in reads) and any("FROM probes" in s for s, _ in reads)
    for sql, params in reads:
        for node in explain(pg_url, sql, params):
            relation = node.get("Relation Name")
            if node["Node Type"] == "Seq Scan" and relation in HISTORY:
                pytest.fail(f"full scan of {relation}: {sql!r}")
            if node["Node Type"] == "Seq Scan" and relation == "events" and "LIMIT" not in sql:
                pytest.fail(f"unbounded scan of events: {sql!r}")
            if node["Node Type"] == "Sort" and any(t in sql for t in HISTORY):
                pytest.fail(f"history sorted instead of read in index order: {sql!r}")
