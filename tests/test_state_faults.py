"""The state's own faults never fail a session (issue 17): a full or read-only disk, a state
file deleted, replaced or migrated by a newer version under a long-lived process, a
database away with nowhere to spool. Each start still decides and answers, says in one
line what was not recorded and where it went, and nothing is written where it must not be.

Full and read-only disks are real: a small tmpfs mounted for the test (skipped where this
process may not mount one).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.pg_server import PASSWORD, PostgresServer, rows
from voicefallback import AsyncSessionRouter
from voicefallback.store.schema import SCHEMA_VERSION

pytest_plugins = ["tests.conftest_serve"]

SONNET = "anthropic:claude-3-5-sonnet-latest"
MINI = "openai:gpt-4o-mini"
START = ("start", "--simulation-id", "sim-auto", "--primary", SONNET, "--json")


class Disk:
    """A 16 MiB tmpfs (room for SQLite's 4 MB write-ahead log): filled to the last byte,
    made read-only, and given room again."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ballast = root / "ballast"

    def fill(self) -> None:
        fd = os.open(self.ballast, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            while True:
                os.write(fd, b"\0" * 4096)
        except OSError:
            pass
        finally:
            os.close(fd)
        for n in range(64):  # what little the filesystem still keeps goes too
            try:
                (self.root / f"crumb{n}").write_bytes(b"\0" * 512)
            except OSError:
                break

    def free(self) -> None:
        self.ballast.unlink(missing_ok=True)
        for crumb in self.root.glob("crumb*"):
            crumb.unlink()

    def read_only(self, on: bool) -> None:
        mode = "remount,ro" if on else "remount,rw"
        subprocess.run(["mount", "-o", mode, str(self.root)], check=True)


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Disk]:
    root = tmp_path / "disk"
    root.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs", str(root)],
        capture_output=True,
    )
    if mounted.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        yield Disk(root)
    finally:
        subprocess.run(["umount", "-l", str(root)], check=False)


def integrity(db: Path) -> str:
    with sqlite3.connect(db) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


def events_in(db: Path) -> list[str]:
    with sqlite3.connect(db) as conn:
        return [sim for (sim,) in conn.execute("SELECT simulation_id FROM events ORDER BY id")]


def spooled(isolated: Path) -> list[Path]:
    spool = isolated.parent / "home" / ".local" / "state" / "voicefallback" / "spool"
    return sorted(spool.glob("*/*.json"))


# -- one-shot `start` -----------------------------------------------------------------------


def test_a_start_on_a_full_disk_answers_and_its_record_goes_in_once_there_is_room(
    cli, disk, monkeypatch, isolated
):
    db = disk.root / "state.db"
    monkeypatch.setenv("VOICEFALLBACK_DB", str(db))
    assert cli(*START).exit_code == 0
    disk.fill()
    full = cli("start", "--simulation-id", "on-full", "--primary", SONNET, "--json")
    assert full.exit_code == 0, full.stderr
    assert full.json["chosen"] == MINI and full.json["degraded"] is True
    assert full.stderr.count("\n") == 1, full.stderr
    assert "not recorded" in full.stderr and str(db) in full.stderr
    assert "kept in the spool" in full.stderr  # the spool is in HOME, not on the full disk
    probe = cli("probe", "--json")  # a write of its own: temporary, nothing written
    assert probe.exit_code == 75 and probe.stdout == "" and probe.stderr.count("\n") == 1
    health = cli("health", "--json")  # reads go on where SQLite can, else say so: temporary
    assert health.exit_code in (0, 75) and health.stderr.count("\n") == (health.exit_code == 75)
    disk.free()
    assert cli(*START).exit_code == 0  # the next writer puts the spooled start in first
    assert spooled(isolated) == []
    assert events_in(db) == ["sim-auto", "on-full", "sim-auto"]
    assert integrity(db) == "ok"


def test_a_start_on_a_read_only_disk_answers_and_spools(cli, disk, monkeypatch, isolated):
    db = disk.root / "state.db"
    monkeypatch.setenv("VOICEFALLBACK_DB", str(db))
    assert cli(*START).exit_code == 0
    disk.read_only(True)
    try:
        started = cli("start", "--simulation-id", "on-ro", "--primary", SONNET, "--json")
    finally:
        disk.read_only(False)
    assert started.exit_code == 0 and started.json["degraded"] is True, started.stderr
    assert started.stderr.count("\n") == 1 and "kept in the spool" in started.stderr
    assert len(spooled(isolated)) == 1
    assert cli(*START).exit_code == 0
    assert events_in(db) == ["sim-auto", "on-ro", "sim-auto"]


def test_a_database_away_and_a_full_local_disk_still_start_and_say_nothing_was_kept(
    cli, disk, pg_server: PostgresServer, pg_url, monkeypatch
):
    monkeypatch.setenv("VOICEFALLBACK_DB", pg_url)
    monkeypatch.setenv("XDG_STATE_HOME", str(disk.root))  # the spool lives on the full disk
    assert cli(*START).exit_code == 0
    disk.fill()
    pg_server.stop()
    try:
        started = cli("start", "--simulation-id", "nowhere", "--primary", SONNET, "--json")
    finally:
        pg_server.start()
    assert started.exit_code == 0 and started.json["degraded"] is True, started.stderr
    assert started.stderr.count("\n") == 1, started.stderr
    assert "not recorded" in started.stderr and "lost: " in started.stderr
    assert PASSWORD not in started.stderr
    assert rows(pg_url, "SELECT simulation_id FROM events") == [("sim-auto",)]


def test_a_mistyped_database_url_is_refused_and_creates_nothing(cli, isolated, monkeypatch):
    for url in ("postgresq://vf@db/x", "postgresql:/db/x", "mysql://vf:pw@db/x"):
        monkeypatch.setenv("VOICEFALLBACK_DB", url)
        for command in (START, ("health", "--json"), ("probe", "--json")):
            result = cli(*command)
            assert result.exit_code == 2 and result.stdout == "", (url, command, result)
            assert result.stderr.count("\n") == 1 and "not a state location" in result.stderr
            assert ":pw@" not in result.stderr
    assert sorted(p.name for p in isolated.iterdir()) == ["models.toml"]  # nothing created
    refused = cli("health", "--db", "MySQL://x/y", "--json")
    assert refused.exit_code == 2 and "--db MySQL://x/y" in refused.stderr


def test_a_database_url_scheme_in_capitals_is_a_database(cli, pg_url, monkeypatch):
    monkeypatch.setenv("VOICEFALLBACK_DB", "POSTGRESQL" + pg_url.removeprefix("postgresql"))
    assert cli(*START).exit_code == 0
    assert rows(pg_url, "SELECT simulation_id FROM events") == [("sim-auto",)]


def test_an_empty_file_at_the_state_path_is_adopted_private(cli, db_file):
    db_file.parent.mkdir(mode=0o700)
    db_file.touch(mode=0o644)
    db_file.chmod(0o644)
    assert cli(*START).exit_code == 0
    assert oct(db_file.stat().st_mode & 0o777) == "0o600"
    assert events_in(db_file) == ["sim-auto"]


# -- a long-lived process (library router, `serve`) ---------------------------------------


async def choose(router: AsyncSessionRouter, name: str) -> str | None:
    outcome = await router.choose(name, SONNET, opening_call=True)
    assert outcome.chosen == MINI
    return outcome.degraded


def test_a_state_file_deleted_under_a_router_is_not_written_into_nor_made_again(
    config_file, db_file, isolated, caplog, monkeypatch
):
    """rm state.db*: starts go on, degraded, saying the file was deleted; nothing is
    written into the unlinked file and no new file is made behind the operator's back
    (the owner refuses until a state is back at the path), then the next start writes
    what was kept aside into the state made there."""
    from voicefallback.store import outage

    monkeypatch.setattr(outage, "RETRY_AFTER_S", 0.1)

    async def scenario() -> tuple[list[str | None], list[str | None]]:
        async with AsyncSessionRouter(config=config_file, db=db_file) as router:
            before = [await choose(router, "before")]
            for path in db_file.parent.glob("state.db*"):
                path.unlink()
            gone = [await choose(router, f"gone-{n}") for n in range(3)]
            refusing = router.owner.refusing
            assert not db_file.exists()
            assert refusing is not None and "deleted" in refusing
            # A state is back at the path (here made by the CLI), and tried again.
            subprocess.run(
                [sys.executable, "-m", "voicefallback", "probe", "--json"],
                check=True,
                capture_output=True,
                env={**os.environ, "VOICEFALLBACK_DB": str(db_file)},
            )
            back = []
            for _ in range(100):
                back.append(await choose(router, "back"))
                if back[-1] is None:
                    break
                await asyncio.sleep(0.02)
            return before + gone, back

    with caplog.at_level(logging.INFO, "voicefallback.state"):
        reasons, back = asyncio.run(scenario())
    assert reasons[0] is None
    assert all(r is not None and "deleted" in r and "kept in the spool" in r for r in reasons[1:])
    assert back[-1] is None
    assert spooled(isolated) == []
    written = events_in(db_file)
    assert sorted(w for w in written if w.startswith("gone")) == ["gone-0", "gone-1", "gone-2"]
    assert integrity(db_file) == "ok"
    away = [r for r in caplog.records if "state away" in r.getMessage()]
    assert len(away) == 1, [r.getMessage() for r in caplog.records]


def test_a_state_file_replaced_by_a_backup_under_a_router_is_reopened_and_stays_whole(
    config_file, db_file, tmp_path
):
    """mv backup.db state.db under a running router: the next start notices before writing,
    closes the old file (its log goes with it) and writes into the restored one, which
    passes integrity_check and holds the backup's rows plus the new ones only."""
    backup = tmp_path / "backup.db"

    async def scenario() -> list[str | None]:
        async with AsyncSessionRouter(config=config_file, db=db_file) as router:
            reasons = [await choose(router, "kept")]
            with sqlite3.connect(db_file) as source, sqlite3.connect(backup) as target:
                source.backup(target)
            reasons += [await choose(router, f"lost-{n}") for n in range(20)]
            backup.rename(db_file)
            reasons += [await choose(router, f"after-{n}") for n in range(3)]
            return reasons

    reasons = asyncio.run(scenario())
    assert all(r is None for r in reasons), reasons
    assert integrity(db_file) == "ok"
    assert events_in(db_file) == ["kept", "after-0", "after-1", "after-2"]


def test_a_newer_schema_under_a_router_is_never_written_into(config_file, db_file, isolated):
    async def scenario() -> tuple[list[str | None], str | None]:
        async with AsyncSessionRouter(config=config_file, db=db_file) as router:
            reasons = [await choose(router, "old")]
            with sqlite3.connect(db_file, isolation_level=None) as newer:
                newer.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
            reasons += [await choose(router, f"new-{n}") for n in range(2)]
            return reasons, router.owner.refusing

    reasons, refusing = asyncio.run(scenario())
    assert reasons[0] is None
    assert all(r is not None and "newer voicefallback" in r for r in reasons[1:])
    assert refusing is not None and "newer voicefallback" in refusing
    assert events_in(db_file) == ["old"]
    assert len(spooled(isolated)) == 2  # kept for when this host is upgraded


def test_a_full_disk_under_a_router_keeps_writes_in_memory_when_the_spool_is_full_too(
    config_file, disk, monkeypatch
):
    from voicefallback.store import outage

    monkeypatch.setattr(outage, "RETRY_AFTER_S", 0.1)
    monkeypatch.setenv("XDG_STATE_HOME", str(disk.root / "home-state"))  # spool: same disk
    db = disk.root / "state.db"

    async def scenario() -> tuple[list[str | None], str | None, str]:
        async with AsyncSessionRouter(config=config_file, db=db) as router:
            reasons = [await choose(router, "before")]
            disk.fill()
            reasons += [await choose(router, f"full-{n}") for n in range(3)]
            refusing = router.owner.refusing
            disk.free()
            for _ in range(100):
                reasons.append(await choose(router, "after"))
                if reasons[-1] is None:
                    break
                await asyncio.sleep(0.02)
            return reasons, refusing, router.owner.state

    reasons, refusing, state = asyncio.run(scenario())
    assert reasons[0] is None and reasons[-1] is None and state == "up"
    full = reasons[1:4]
    assert all(r is not None and "kept in memory" in r for r in full), full
    assert refusing is not None
    written = events_in(db)
    assert written[0] == "before" and sorted(written[1:4]) == ["full-0", "full-1", "full-2"]
    assert integrity(db) == "ok"


def test_a_database_going_away_and_back_is_logged_once_each_way(
    config_file, pg_url, pg_server, monkeypatch, caplog
):
    from voicefallback.store import outage

    monkeypatch.setattr(outage, "RETRY_AFTER_S", 0.2)
    monkeypatch.setenv("VOICEFALLBACK_DB", pg_url)

    async def scenario() -> list[str | None]:
        async with AsyncSessionRouter(config=config_file, db=pg_url) as router:
            reasons = [await choose(router, "up")]
            pg_server.stop()
            try:
                reasons += [await choose(router, f"away-{n}") for n in range(5)]
            finally:
                pg_server.start()
            for _ in range(200):
                await asyncio.sleep(0.05)
                if router.owner.state == "up":
                    break
            reasons.append(await choose(router, "back"))
            return reasons

    with caplog.at_level(logging.INFO, "voicefallback.state"):
        reasons = asyncio.run(scenario())
    assert reasons[0] is None and reasons[-1] is None
    assert all(r is not None for r in reasons[1:-1])
    lines = [r.getMessage() for r in caplog.records if r.name == "voicefallback.state"]
    assert len([line for line in lines if line.startswith("state away")]) == 1, lines
    assert len([line for line in lines if line.startswith("state back")]) >= 1, lines
    assert all(PASSWORD not in line for line in lines)
    events = sorted(sim for (sim,) in rows(pg_url, "SELECT simulation_id FROM events"))
    assert events == sorted(["up", "back", *(f"away-{n}" for n in range(5))])


# -- `serve` --------------------------------------------------------------------------------


def test_serve_on_a_full_disk_answers_starts_says_why_on_readyz_and_logs_once(
    serve, config_file, disk, isolated
):
    db = disk.root / "state.db"
    server = serve(env={"VOICEFALLBACK_DB": str(db)})
    body = {"simulationId": "warm", "primary": SONNET}
    assert server.post("/interviews/start", json=body).status_code == 200
    assert server.get("/readyz").json()["state"] == "up"
    mark = len(server.lines)
    disk.fill()
    answers = [
        server.post("/interviews/start", json={"simulationId": f"full-{n}", "primary": SONNET})
        for n in range(5)
    ]
    assert [a.status_code for a in answers] == [200] * 5
    assert all(a.json()["degraded"] is True and a.json()["chosen"] == MINI for a in answers)
    ready = server.get("/readyz")
    assert ready.status_code == 503 and ready.headers["retry-after"] == "1"
    assert ready.json()["state"] == "away" and str(db) in ready.json()["error"]
    away = [line for line in server.lines[mark:] if "state away" in line]
    assert len(away) == 1, server.lines[mark:]
    assert "Traceback" not in server.stderr
    disk.free()
    for _ in range(100):  # tried again every 10 s; a start that comes then writes it all
        answer = server.post("/interviews/start", json={"simulationId": "after", "primary": SONNET})
        if "degraded" not in answer.json():
            break
        time.sleep(0.2)
    assert "degraded" not in answer.json()
    assert server.get("/readyz").json()["state"] == "up"
    assert server.stop() == 0
    written = events_in(db)
    assert sorted(w for w in written if w.startswith("full")) == [f"full-{n}" for n in range(5)]
    assert integrity(db) == "ok"


def test_serve_on_a_read_only_state_is_unready_and_its_starts_answer(
    serve, config_file, disk, isolated
):
    """A read-only state (here its filesystem remounted read-only): /readyz says why, 503,
    before any start fails; starts answer 200, degraded, their writes in the spool; once it
    is writable again they go in."""
    db = disk.root / "state.db"
    server = serve(env={"VOICEFALLBACK_DB": str(db)})
    assert server.post(
        "/interviews/start", json={"simulationId": "w", "primary": SONNET}
    ).is_success
    server.stop()
    disk.read_only(True)
    try:
        server = serve(env={"VOICEFALLBACK_DB": str(db)})
        ready = server.get("/readyz")
        started = server.post("/interviews/start", json={"simulationId": "ro", "primary": SONNET})
        assert server.stop() == 0
    finally:
        disk.read_only(False)
    assert ready.status_code == 503 and str(db) in ready.json()["error"], ready.text
    assert "not writable" in ready.json()["error"]
    assert started.status_code == 200 and started.json()["degraded"] is True
    assert len(spooled(isolated)) == 1
    assert "Traceback" not in server.stderr
