"""`serve` under load: many HTTP clients beside CLI processes on one state file, then SIGTERM
(in-flight starts finish and are recorded, clean exit) and SIGKILL (the file stays
consistent and every start that was answered has its event)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

pytest_plugins = ["tests.conftest_serve"]

VOICEFALLBACK = [sys.executable, "-m", "voicefallback"]
SONNET = "anthropic:claude-3-5-sonnet-latest"  # down: every start falls back, one event each


def rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def start(client: httpx.Client, simulation_id: str) -> int:
    body = {"simulationId": simulation_id, "primary": SONNET}
    return client.post("/interviews/start", json=body).status_code


class Load:
    """Clients posting starts until told to stop or the server goes away; what each got."""

    def __init__(self, url: str, clients: int) -> None:
        self.answered: dict[str, int] = {}  # simulation id -> status code
        self.refused = 0  # connection refused or cut: never answered
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._client, args=(url, n), daemon=True)
            for n in range(clients)
        ]
        for thread in self._threads:
            thread.start()

    def _client(self, url: str, number: int) -> None:
        with httpx.Client(base_url=url, timeout=30.0) as client:
            for count in range(10_000):
                if self.stop.is_set():
                    return
                simulation_id = f"c{number}-{count}"
                try:
                    status = start(client, simulation_id)
                except httpx.TransportError:
                    with self._lock:
                        self.refused += 1
                    return
                with self._lock:
                    self.answered[simulation_id] = status

    def wait_for(self, answers: int) -> None:
        while len(self.answered) < answers:
            if not any(t.is_alive() for t in self._threads):
                raise AssertionError(f"clients stopped after {len(self.answered)} answers")
            threading.Event().wait(0.02)

    def join(self) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(timeout=30)


def cli_start(simulation_id: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*VOICEFALLBACK, "start", "--json", "--simulation-id", simulation_id, "--primary", SONNET],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ,
    )


def test_http_clients_and_cli_processes_share_one_state_file(serve, db_file):
    server = serve()
    load = Load(server.url, clients=6)
    with ThreadPoolExecutor(max_workers=4) as pool:
        cli_runs = list(pool.map(cli_start, [f"cli-{n}" for n in range(8)]))
        probe = subprocess.run(
            [*VOICEFALLBACK, "probe", "--json"],
            capture_output=True,
            text=True,
            timeout=120,
        )
    load.wait_for(60)
    load.join()
    assert all(run.returncode == 0 for run in cli_runs), [r.stderr for r in cli_runs]
    assert probe.returncode == 0, probe.stderr
    assert set(load.answered.values()) == {200} and load.refused == 0, server.stderr[-3000:]
    events = [sim for (sim,) in rows(db_file, "SELECT simulation_id FROM events")]
    assert len(events) == len(set(events))  # nothing duplicated
    assert set(events) == set(load.answered) | {f"cli-{n}" for n in range(8)}  # nothing lost
    assert rows(db_file, "PRAGMA integrity_check") == [("ok",)]
    assert "Traceback" not in server.stderr and "database is locked" not in server.stderr


def test_sigterm_under_load_finishes_in_flight_starts_and_exits_cleanly(serve, db_file):
    server = serve()
    load = Load(server.url, clients=8)
    load.wait_for(40)
    status = server.stop(signal.SIGTERM, timeout=10)  # systemd's patience, with room to spare
    load.join()
    assert status == 0
    assert set(load.answered.values()) == {200}  # no request was cut off with an error
    events = {sim for (sim,) in rows(db_file, "SELECT simulation_id FROM events")}
    assert events == set(load.answered)  # every answered start recorded, nothing half-done
    assert rows(db_file, "PRAGMA integrity_check") == [("ok",)]
    assert "Traceback" not in server.stderr
    assert "Application shutdown complete" in server.stderr


def test_sigkill_under_load_leaves_the_state_consistent_and_loses_no_answered_start(
    serve, db_file, cli: Callable[..., Any]
):
    server = serve()
    load = Load(server.url, clients=8)
    load.wait_for(40)
    server.stop(signal.SIGKILL)
    load.join()
    assert rows(db_file, "PRAGMA integrity_check") == [("ok",)]
    events = [sim for (sim,) in rows(db_file, "SELECT simulation_id FROM events")]
    assert len(events) == len(set(events))
    answered = {sim for sim, code in load.answered.items() if code == 200}
    assert answered <= set(events)  # answered means committed: none lost
    # Every event's calls are there too (one transaction): a probe row per event at least.
    assert rows(db_file, "SELECT count(*) FROM probes")[0][0] >= len(events)
    # And the next process uses the file as if nothing happened.
    after = cli("start", "--simulation-id", "after-kill", "--primary", SONNET, "--json")
    assert after.exit_code == 0 and after.json["usedFallback"] is True
