"""The state file at store level: retried writes, disk full, pruning, vacuum, new files."""

from __future__ import annotations

import os
import re
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest

from voicefallback.config import Thresholds
from voicefallback.errors import StateError
from voicefallback.health import apply_probe
from voicefallback.records import Candidate, FallbackEvent, ProbeResult, utcnow
from voicefallback.store import APPLICATION_ID, PRUNE_BATCH, SCHEMA_VERSION
from voicefallback.store.sqlite import SQLiteStore

LIMITS = {"p:a": Thresholds(), "p:b": Thresholds(), "p:gone": Thresholds()}


def call(model: str, at_days_ago: float, ok: bool = True) -> ProbeResult:
    return ProbeResult(
        model=model,
        ok=ok,
        at=utcnow() - timedelta(days=at_days_ago),
        latency_ms=100,
        ttft_ms=100,
        error=None if ok else "timeout",
        stub=True,
    )


def event(uid: str, days_ago: float = 0) -> FallbackEvent:
    return FallbackEvent(
        uid=uid,
        at=utcnow() - timedelta(days=days_ago),
        simulation_id=f"sim-{uid}",
        primary="p:a",
        chosen="p:b",
        reason="primary_unhealthy",
        fallback_source="auto",
        candidates=[Candidate("p:a", "unhealthy", "overloaded")],
    )


def query(db: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_a_retried_event_write_is_stored_once(tmp_path):
    db = tmp_path / "s.db"
    with SQLiteStore.open(db, write=True) as store:
        store.record([call("p:a", 0)], LIMITS, event("e1"), update=apply_probe)
        store.record(
            [], LIMITS, event("e1"), update=apply_probe
        )  # the same event again, as a retry would
    assert query(db, "SELECT uid FROM events") == [("e1",)]


def test_new_file_is_born_0600_in_a_0700_directory_even_with_umask_0(tmp_path):
    db = tmp_path / "deep" / "state" / "s.db"
    old = os.umask(0)
    try:
        SQLiteStore.open(db, write=True).close()
    finally:
        os.umask(old)
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    assert stat.S_IMODE(db.parent.stat().st_mode) == 0o700
    assert sorted(p.name for p in db.parent.iterdir()) == ["s.db"]  # no leftovers
    assert query(db, "PRAGMA application_id") == [(APPLICATION_ID,)]
    assert query(db, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert query(db, "PRAGMA journal_mode") == [("wal",)]
    numbers = [n for (n,) in query(db, "SELECT number FROM migrations ORDER BY number")]
    assert numbers == list(range(1, SCHEMA_VERSION + 1))


def test_a_new_file_made_through_a_dangling_symlink_is_0600_where_the_link_points(tmp_path):
    real = tmp_path / "real" / "s.db"
    link = tmp_path / "s.db"
    link.symlink_to(real)
    old = os.umask(0)
    try:
        with SQLiteStore.open(link, write=True) as store:
            store.record([call("p:a", 0)], LIMITS, update=apply_probe)
    finally:
        os.umask(old)
    assert link.is_symlink()
    assert stat.S_IMODE(real.stat().st_mode) == 0o600
    assert query(real, "SELECT model FROM probes") == [("p:a",)]


def test_sqlite_errors_are_told_apart_by_result_code_not_message_text(tmp_path):
    from voicefallback.errors import StateBusy
    from voicefallback.store.statefile import state_error

    conn = sqlite3.connect(":memory:")
    with pytest.raises(sqlite3.OperationalError) as caught:
        conn.execute("SELECT * FROM busy_locked_readonly")  # SQLITE_ERROR, words in the text
    error = state_error(tmp_path / "s.db", caught.value, "read", 1.0)
    assert not isinstance(error, StateBusy) and error.exit_code == 2
    assert "cannot read state file: no such table: busy_locked_readonly" in str(error)


def test_a_write_kept_out_past_its_wait_is_busy_exit_75_and_writes_nothing(tmp_path, monkeypatch):
    from voicefallback.errors import StateBusy
    from voicefallback.store import sqlite as sqlite_store

    db = tmp_path / "s.db"
    SQLiteStore.open(db, write=True).close()
    monkeypatch.setattr(sqlite_store, "WRITE_DEADLINE_S", 0.2)
    locker = sqlite3.connect(db, isolation_level=None)
    try:
        locker.execute("BEGIN IMMEDIATE")
        with SQLiteStore.open(db, write=True) as store, pytest.raises(StateBusy) as caught:
            store.record([call("p:a", 0)], LIMITS, update=apply_probe)
    finally:
        locker.close()
    assert caught.value.exit_code == 75
    assert "state file busy" in str(caught.value)
    assert query(db, "SELECT count(*) FROM probes") == [(0,)]


def test_a_store_without_waiting_reports_a_held_lock_at_once_and_still_reads(tmp_path, monkeypatch):
    """What an event loop may run itself: a write that would wait is refused, whole."""
    from voicefallback.errors import StateBusy
    from voicefallback.store import statefile

    monkeypatch.setattr(statefile, "BUSY_TIMEOUT_S", 30.0)  # a wait would be plain to see

    db = tmp_path / "s.db"
    with SQLiteStore.open(db, write=True) as store:
        store.record([call("p:a", 0)], LIMITS, update=apply_probe)
    locker = sqlite3.connect(db, isolation_level=None)
    try:
        locker.execute("BEGIN IMMEDIATE")
        with SQLiteStore.open(db, write=True) as opened:
            store = opened.without_waiting()
            began = time.monotonic()
            with pytest.raises(StateBusy):
                store.record([call("p:b", 0)], LIMITS, event=event("e1"), update=apply_probe)
            waited = time.monotonic() - began
            assert list(store.snapshots()) == ["p:a"]  # WAL readers never wait for a writer
        locker.execute("COMMIT")
    finally:
        locker.close()
    assert waited < 10  # not SQLite's busy timeout (30 s here), let alone the retries
    assert query(db, "SELECT count(*) FROM probes") == [(1,)]
    assert query(db, "SELECT count(*) FROM events") == [(0,)]


def test_an_empty_file_is_migrated_in_place_and_read_as_empty_before(tmp_path):
    db = tmp_path / "s.db"
    db.touch()
    with SQLiteStore.open(db, write=False) as store:  # e.g. another process is creating it now
        assert store.snapshots() == {} and store.events() == []
    with SQLiteStore.open(db, write=True) as store:
        store.record([call("p:a", 0)], LIMITS, update=apply_probe)
    assert query(db, "SELECT count(*) FROM probes") == [(1,)]
    assert query(db, "PRAGMA journal_mode") == [("wal",)]


def test_disk_full_mid_write_keeps_nothing_and_the_file_stays_consistent(tmp_path):
    db = tmp_path / "s.db"
    with SQLiteStore.open(db, write=True) as store:
        store.record([call("p:a", 0)], LIMITS, event("before"), update=apply_probe)
    before = query(db, "SELECT count(*) FROM probes")[0][0]
    with SQLiteStore.open(db, write=True) as store:
        assert store._conn is not None
        pages = store._conn.execute("PRAGMA page_count").fetchone()[0]
        store._conn.execute(f"PRAGMA max_page_count = {pages + 2}")
        many = [call("p:a" if n % 2 else "p:b", 0) for n in range(5000)]
        with pytest.raises(StateError) as caught:
            store.record(many, LIMITS, event("during"), update=apply_probe)
        message = str(caught.value)
        assert str(db) in message and "disk full" in message and "\n" not in message
        # The connection is still usable once there is room again.
        store._conn.execute("PRAGMA max_page_count = 1073741823")
        store.record([call("p:b", 0)], LIMITS, event("after"), update=apply_probe)
    assert query(db, "PRAGMA integrity_check") == [("ok",)]
    assert query(db, "SELECT count(*) FROM probes")[0][0] == before + 1
    assert [uid for (uid,) in query(db, "SELECT uid FROM events ORDER BY id")] == [
        "before",
        "after",
    ]


def test_prune_uses_each_models_history_days_and_the_global_one_for_the_rest(tmp_path):
    db = tmp_path / "s.db"
    ages = [0.5, 5, 15, 45, 400]  # days ago
    with SQLiteStore.open(db, write=True) as store:
        for model in ("p:a", "p:b", "p:gone"):
            store.record([call(model, age) for age in reversed(ages)], LIMITS, update=apply_probe)
        now = utcnow()
        # p:a keeps 10 days, p:b keeps 100; p:gone is no longer registered: 30 (global).
        cutoffs = {"p:a": now - timedelta(days=10), "p:b": now - timedelta(days=100)}
        deleted = store.prune_probes(cutoffs, now - timedelta(days=30))
        assert deleted == 3 + 1 + 2
        assert store.prune_probes(cutoffs, now - timedelta(days=30)) == 0
    kept = query(db, "SELECT model, count(*) FROM probes GROUP BY model ORDER BY model")
    assert kept == [("p:a", 2), ("p:b", 4), ("p:gone", 3)]
    # Snapshots are the latest health, not history: all kept.
    assert query(db, "SELECT count(*) FROM snapshots") == [(3,)]


def test_prune_works_in_batches_and_stops_at_max_rows(tmp_path):
    db = tmp_path / "s.db"
    old = PRUNE_BATCH * 2 + 10
    with SQLiteStore.open(db, write=True) as store:
        store.record([call("p:a", 60 + n / 10_000) for n in range(old)], LIMITS, update=apply_probe)
        store.record([call("p:a", 1)], LIMITS, update=apply_probe)
        assert store._conn is not None
        statements: list[str] = []
        store._conn.set_trace_callback(statements.append)
        cutoff = {"p:a": utcnow() - timedelta(days=30)}
        assert store.prune_probes(cutoff, utcnow(), max_rows=PRUNE_BATCH + 5) == PRUNE_BATCH + 5
        assert statements.count("BEGIN IMMEDIATE") == 2  # one short transaction per batch
        assert store.prune_probes(cutoff, utcnow()) == old - PRUNE_BATCH - 5
    assert query(db, "SELECT count(*) FROM probes") == [(1,)]


def test_events_are_pruned_only_when_asked_and_vacuum_keeps_the_files_identity(tmp_path):
    db = tmp_path / "s.db"
    with SQLiteStore.open(db, write=True) as store:
        store.record([], LIMITS, event("old", days_ago=100), update=apply_probe)
        store.record([], LIMITS, event("new", days_ago=1), update=apply_probe)
        store.record([call("p:a", 90) for _ in range(20_000)], LIMITS, update=apply_probe)
        now = utcnow()
        store.prune_probes({}, now - timedelta(days=30))
        assert store.prune_events(now - timedelta(days=30)) == 1
        before = store.size_bytes()
        store.vacuum()
        assert store.size_bytes() < before / 4
    assert query(db, "SELECT uid FROM events") == [("new",)]
    assert query(db, "PRAGMA application_id") == [(APPLICATION_ID,)]
    assert query(db, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert query(db, "PRAGMA journal_mode") == [("wal",)]
    assert query(db, "PRAGMA integrity_check") == [("ok",)]


def test_events_limit_beyond_sqlite_integers_means_no_limit(tmp_path):
    db = tmp_path / "s.db"
    with SQLiteStore.open(db, write=True) as store:
        store.record([], LIMITS, event("e"), update=apply_probe)
    with SQLiteStore.open(db, write=False) as store:
        assert len(store.events(limit=10**30)) == 1


def test_prune_takes_derived_status_changes_too_but_keeps_each_models_latest(tmp_path):
    db = tmp_path / "s.db"
    with SQLiteStore.open(db, write=True) as store:
        # p:a flaps 40 and 39 days ago, then stays healthy; p:b changed once, 50 days ago.
        store.record(
            [call("p:a", 40, ok=False), call("p:a", 39.5), call("p:a", 39)],
            LIMITS,
            update=apply_probe,
        )
        store.record([call("p:b", 50), call("p:b", 1)], LIMITS, update=apply_probe)
        store.prune_probes({}, utcnow() - timedelta(days=30))
    changes = query(db, "SELECT model, to_status FROM status_changes ORDER BY model")
    assert changes == [("p:a", "healthy"), ("p:b", "healthy")]
    assert query(db, "SELECT model, count(*) FROM probes GROUP BY model") == [("p:b", 1)]


def test_every_prune_statement_searches_an_index(tmp_path):
    db = tmp_path / "s.db"
    with SQLiteStore.open(db, write=True) as store:
        store.record(
            [call(m, age) for age in (90, 60, 1) for m in ("p:a", "p:b")],
            LIMITS,
            update=apply_probe,
        )
        store.record([], LIMITS, event("old", days_ago=90), update=apply_probe)
        assert store._conn is not None
        statements: list[str] = []
        store._conn.set_trace_callback(statements.append)
        store.prune_probes({"p:a": utcnow() - timedelta(days=30)}, utcnow() - timedelta(days=7))
        store.prune_events(utcnow() - timedelta(days=30))
    conn = sqlite3.connect(db)
    try:
        searched = [s for s in statements if re.match(r"(SELECT|DELETE)", s)]
        assert len(searched) > 6
        for sql in searched:
            for step in conn.execute(f"EXPLAIN QUERY PLAN {sql}"):
                assert not re.search(r"\bSCAN (probes|status_changes|events)\b", step[3]), sql
                assert "TEMP B-TREE" not in step[3], sql
    finally:
        conn.close()


def test_without_wal_a_commit_waits_for_readers_instead_of_failing(tmp_path):
    """A filesystem without WAL support keeps the rollback journal: COMMIT then needs the
    readers gone, and is retried until they are."""
    db = tmp_path / "s.db"
    SQLiteStore.open(db, write=True).close()
    query(db, "PRAGMA journal_mode=DELETE")
    reader = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM probes").fetchone()  # holds a shared lock
    release = threading.Timer(1.6, lambda: reader.execute("COMMIT"))
    release.start()
    try:
        started = time.monotonic()
        with SQLiteStore.open(db, write=True) as store:
            store.record([call("p:a", 0)], LIMITS, event("waited"), update=apply_probe)
        assert time.monotonic() - started >= 1.2  # it waited past one busy timeout
    finally:
        release.join()
        reader.close()
    assert query(db, "SELECT uid FROM events") == [("waited",)]


def test_older_evidence_committed_late_does_not_rewind_the_verdict(tmp_path):
    """A probe run that finishes after a `start` recorded a newer call keeps its row in
    history, but the snapshot keeps the newer evidence."""
    db = tmp_path / "s.db"
    with SQLiteStore.open(db, write=True) as store:
        store.record([call("p:a", 0)], LIMITS, update=apply_probe)  # a start's success, now
        [(_, kept)] = store.record(
            [call("p:a", 8 / 86400, ok=False)], LIMITS, update=apply_probe
        )  # 8 s older
        snapshot = store.snapshots(["p:a"])["p:a"]
    assert snapshot.ok and snapshot.consecutive_failures == 0 and kept == snapshot
    assert query(db, "SELECT ok FROM probes ORDER BY id") == [(1,), (0,)]
    assert query(db, "SELECT to_status FROM status_changes") == [("healthy",)]


def test_storage_does_not_depend_on_how_health_is_decided():
    """The snapshot update is handed in by the caller (store.record(..., update=...))."""
    code = (
        "import sys, voicefallback.store.sqlite;"
        " print(sorted(m for m in sys.modules if m == 'voicefallback.health'))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
