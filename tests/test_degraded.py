"""The state database going away never stops a session: `start` decides by just-in-time
probes, says so, spools its writes, and the next command that writes puts them in once."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import add_setting
from tests.pg_server import PASSWORD, PostgresServer, rows

SONNET = "anthropic:claude-3-5-sonnet-latest"
START_A = ("start", "--simulation-id", "sim-auto", "--primary", SONNET, "--json")
START_B = (
    "start",
    "--simulation-id",
    "sim-caller",
    "--primary",
    SONNET,
    "--fallback",
    "openai:gpt-4o",
    "--json",
)


def spooled(isolated: Path) -> list[Path]:
    spool = isolated.parent / "home" / ".local" / "state" / "voicefallback" / "spool"
    return sorted(spool.glob("*/*.json"))


@pytest.fixture
def down(pg_server: PostgresServer):
    """The server stopped for the test's first part; `down()` brings it back."""
    pg_server.stop()
    state = {"up": False}

    def back() -> None:
        pg_server.start()
        state["up"] = True

    try:
        yield back
    finally:
        if not state["up"]:
            pg_server.start()


def test_start_without_its_database_decides_and_spools_then_it_is_written_in_once(
    cli, pg_url, monkeypatch, isolated, pg_server, down
):
    monkeypatch.setenv("VOICEFALLBACK_DB", pg_url)
    # (the fixture stopped the server before the schema existed: the writer creates it later)
    a = cli(*START_A)
    assert a.exit_code == 0, a.stderr
    assert a.json["degraded"] is True and a.json["chosen"] == "openai:gpt-4o-mini"
    assert a.json["usedFallback"] is True and a.json["agent"]["ok"] is True
    assert a.stderr.count("\n") == 1 and "degraded" in a.stderr
    assert "127.0.0.1" in a.stderr and PASSWORD not in a.stderr
    b = cli(*START_B)
    assert b.exit_code == 0 and b.json["chosen"] == "openai:gpt-4o" and b.json["degraded"]
    entries = spooled(isolated)
    assert len(entries) == 2
    assert all(PASSWORD not in p.read_text() for p in entries)
    calls = [
        (call["model"], call["kind"], call["at"])
        for entry in entries
        for call in json.loads(entry.read_text())["results"]
    ]
    assert ("openai:gpt-4o-mini", "start") in [c[:2] for c in calls]

    # Readers say the database is out of reach: temporary (75), one line, nothing written.
    away = cli("fallbacks", "--json")
    assert away.exit_code == 75 and away.stdout == "" and away.stderr.count("\n") == 1

    down()  # the server is back: readers never write, so they read what is there...
    assert cli("fallbacks", "--json").json["events"] == []
    assert len(spooled(isolated)) == 2
    # ...and the next writer puts the spool in first, once.
    healthy = cli("start", "--simulation-id", "back", "--primary", "openai:gpt-4o-mini", "--json")
    assert healthy.exit_code == 0 and "degraded" not in healthy.json and healthy.stderr == ""
    assert spooled(isolated) == []
    assert [e["simulationId"] for e in cli("fallbacks", "--json").json["events"]] == [
        "sim-caller",
        "sim-auto",
    ]
    # Every call made while it was down is in history exactly once.
    history = Counter(rows(pg_url, "SELECT model, kind, at FROM probes"))
    assert all(history[call] == 1 for call in calls), (calls, history)
    assert rows(pg_url, "SELECT reason, count FROM event_counts") == [("primary_unhealthy", 2)]


def test_a_spool_entry_found_again_after_it_was_written_in_is_not_written_twice(
    cli, pg_url, monkeypatch, isolated, pg_server, down, tmp_path
):
    monkeypatch.setenv("VOICEFALLBACK_DB", pg_url)
    assert cli(*START_A).json["degraded"] is True
    [entry] = spooled(isolated)
    kept = tmp_path / "kept.json"
    shutil.copy(entry, kept)
    down()
    assert cli("probe", "--json").exit_code == 0  # writes the spool in
    assert spooled(isolated) == []
    shutil.copy(kept, entry)  # as if a crash came between the commit and the unlink
    assert cli("probe", "--json").exit_code == 0
    assert spooled(isolated) == []
    assert rows(pg_url, "SELECT simulation_id FROM events") == [("sim-auto",)]
    assert rows(pg_url, "SELECT count(*) FROM spool_applied") == [(1,)]


def test_a_database_that_hangs_never_holds_a_warm_router_start_past_connect_timeout(
    config_file, pg_url, pg_server, monkeypatch
):
    """The server process behind the router's connection stops answering (TCP still up,
    as with a hung server or a network that drops packets): a start gives up on it after
    connect_timeout_s and decides without it, the next starts do not wait at all, a report
    says so at once, and once the database answers again everything spooled is written in
    once."""
    import asyncio
    import signal

    from voicefallback import AsyncSessionRouter
    from voicefallback.errors import StateUnreachable
    from voicefallback.store import outage

    monkeypatch.setattr(outage, "RETRY_AFTER_S", 0.2)
    add_setting(config_file, "connect_timeout_s = 1")
    database = pg_url.rsplit("/", 1)[1]

    def backends() -> list[int]:
        found = pg_server.admin(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'voicefallback'"
            f" AND datname = '{database}'"
        )
        return [pid for (pid,) in found]

    async def scenario() -> tuple[list[str | None], str]:
        async with AsyncSessionRouter(config=config_file, db=pg_url) as router:
            warm = await router.choose("warm", SONNET)
            assert warm.degraded is None
            [hung] = backends()
            os.kill(hung, signal.SIGSTOP)
            try:
                # wait_for only turns a hang into a failure; the router gives up after 1 s.
                outcomes = [
                    await asyncio.wait_for(router.choose(name, SONNET), 30)
                    for name in ("hung-1", "hung-2")
                ]
                with pytest.raises(StateUnreachable) as report:
                    await asyncio.wait_for(router.report(SONNET, error="timeout"), 30)
            finally:
                os.kill(hung, signal.SIGCONT)
            reasons = [o.degraded for o in outcomes]
            assert [o.chosen for o in outcomes] == ["openai:gpt-4o-mini"] * 2
            for _ in range(200):  # reached again in the background, then used
                back = await router.choose("back", "openai:gpt-4o-mini", record_event=False)
                if back.degraded is None:
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the database was never used again")
            again = await router.choose("again", SONNET)  # the next write puts the spool in
            assert again.degraded is None
            return reasons, str(report.value)

    reasons, report = asyncio.run(scenario())
    assert reasons[0] is not None and "no answer within 1 s" in reasons[0]
    assert reasons[1] == reasons[0]  # known away: no second wait
    assert report in reasons[0] and PASSWORD not in report
    events = sorted(sim for (sim,) in rows(pg_url, "SELECT simulation_id FROM events"))
    assert events == ["again", "hung-1", "hung-2", "warm"]  # spooled while away: in once


def test_a_write_given_up_on_while_the_thread_connects_slowly_is_written_once(
    pg_url, isolated, monkeypatch
):
    """The store thread is still connecting (a slow server, not a dead one) when the start
    gives up and spools its write; the connection then succeeds and the thread's copy of
    the same write drains the spool first: the spooled copy goes in, this one is not made
    again."""
    import asyncio
    import time

    from voicefallback.config import Thresholds
    from voicefallback.health import apply_probe
    from voicefallback.records import ProbeResult, utcnow
    from voicefallback.store import owner

    opened = owner.open_store

    def slowly(*args, **kwargs):
        time.sleep(1.0)
        return opened(*args, **kwargs)

    monkeypatch.setattr(owner, "open_store", slowly)
    call = ProbeResult("p:a", False, utcnow(), error="timeout", kind="session")

    async def scenario() -> str | None:
        state = owner.StateOwner(pg_url, update=apply_probe, threaded=True, connect_timeout_s=0.3)
        try:
            why = await state.record([call], {"p:a": Thresholds()})
            await asyncio.sleep(1.5)  # the thread connects, then makes its copy of the write
            return why
        finally:
            await state.aclose()

    why = asyncio.run(scenario())
    assert why is not None and "no answer within 0.3 s; kept in the spool" in why
    assert spooled(isolated) == []
    assert rows(pg_url, "SELECT model, ok FROM probes") == [("p:a", 0)]
    assert rows(pg_url, "SELECT consecutive_failures FROM snapshots") == [(1,)]


def test_a_database_reached_again_but_newer_stays_refused_and_is_said_by_every_start(
    pg_url, pg_server, isolated, monkeypatch
):
    """While the database is away, the background retry reaches it but cannot use it
    (another host migrated it to a newer schema): starts keep going, each says why its
    write was kept aside, and nothing is ever written into the newer schema."""
    import asyncio

    from voicefallback.config import Thresholds
    from voicefallback.health import apply_probe
    from voicefallback.records import ProbeResult, utcnow
    from voicefallback.store import outage
    from voicefallback.store.owner import StateOwner

    monkeypatch.setattr(outage, "RETRY_AFTER_S", 0.2)
    database = pg_url.rsplit("/", 1)[1]

    async def scenario() -> list[str | None]:
        state = StateOwner(pg_url, update=apply_probe, threaded=True, connect_timeout_s=1)
        reasons: list[str | None] = []
        try:
            await state.snapshots(())  # warm
            pg_server.admin(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = 'voicefallback'",
                dbname=database,
            )
            pg_server.admin(
                "INSERT INTO migrations (number, name, applied_at) VALUES (99, 'later', 'now')",
                dbname=database,
            )
            for _ in range(10):
                call = ProbeResult("p:a", True, utcnow())
                reasons.append(await state.record([call], {"p:a": Thresholds()}))
                await asyncio.sleep(0.1)
        finally:
            await state.aclose()
        return reasons

    reasons = asyncio.run(scenario())
    assert all(r is not None and "kept in the spool" in r for r in reasons), reasons
    assert any(r is not None and "written by a newer voicefallback" in r for r in reasons)
    assert len(spooled(isolated)) == 10
    assert rows(pg_url, "SELECT count(*) FROM probes") == [(0,)]


def test_the_first_start_after_the_database_is_reached_again_uses_it(
    pg_url, pg_server, isolated, monkeypatch
):
    """The background retry reaches the database again: the next start reads and writes
    it, after what was spooled meanwhile."""
    import asyncio

    from voicefallback.config import Thresholds
    from voicefallback.health import apply_probe
    from voicefallback.records import ProbeResult, utcnow
    from voicefallback.store import outage
    from voicefallback.store.owner import StateOwner

    monkeypatch.setattr(outage, "RETRY_AFTER_S", 1.0)
    database = pg_url.rsplit("/", 1)[1]

    async def record(state: StateOwner) -> str | None:
        return await state.record([ProbeResult("p:a", True, utcnow())], {"p:a": Thresholds()})

    async def scenario() -> tuple[list[str | None], list[str]]:
        state = StateOwner(pg_url, update=apply_probe, threaded=True, connect_timeout_s=1)
        reasons = []
        conditions = []
        try:
            reasons.append(await record(state))
            pg_server.admin(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = 'voicefallback'",
                dbname=database,
            )
            reasons.append(await record(state))  # lost: away
            conditions.append(state.state)
            await asyncio.sleep(1.1)
            reasons.append(await record(state))  # away: tried again in the background
            for _ in range(100):
                if state.state == "up":
                    break
                await asyncio.sleep(0.02)
            conditions.append(state.state)
            reasons.append(await record(state))
        finally:
            await state.aclose()
        return reasons, conditions

    reasons, conditions = asyncio.run(scenario())
    assert reasons[0] is None and reasons[1] is not None and reasons[2] is not None
    assert reasons[3] is None
    assert conditions == ["away", "up"]
    assert spooled(isolated) == []  # written in when it was reached
    assert rows(pg_url, "SELECT count(*) FROM probes") == [(4,)]


def test_a_busy_store_thread_is_not_taken_for_a_database_that_stopped_answering(pg_url, isolated):
    """The database answers, but the owner's thread is on a long piece of work (here a
    query per 50 ms for 1.5 s, as when a large spool is written in): a start does not wait
    past connect_timeout_s, and goes on degraded ("busy"), but the connection is not broken
    off, the long work finishes, and once the thread is free starts use the database again."""
    import asyncio

    from voicefallback.config import Thresholds
    from voicefallback.health import apply_probe
    from voicefallback.records import ProbeResult, utcnow
    from voicefallback.store.owner import StateOwner

    limits = {"p:a": Thresholds()}

    async def session(state: StateOwner) -> str | None:
        call = ProbeResult("p:a", True, utcnow(), latency_ms=5, ttft_ms=5, kind="session")
        return await state.record([call], limits)

    def long_work(store) -> int:
        for _ in range(30):
            store._fetch("SELECT pg_sleep(0.05)")
        return 30

    async def scenario() -> tuple[int, list[str | None], str]:
        state = StateOwner(pg_url, update=apply_probe, threaded=True, connect_timeout_s=0.5)
        try:
            await state.snapshots(())  # warm
            busy = asyncio.ensure_future(state.run(long_work))
            await asyncio.sleep(0.05)
            reasons = [await session(state) for _ in ("late-1", "late-2")]
            during = state.state
            done = await busy  # not broken off: it ran to its end
            for _ in range(100):  # the thread catches up at once
                _, why = await state.snapshots(())
                if why is None:
                    break
                await asyncio.sleep(0.01)
            reasons.append(await session(state))
            return done, reasons, during
        finally:
            await state.aclose()

    done, reasons, during = asyncio.run(scenario())
    assert done == 30 and during == "busy"
    assert reasons[0] is not None and "the state was busy for over 0.5 s" in reasons[0]
    assert reasons[1] is not None and "busy" in reasons[1]  # still busy: no second wait
    assert reasons[2] is None
    assert spooled(isolated) == []  # the two spooled writes went in with the third
    assert rows(pg_url, "SELECT count(*) FROM probes") == [(3,)]


def test_a_report_that_found_the_thread_busy_still_gives_up_on_a_server_that_then_hangs(
    pg_url, pg_server, isolated
):
    """A report (`run(abandon=True)`) queued behind long but healthy work finds the server
    answering at its deadline, so it waits on; the server then stops answering: the report
    gives up connect_timeout_s after the last answer instead of waiting for TCP."""
    import asyncio
    import contextlib
    import signal

    from voicefallback.errors import StateUnreachable
    from voicefallback.health import apply_probe
    from voicefallback.store.owner import StateOwner

    database = pg_url.rsplit("/", 1)[1]

    def long_work(store) -> int:
        with store._guard("read"):
            for _ in range(60):
                store._fetch("SELECT pg_sleep(0.05)")
        return 60

    async def scenario() -> BaseException | None:
        state = StateOwner(pg_url, update=apply_probe, threaded=True, connect_timeout_s=0.5)
        try:
            await state.snapshots(())  # warm
            [(hung,)] = pg_server.admin(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'voicefallback'"
                f" AND datname = '{database}'"
            )
            busy = asyncio.ensure_future(state.run(long_work))
            await asyncio.sleep(0.05)
            report = asyncio.ensure_future(state.run(lambda s: s.snapshots(()), abandon=True))
            await asyncio.sleep(0.35)  # the server answered within the report's wait...
            os.kill(hung, signal.SIGSTOP)  # ...and stops answering before it ends
            try:
                try:
                    await asyncio.wait_for(asyncio.shield(report), 5)
                    outcome: BaseException | None = None
                except (StateUnreachable, TimeoutError) as exc:
                    outcome = exc  # TimeoutError: still waiting on the hung server
            finally:
                os.kill(hung, signal.SIGCONT)
            with contextlib.suppress(Exception):
                await busy
            with contextlib.suppress(Exception):
                await report
            return outcome
        finally:
            await state.aclose()

    outcome = asyncio.run(scenario())
    assert isinstance(outcome, StateUnreachable), outcome
    assert str(outcome).endswith("no answer within 0.5 s")


def test_a_start_is_not_held_by_a_database_that_stops_answering_it(
    cli, config_file, pg_url, pg_server, isolated, monkeypatch
):
    """The database answers others but not this start: its tables are locked (as `VACUUM
    FULL` or a migration by hand locks them). `start` gives up on it after
    connect_timeout_s, decides by just-in-time probes, spools its write, and exits 0; the
    write goes in once the lock is gone."""
    import subprocess
    import sys
    import threading

    monkeypatch.setenv("VOICEFALLBACK_DB", pg_url)
    add_setting(config_file, "connect_timeout_s = 1")
    assert cli(*START_A).exit_code == 0  # the schema exists; nothing spooled
    holder = pg_server.holder(pg_url)
    try:
        holder.execute("LOCK TABLE snapshots IN ACCESS EXCLUSIVE MODE")  # held until rollback
        release = threading.Timer(60, holder.rollback)  # never held past the test
        release.start()
        # A process of its own, so a hang fails the test instead of stopping the run.
        started = subprocess.run(
            [sys.executable, "-m", "voicefallback", *START_B],
            capture_output=True,
            text=True,
            timeout=30,
        )
    finally:
        release.cancel()
        holder.rollback()
        holder.close()
    assert started.returncode == 0, started.stderr
    document = json.loads(started.stdout)
    assert document["degraded"] is True and document["chosen"] == "openai:gpt-4o"
    assert "no answer within 1 s" in started.stderr and PASSWORD not in started.stderr
    assert len(spooled(isolated)) == 1
    assert cli(*START_A).exit_code == 0  # the lock is gone: the next writer puts it in
    assert spooled(isolated) == []
    events = sorted(sim for (sim,) in rows(pg_url, "SELECT simulation_id FROM events"))
    assert events == ["sim-auto", "sim-auto", "sim-caller"]


def test_a_start_spools_even_when_every_default_executor_thread_is_stuck(isolated):
    """In `serve`, read routes run on the default executor and may all be stuck on the same
    database that stopped answering: a degraded start's spool write must not queue behind
    them."""
    import asyncio
    import socket
    import threading

    from voicefallback.config import Thresholds
    from voicefallback.health import apply_probe
    from voicefallback.records import ProbeResult, utcnow
    from voicefallback.store.owner import StateOwner

    call = ProbeResult("p:a", False, utcnow(), error="timeout", kind="session")

    with socket.socket() as closed:  # a port nothing listens on: refused at once
        closed.bind(("127.0.0.1", 0))
        url = f"postgresql://vf@127.0.0.1:{closed.getsockname()[1]}/x"

    async def scenario() -> list[str | None]:
        state = StateOwner(url, update=apply_probe, threaded=True, connect_timeout_s=1)
        stuck = threading.Event()
        limits = {"p:a": Thresholds()}
        try:
            first = await state.record([call], limits)  # finds it away
            blockers = [asyncio.ensure_future(asyncio.to_thread(stuck.wait)) for _ in range(40)]
            await asyncio.sleep(0.1)
            second = await asyncio.wait_for(state.record([call], limits), 30)
            stuck.set()
            await asyncio.gather(*blockers)
            return [first, second]
        finally:
            stuck.set()
            await state.aclose()

    first, second = asyncio.run(scenario())
    assert first is not None and "cannot reach the state database" in first
    assert second == first and "kept in the spool" in first
    assert len(spooled(isolated)) == 2


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_start_interrupted_in_its_write_on_postgresql_keeps_nothing(
    cli, config_file, pg_url, pg_server, isolated, monkeypatch, signum, code
):
    """Ctrl-C or SIGTERM while the start's write waits on the database (here for a model's
    lock another writer holds): the write is rolled back, not spooled to be written in later,
    and the start exits 130 or 143 with one line."""
    import subprocess
    import sys

    from voicefallback.store.postgres import _MODEL_LOCKS

    monkeypatch.setenv("VOICEFALLBACK_DB", pg_url)
    add_setting(config_file, "connect_timeout_s = 30")
    assert cli(*START_A).exit_code == 0  # the schema exists; nothing spooled
    holder = pg_server.holder(pg_url)
    try:
        for model in ("openai:gpt-4o", SONNET):  # whichever the start records
            holder.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", (_MODEL_LOCKS, model))
        started = subprocess.Popen(
            [sys.executable, "-m", "voicefallback", *START_B],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # until its write waits for the lock
            waiting = holder.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            ).fetchone()
            if waiting and waiting[0]:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the start never waited for the lock")
        started.send_signal(signum)
        _, stderr = started.communicate(timeout=20)
    finally:
        holder.execute("SELECT pg_advisory_unlock_all()")
        holder.close()
    assert started.returncode == code, stderr
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert spooled(isolated) == []
    assert cli("fallbacks", "--json").exit_code == 0
    events = sorted(sim for (sim,) in rows(pg_url, "SELECT simulation_id FROM events"))
    assert events == ["sim-auto"]


def test_a_read_kept_waiting_by_a_locked_table_gives_up_as_busy(
    cli, pg_url, pg_server, monkeypatch
):
    """`health` on a database whose tables are locked (VACUUM FULL, say) does not wait for
    ever: its statements give up (exit 75, try again), one line, nothing written."""

    from voicefallback.store import postgres

    monkeypatch.setenv("VOICEFALLBACK_DB", pg_url)
    monkeypatch.setattr(postgres, "READ_STATEMENT_TIMEOUT_S", 1.0)
    assert cli(*START_A).exit_code == 0
    holder = pg_server.holder(pg_url)
    try:
        holder.execute("LOCK TABLE snapshots IN ACCESS EXCLUSIVE MODE")
        health = cli("health", "--json")
    finally:
        holder.rollback()
        holder.close()
    assert health.exit_code == 75 and health.stdout == ""
    assert health.stderr.count("\n") == 1 and "waiting for over 1 s; try again" in health.stderr
    assert PASSWORD not in health.stderr
    assert cli("health", "--json").exit_code == 0  # the lock is gone


def test_readers_never_write_the_spool_in_so_a_lock_never_holds_them_past_their_limit(
    cli, pg_url, pg_server, isolated, monkeypatch, down
):
    """A degraded start left a spooled write; the database is back but its tables are locked
    (VACUUM FULL, say). `health`, what load balancers, cron and deploy gates call, reads
    only: exit 75 after its statement timeout (15 s), the spool left to the next writer (a
    writer has no such timeout: a reader that wrote the spool in would wait for the lock)."""
    import subprocess
    import sys

    monkeypatch.setenv("VOICEFALLBACK_DB", pg_url)
    assert cli(*START_A).json["degraded"] is True  # the server is down: spooled
    down()
    assert cli("probe", "--json").exit_code == 0  # the schema, and the spool written in
    assert spooled(isolated) == []
    pg_server.stop()
    try:
        assert cli(*START_B).json["degraded"] is True  # one more spooled write
    finally:
        pg_server.start()
    holder = pg_server.holder(pg_url)
    try:
        holder.execute("LOCK TABLE snapshots, events IN ACCESS EXCLUSIVE MODE")
        read = subprocess.run(
            [sys.executable, "-m", "voicefallback", "health", "--json"],
            capture_output=True,
            text=True,
            timeout=60,  # a reader that wrote the spool in would wait on the lock for ever
        )
    finally:
        holder.rollback()
        holder.close()
    assert read.returncode == 75 and read.stdout == "", read.stderr
    assert read.stderr.count("\n") == 1 and PASSWORD not in read.stderr
    assert len(spooled(isolated)) == 1  # left for the next writer
