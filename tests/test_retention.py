"""Retention: probe history past history_days goes (as probe runs, or on demand); events stay."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest

from tests.conftest import write_config
from tests.pg_server import rows
from voicefallback import retention
from voicefallback.config import Thresholds, load_registry
from voicefallback.health import apply_probe
from voicefallback.records import Candidate, FallbackEvent, ProbeResult, utcnow
from voicefallback.store import open_store
from voicefallback.store.sqlite import SQLiteStore

REGISTRY = """
[settings]
mode = "stub"
history_days = 30
[providers.p]
type = "openai"
[[models]]
id = "p:short"
history_days = 2
[[models]]
id = "p:long"
history_days = 365
"""
LIMITS = {m: Thresholds() for m in ("p:short", "p:long", "p:retired")}


def seed(db: Path | str, ages_days: list[float], models=("p:short", "p:long", "p:retired")) -> None:
    now = utcnow()
    with open_store(db, write=True) as store:
        store.record(
            [
                ProbeResult(model=m, ok=True, at=now - timedelta(days=age), latency_ms=9, stub=True)
                for age in sorted(ages_days, reverse=True)
                for m in models
            ],
            LIMITS,
            update=apply_probe,
        )
        for age in (400, 1):
            store.record(
                [],
                LIMITS,
                FallbackEvent(
                    uid=f"e{age}",
                    at=now - timedelta(days=age),
                    simulation_id=f"sim-{age}",
                    primary="p:short",
                    chosen="p:long",
                    reason="primary_unhealthy",
                    fallback_source="auto",
                    candidates=[Candidate("p:short", "unhealthy", "timeout")],
                ),
                update=apply_probe,
            )


def count(db: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


@pytest.fixture
def registry_file(config_file: Path) -> Path:
    return write_config(config_file, REGISTRY)


def test_prune_command_applies_each_models_days_and_keeps_events(cli, registry_file, state):
    """The same on both backends."""
    seed(state, [1, 10, 100, 1000])
    result = cli("prune", "--json")
    assert result.exit_code == 0, result.stderr
    doc = result.json
    # p:short keeps 2 days (3 go), p:long 365 (1 goes), p:retired is no longer registered:
    # the global 30 days (2 go).
    assert doc["probesDeleted"] == 3 + 1 + 2 and doc["eventsDeleted"] == 0
    assert doc["vacuumed"] is False and doc["prunedAt"].endswith("Z")
    left = rows(state, "SELECT model, count(*) FROM probes GROUP BY model ORDER BY model")
    assert left == [("p:long", 3), ("p:retired", 2), ("p:short", 1)]
    assert rows(state, "SELECT count(*) FROM events") == [(2,)]

    again = cli("prune", "--events-older-than", "30", "--vacuum", "--json").json
    assert again["probesDeleted"] == 0 and again["eventsDeleted"] == 1 and again["vacuumed"]
    assert rows(state, "SELECT simulation_id FROM events") == [("sim-1",)]
    if isinstance(state, Path):
        assert rows(state, "PRAGMA integrity_check") == [("ok",)]


def test_a_vacuum_that_fails_after_rows_were_deleted_says_so_and_exits_74(
    cli, registry_file, db_file, monkeypatch
):
    from voicefallback.errors import StateBusy

    seed(db_file, [1, 100])

    def busy(self: SQLiteStore) -> None:
        raise StateBusy(f"{db_file}: state file busy: another process kept it locked")

    monkeypatch.setattr(SQLiteStore, "vacuum", busy)
    result = cli("prune", "--vacuum", "--json")
    assert result.exit_code == 74 and result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert f"{db_file}: deleted 2 probe rows and 0 events, then stopped: state file busy" in (
        result.stderr
    )
    assert count(db_file, "SELECT count(*) FROM probes") == [(4,)]  # the deletes stand
    # With nothing deleted first, nothing was written: busy is busy (75).
    again = cli("prune", "--vacuum", "--json")
    assert again.exit_code == 75 and "state file busy" in again.stderr


def test_a_prune_that_fails_after_the_probe_was_recorded_does_not_fail_the_probe(
    cli, registry_file, db_file, monkeypatch
):
    from voicefallback.errors import StateBusy

    seed(db_file, [100])

    def busy(self: SQLiteStore, *args: object, **kwargs: object) -> int:
        raise StateBusy(f"{db_file}: state file busy: another process kept it locked")

    monkeypatch.setattr(SQLiteStore, "prune_probes", busy)
    result = cli("probe", "--json")
    assert result.exit_code == 0, result.stderr
    assert [r["model"] for r in result.json["results"]] == ["p:short", "p:long"]
    assert count(db_file, "SELECT count(*) FROM probes") == [(3 + 2,)]  # recorded, none pruned


def test_prune_people_output_and_a_missing_state_file(cli, registry_file, db_file):
    result = cli("prune")
    assert result.exit_code == 0 and "pruned 0 probe rows and 0 events" in result.stdout
    assert not db_file.exists()  # nothing to prune is no reason to create it


def test_probe_prunes_a_bounded_amount_each_run(cli, registry_file, db_file, monkeypatch):
    monkeypatch.setattr(retention, "AFTER_PROBE_MAX_ROWS", 50)
    seed(db_file, [5 + n / 1000 for n in range(80)], models=("p:short",))
    assert cli("probe", "--json").exit_code == 0
    old = "SELECT count(*) FROM probes WHERE at < strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-2 days')"
    assert count(db_file, old) == [(30,)]
    assert cli("probe", "--json").exit_code == 0
    assert count(db_file, old) == [(0,)]
    assert count(db_file, "SELECT count(*) FROM probes") == [(4,)]  # two runs, two models
    assert count(db_file, "SELECT count(*) FROM events") == [(2,)]


def test_minute_probes_pruned_as_they_go_keep_the_file_from_growing(tmp_path, registry_file):
    """Minute-by-minute probes with history_days = 2, a day at a time, pruned as they go."""
    registry = load_registry(registry_file)
    db = tmp_path / "s.db"
    start = utcnow() - timedelta(days=12)
    sizes = []
    for day in range(12):
        with SQLiteStore.open(db, write=True) as store:
            store.record(
                [
                    ProbeResult(
                        model="p:short",
                        ok=True,
                        at=start + timedelta(days=day, minutes=minute),
                        latency_ms=120,
                        ttft_ms=90,
                        stub=True,
                    )
                    for minute in range(24 * 60)
                ],
                LIMITS,
                update=apply_probe,
            )
        end_of_day = start + timedelta(days=day + 1)
        retention.prune(db, registry, clock=lambda moment=end_of_day: moment)
        with SQLiteStore.open(db, write=False) as store:
            sizes.append(store.size_bytes())
    assert count(db, "SELECT count(*) FROM probes") == [(2 * 24 * 60,)]
    # Once two days are kept, freed pages are reused: the file stops growing.
    assert max(sizes[4:]) <= sizes[3] * 1.1, sizes
