"""`serve` stops within 7 s of SIGTERM whatever its state does (a database that hangs, a
file another process keeps locked): a request still running at the grace gets the JSON 503
every temporary refusal gets, and nothing is logged as a traceback."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.conftest import add_setting
from tests.conftest_serve import ServerProcess
from tests.pg_server import PostgresServer, rows

pytest_plugins = ["tests.conftest_serve"]

SONNET = "anthropic:claude-3-5-sonnet-latest"
STOP_LIMIT_S = 7.0  # README: SIGTERM ends serve within 7 s


def patient(config_file: Path) -> None:
    """A start waits up to 20 s for a state that does not answer: one in flight at the stop."""
    add_setting(config_file, "connect_timeout_s = 20")


@contextmanager
def hung_database(pg_server: PostgresServer, pg_url: str) -> Iterator[None]:
    """Every backend of the test's database stopped (SIGSTOP): TCP up, no answer."""
    database = pg_url.rsplit("/", 1)[1]
    pids = [
        pid
        for (pid,) in pg_server.admin(
            f"SELECT pid FROM pg_stat_activity WHERE datname = '{database}'"
        )
    ]
    assert pids
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


@contextmanager
def locked_file(db: Path) -> Iterator[None]:
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        holder.execute("ROLLBACK")
        holder.close()


@contextmanager
def locked_models(pg_server: PostgresServer, pg_url: str) -> Iterator[None]:
    """Another writer holds every model's snapshot lock: reads go on, a start's write waits."""
    from voicefallback.store.postgres import _MODEL_LOCKS

    holder = pg_server.holder(pg_url)
    for model in (
        "openai:gpt-4o-mini",
        SONNET,
        "openai:gpt-4o",
        "anthropic:claude-3-5-haiku-latest",
    ):
        holder.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", (_MODEL_LOCKS, model))
    try:
        yield
    finally:
        holder.execute("SELECT pg_advisory_unlock_all()")
        holder.close()


def stop_with_a_start_in_flight(
    server: ServerProcess, stuck: Callable[[], object]
) -> tuple[httpx.Response, int, float]:
    answers: list[httpx.Response] = []
    body = {"simulationId": "in-flight", "primary": SONNET}

    def start() -> None:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            answers.append(client.post("/interviews/start", json=body))

    caller = threading.Thread(target=start)
    with stuck():
        caller.start()
        time.sleep(1.0)  # the start is waiting on its state
        began = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        status = server.process.wait(timeout=30)
        took = time.monotonic() - began
    caller.join(timeout=30)
    server.stop()
    assert answers, f"no answer before the process ended:\n{server.stderr}"
    return answers[0], status, took


def assert_cut_cleanly(answer: httpx.Response, status: int, took: float, stderr: str) -> None:
    assert took < STOP_LIMIT_S, (took, stderr)
    assert status == 0, stderr
    assert answer.status_code == 503, answer.text
    assert answer.json() == {"error": "the server is stopping; try again"}
    assert answer.headers["retry-after"] == "1"
    assert "Traceback" not in stderr and "Exception in ASGI" not in stderr, stderr
    assert "stopping took over" not in stderr, stderr  # ended by itself, not by the last resort


def test_sigterm_ends_serve_in_time_with_its_database_hung(
    serve,
    config_file,
    pg_server,
    pg_url,
):
    patient(config_file)
    server = serve(env={"VOICEFALLBACK_DB": pg_url})
    warm = server.post("/interviews/start", json={"simulationId": "warm", "primary": SONNET})
    assert warm.status_code == 200
    answer, status, took = stop_with_a_start_in_flight(
        server, lambda: hung_database(pg_server, pg_url)
    )
    assert_cut_cleanly(answer, status, took, server.stderr)


def test_sigterm_ends_serve_in_time_with_its_state_file_locked_and_keeps_the_cut_start(
    serve, cli, config_file, db_file
):
    """The cut start had made its calls and was waiting to write them: they are kept in the
    spool, and the next writer puts them in, once."""
    patient(config_file)
    server = serve()
    warm = server.post("/interviews/start", json={"simulationId": "warm", "primary": SONNET})
    assert warm.status_code == 200
    answer, status, took = stop_with_a_start_in_flight(server, lambda: locked_file(db_file))
    assert_cut_cleanly(answer, status, took, server.stderr)
    assert cli("start", "--simulation-id", "next", "--primary", SONNET).exit_code == 0
    with sqlite3.connect(db_file) as conn:
        events = [sim for (sim,) in conn.execute("SELECT simulation_id FROM events ORDER BY id")]
    assert events == ["warm", "in-flight", "next"]


def test_sigterm_ends_serve_in_time_with_its_writes_locked_and_keeps_the_cut_start(
    serve, cli, config_file, pg_server, pg_url, monkeypatch
):
    patient(config_file)
    monkeypatch.setenv("VOICEFALLBACK_DB", pg_url)
    server = serve(env={"VOICEFALLBACK_DB": pg_url})
    warm = server.post("/interviews/start", json={"simulationId": "warm", "primary": SONNET})
    assert warm.status_code == 200
    answer, status, took = stop_with_a_start_in_flight(
        server, lambda: locked_models(pg_server, pg_url)
    )
    assert_cut_cleanly(answer, status, took, server.stderr)
    assert cli("start", "--simulation-id", "next", "--primary", SONNET).exit_code == 0
    events = sorted(sim for (sim,) in rows(pg_url, "SELECT simulation_id FROM events"))
    assert events == ["in-flight", "next", "warm"]
