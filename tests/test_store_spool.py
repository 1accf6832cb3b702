"""The local spool: entries written in by the next writer, each exactly once, and never
blocked by an entry that cannot be read."""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import time
from datetime import timedelta
from pathlib import Path

import pytest

from tests.pg_server import PASSWORD, rows
from voicefallback.config import Thresholds
from voicefallback.health import apply_probe
from voicefallback.records import Candidate, FallbackEvent, ProbeResult, utcnow
from voicefallback.store import open_store
from voicefallback.store.outage import open_writer
from voicefallback.store.spool import Spool, SpoolEntry

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


def entry(uid: str, *calls: ProbeResult) -> SpoolEntry:
    return SpoolEntry(uid, list(calls), {c.model: LIMITS[c.model] for c in calls}, event(uid))


def events(state: Path | str) -> list[str]:
    with open_store(state, write=False) as store:
        return sorted(e.simulation_id for e in store.events())


def test_the_next_writer_puts_the_spool_in_once_and_in_order(state, tmp_path):
    spool = Spool.for_location(state)
    earlier = utcnow() - timedelta(seconds=5)
    spool.add(
        entry(
            "one",
            ProbeResult("p:a", False, earlier, error="timeout"),
            ProbeResult("p:b", True, earlier),
        )
    )
    [path] = spool.pending()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    kept = tmp_path / "kept.json"
    shutil.copy(path, kept)
    with open_writer(state, update=apply_probe, connect_timeout_s=2) as store:
        store.record([ProbeResult("p:b", True, utcnow())], LIMITS, update=apply_probe)
        snapshot = store.snapshots(["p:b"])["p:b"]
    assert spool.pending() == []
    assert snapshot.consecutive_successes == 2  # the spooled success counted, then this one
    shutil.copy(kept, path)  # found again (a crash between commit and unlink)
    with open_writer(state, update=apply_probe, connect_timeout_s=2):
        pass
    assert spool.pending() == []
    assert events(state) == ["sim-one"]
    with open_store(state, write=False) as store:
        assert [(c.model, c.ok) for c in reversed(store.recent_calls("p:b", limit=9))] == [
            ("p:b", True),
            ("p:b", True),
        ]


def test_a_spool_and_every_directory_it_creates_are_private(pg_url, isolated):
    spool = Spool.for_location(pg_url)
    spool.add(entry("one", ProbeResult("p:a", True, utcnow())))
    root = spool.directory.parent  # <state dir>/spool
    for directory in (root, spool.directory):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory


def test_a_spool_belongs_to_one_location_and_never_holds_its_password(pg_url):
    other = pg_url.rsplit("/", 1)[0] + "/elsewhere"
    assert Spool.for_location(pg_url).directory != Spool.for_location(other).directory
    # The same database reached with the password in PGPASSWORD instead: the same spool.
    without_password = pg_url.replace(f":{PASSWORD}@", "@")
    assert Spool.for_location(pg_url).directory == Spool.for_location(without_password).directory
    assert PASSWORD not in str(Spool.for_location(pg_url).directory)


def test_a_write_whose_commit_went_unanswered_is_not_written_twice(pg_url):
    """The server committed but the answer was lost: the write was spooled too, under the
    same id, and that copy is skipped when it is written in."""
    spool = Spool.for_location(pg_url)
    lost = entry("x", ProbeResult("p:a", True, utcnow()))
    with open_store(pg_url, write=True) as store:
        store.record(lost.results, lost.limits, lost.event, update=apply_probe, once=lost.uid)
    spool.add(lost)
    with open_writer(pg_url, update=apply_probe, connect_timeout_s=2):
        pass
    assert spool.pending() == []
    assert rows(pg_url, "SELECT count(*) FROM probes") == [(1,)]
    assert rows(pg_url, "SELECT uid FROM events") == [("x",)]


@pytest.mark.parametrize(
    "damage",
    [
        lambda text: text[: len(text) // 2],  # truncated by a crash
        lambda text: "not json at all",
        lambda text: json.dumps({"uid": "u"}),  # fields missing
    ],
)
def test_an_unreadable_entry_is_moved_aside_and_never_blocks_the_others(state, damage, caplog):
    spool = Spool.for_location(state)
    spool.add(entry("bad", ProbeResult("p:a", True, utcnow() - timedelta(seconds=9))))
    [bad] = spool.pending()
    bad.write_text(damage(bad.read_text()))
    os.utime(bad, (time.time() - 9, time.time() - 9))  # the oldest: met first
    spool.add(entry("good", ProbeResult("p:b", True, utcnow())))
    with (
        caplog.at_level(logging.WARNING, "voicefallback.state"),
        open_writer(state, update=apply_probe, connect_timeout_s=2),
    ):
        pass
    assert events(state) == ["sim-good"]
    assert spool.pending() == []
    aside = spool.directory / "unreadable" / bad.name
    assert aside.exists()
    [line] = [r.getMessage() for r in caplog.records]
    assert str(bad) in line and "cannot be read" in line and str(aside.parent) in line


def test_an_entry_from_a_newer_version_is_kept_for_it(state):
    spool = Spool.for_location(state)
    spool.add(entry("later", ProbeResult("p:a", True, utcnow())))
    [newer] = spool.pending()
    document = json.loads(newer.read_text())
    document["results"][0]["carbon_grams"] = 3  # a field this version does not know
    newer.write_text(json.dumps(document))
    spool.add(entry("now", ProbeResult("p:b", True, utcnow())))
    with open_writer(state, update=apply_probe, connect_timeout_s=2):
        pass
    assert events(state) == ["sim-now"]
    assert spool.pending() == [newer]  # left for the version that wrote it
    assert json.loads(newer.read_text()) == document


def test_temporary_files_left_by_a_crash_are_finished_or_removed(state):
    """SIGKILL between a spool file's write and its rename: a whole entry is written in,
    a partial one removed; one still being written (recent) is left alone."""
    spool = Spool.for_location(state)
    spool.add(entry("whole", ProbeResult("p:a", True, utcnow())))
    [whole] = spool.pending()
    finished = spool.directory / ".whole.0000.tmp"
    whole.rename(finished)
    partial = spool.directory / ".half.0000.tmp"
    partial.write_text('{"uid": "half", "resu')
    recent = spool.directory / ".fresh.0000.tmp"
    recent.write_text('{"uid": "fresh", "resu')
    old = time.time() - 3600
    for path in (finished, partial):
        os.utime(path, (old, old))
    with open_writer(state, update=apply_probe, connect_timeout_s=2):
        pass
    assert events(state) == ["sim-whole"]
    assert sorted(p.name for p in spool.directory.iterdir()) == [recent.name]


def test_a_state_file_has_one_spool_whatever_directory_a_command_runs_in(tmp_path, monkeypatch):
    (tmp_path / "state").mkdir()
    monkeypatch.chdir(tmp_path)
    relative = Spool.for_location(Path("state/state.db"))
    monkeypatch.chdir(tmp_path / "state")
    assert Spool.for_location(Path("state.db")).directory == relative.directory
    assert Spool.for_location(tmp_path / "state" / "state.db").directory == relative.directory
