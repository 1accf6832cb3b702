"""The reads behind health explanations, history and metrics stay indexed and exact."""

from __future__ import annotations

import itertools
import re
import sqlite3
from datetime import timedelta
from pathlib import Path

from voicefallback.config import Thresholds
from voicefallback.health import apply_probe
from voicefallback.records import Candidate, FallbackEvent, ProbeResult, utcnow
from voicefallback.store.sqlite import SQLiteStore

LIMITS = {f"p:m{i}": Thresholds() for i in range(3)}


def fill(db: Path, calls_per_model: int = 300) -> None:
    start = utcnow() - timedelta(days=2)
    with SQLiteStore.open(db, write=True) as store:
        results = [
            ProbeResult(
                model=f"p:m{n % 3}",
                ok=n % 7 != 0,
                at=start + timedelta(seconds=n * 30),
                ttft_ms=100 + n % 50,
                latency_ms=200,
                error=None if n % 7 else "timeout",
            )
            for n in range(calls_per_model * 3)
        ]
        store.record(results, LIMITS, update=apply_probe)


def explain(db: Path, sql: str, params: tuple[object, ...]) -> list[str]:
    with sqlite3.connect(db) as conn:
        return [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params)]


def test_operations_reads_walk_indexes_without_sorting(tmp_path):
    db = tmp_path / "s.db"
    fill(db)
    seen: list[str] = []
    with SQLiteStore.open(db, write=False) as store:
        assert store._conn is not None
        store._conn.set_trace_callback(seen.append)
        since = utcnow() - timedelta(hours=1)
        store.recent_calls("p:m1", limit=20, since=since)
        store.recent_calls("p:m1", limit=20)
        store.last_failure("p:m1")
        store.status_changes("p:m1", limit=20, since=since)
        store.status_changes("p:m1", limit=20)
        store.event_counts()
    reads = [s for s in seen if re.match(r"\s*SELECT", s, re.I)]
    assert len(reads) == 6
    for sql in reads:
        # The traced text has its parameters bound already.
        for step in explain(db, sql, ()):
            assert not re.search(r"\bSCAN (probes|status_changes|events)\b", step), (sql, step)
            assert "TEMP B-TREE" not in step, (sql, step)
    failure_plan = " ".join(explain(db, reads[2], ()))
    assert "probes_failures" in failure_plan


def test_recent_calls_and_last_failure_are_exact(tmp_path):
    db = tmp_path / "s.db"
    fill(db, calls_per_model=50)
    with SQLiteStore.open(db, write=False) as store:
        calls = store.recent_calls("p:m2", limit=5)
        failure = store.last_failure("p:m2")
        changes = store.status_changes("p:m2", limit=100)
    assert [c.at for c in calls] == sorted((c.at for c in calls), reverse=True)
    assert len(calls) == 5 and all(c.model == "p:m2" for c in calls)
    # n % 3 == 2 and n % 7 == 0: the last such n below 150 is 140.
    assert failure is not None and failure.error == "timeout" and not failure.ok
    assert failure.at == calls[0].at - timedelta(seconds=30 * (149 - 140))
    assert changes[-1].from_status is None
    assert all(a.at >= b.at for a, b in itertools.pairwise(changes))
    assert all(a.from_status == b.to_status for a, b in itertools.pairwise(changes))


def test_an_event_written_twice_is_counted_once(tmp_path):
    db = tmp_path / "s.db"
    event = FallbackEvent(
        uid="same-uid",
        at=utcnow(),
        simulation_id="s",
        primary="p:m0",
        chosen="p:m1",
        reason="primary_unhealthy",
        fallback_source="auto",
        candidates=[Candidate("p:m0", "unhealthy", "overloaded")],
    )
    with SQLiteStore.open(db, write=True) as store:
        store.record([], LIMITS, event, update=apply_probe)
        store.record([], LIMITS, event, update=apply_probe)  # a retried write
        assert store.event_counts() == {"primary_unhealthy": 1}
        assert len(store.events()) == 1


def test_reads_on_a_missing_file_are_empty_and_create_nothing(tmp_path):
    db = tmp_path / "none" / "s.db"
    with SQLiteStore.open(db, write=False) as store:
        assert store.recent_calls("p:m0", limit=5) == []
        assert store.last_failure("p:m0") is None
        assert store.status_changes("p:m0", limit=5) == []
        assert store.event_counts() == {}
    assert not db.parent.exists()
