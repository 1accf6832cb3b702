"""The local spool at store level: entries written in by the next write, each exactly once."""

from __future__ import annotations

import shutil
from datetime import timedelta

from tests.pg_server import PASSWORD, rows
from voicefallback.config import Thresholds
from voicefallback.health import apply_probe
from voicefallback.records import Candidate, FallbackEvent, ProbeResult, utcnow
from voicefallback.store import open_store
from voicefallback.store.spool import Spool

LIMITS = {"p:a": Thresholds(), "p:b": Thresholds()}


def event(uid: str) -> FallbackEvent:
    return FallbackEvent(
        uid=uid,
        at=utcnow(),
        simulation_id=f"sim-{uid}",
        primary="p:a",
        chosen="p:b",
        reason="primary_unhealthy",
        fallback_source="auto",
        candidates=[Candidate("p:a", "unhealthy", "timeout")],
    )


def test_the_next_write_puts_the_spool_in_once_and_in_order(pg_url, tmp_path):
    spool = Spool.for_location(pg_url)
    earlier = utcnow() - timedelta(seconds=5)
    spool.add(
        [ProbeResult("p:a", False, earlier, error="timeout"), ProbeResult("p:b", True, earlier)],
        LIMITS,
        event("one"),
    )
    [entry] = spool.pending()
    assert oct(entry.stat().st_mode & 0o777) == "0o600"
    kept = tmp_path / "kept.json"
    shutil.copy(entry, kept)
    with open_store(pg_url, write=True) as store:
        store.record([ProbeResult("p:b", True, utcnow())], LIMITS, update=apply_probe)
        snapshot = store.snapshots(["p:b"])["p:b"]
    assert spool.pending() == []
    assert snapshot.consecutive_successes == 2  # the spooled success counted, then this one
    shutil.copy(kept, entry)  # found again (a crash between commit and unlink)
    with open_store(pg_url, write=True) as store:
        store.record([], LIMITS, update=apply_probe)
    assert rows(pg_url, "SELECT uid FROM events") == [("one",)]
    assert rows(pg_url, "SELECT model, ok FROM probes ORDER BY id") == [
        ("p:a", 0),
        ("p:b", 1),
        ("p:b", 1),
    ]


def test_a_spool_belongs_to_one_location_and_never_holds_its_password(pg_url):
    other = pg_url.rsplit("/", 1)[0] + "/elsewhere"
    assert Spool.for_location(pg_url).directory != Spool.for_location(other).directory
    # The same database reached with the password in PGPASSWORD instead: the same spool.
    without_password = pg_url.replace(f":{PASSWORD}@", "@")
    assert Spool.for_location(pg_url).directory == Spool.for_location(without_password).directory
    assert PASSWORD not in str(Spool.for_location(pg_url).directory)


def test_a_write_whose_commit_went_unanswered_is_not_written_twice(pg_url):
    """The connection dropped after the server committed: the write was spooled too, under
    the same id, and that copy is skipped when it is written in."""
    from voicefallback.errors import StateUnreachable
    from voicefallback.store.spool import SpoolingStore

    real = open_store(pg_url, write=True)

    class CommittedThenLost:
        def snapshots(self, models=None):  # type: ignore[no-untyped-def]
            return real.snapshots(models)

        def record(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            real.record(*args, **kwargs)
            raise StateUnreachable("lost the state database while trying to write")

    spool = Spool.for_location(pg_url)
    spooling = SpoolingStore(CommittedThenLost(), spool)
    spooling.record([ProbeResult("p:a", True, utcnow())], LIMITS, event("x"), update=apply_probe)
    assert spooling.degraded and len(spool.pending()) == 1
    real.record([], LIMITS, update=apply_probe)  # the next write finds the spool
    real.close()
    assert spool.pending() == []
    assert rows(pg_url, "SELECT count(*) FROM probes") == [(1,)]
    assert rows(pg_url, "SELECT uid FROM events") == [("x",)]
