"""PostgreSQL under load, against the real server: many processes lose and duplicate
nothing, a client killed mid-write leaves no partial rows, and a server restart in the
middle of the load makes commands fail fast or succeed, with nothing half-written or lost.

The default run is small (4 starters x 12 starts); `python scripts/stress.py --postgres`
runs the full size (16 x 100 with a probe loop and readers)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.conftest import REPO, SHIPPED_CONFIG
from tests.pg_server import PostgresServer, rows

SONNET = "anthropic:claude-3-5-sonnet-latest"  # down in the shipped stub registry
SMALL = ["--starters", "4", "--ops", "12", "--probers", "1", "--readers", "2"]


def environment(url: str, home: Path) -> dict[str, str]:
    return {
        **os.environ,
        "VOICEFALLBACK_CONFIG": str(SHIPPED_CONFIG),
        "VOICEFALLBACK_DB": url,
        "HOME": str(home),
        "XDG_STATE_HOME": str(home / "state"),
    }


def test_many_processes_at_once_lose_and_duplicate_nothing(pg_url):
    done = subprocess.run(
        [sys.executable, "scripts/stress.py", "--db", pg_url, *SMALL],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["state"] == "postgresql" and report["failed"] == {}
    assert report["stderr_lines"] == 0
    assert report["events"] == report["events_expected"] == 4 // 2 * 12
    assert report["events_missing"] == report["events_duplicated"] == 0
    assert report["snapshot_counters_match_history"] and report["migrations_applied_once"]
    assert 1 <= report["peak_server_connections"] <= report["processes"]  # <= 1 per process


PAUSE_IN_WRITE = r"""
import sys, time
from voicefallback.store.sql import SQLStore

marker = sys.argv[1]
original = SQLStore._record

def pausing(self, *args, **kwargs):
    recorded = original(self, *args, **kwargs)  # every row of the write, not yet committed
    open(marker, "w").close()
    time.sleep(600)
    return recorded

SQLStore._record = pausing
from voicefallback.cli import main
sys.argv = ["voicefallback", *sys.argv[2:]]
main()
"""


def test_a_client_killed_mid_write_leaves_no_partial_rows(pg_url, tmp_path):
    env = environment(pg_url, tmp_path)
    marker = tmp_path / "in-write"
    start = ["start", "--simulation-id", "killed", "--primary", SONNET, "--json"]
    process = subprocess.Popen(
        [sys.executable, "-c", PAUSE_IN_WRITE, str(marker), *start],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert process.poll() is None, "the start ended before its write"
            assert time.monotonic() < deadline, "the start never reached its write"
            time.sleep(0.01)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()  # SIGKILL, if the test gave up before
        process.wait(timeout=30)
    assert rows(pg_url, "SELECT count(*) FROM probes") == [(0,)]
    assert rows(pg_url, "SELECT count(*) FROM events") == [(0,)]
    assert rows(pg_url, "SELECT count(*) FROM snapshots") == [(0,)]
    # Nothing it held (its model locks) is left behind: the next start writes at once.
    again = subprocess.run(
        [sys.executable, "-m", "voicefallback", *start[:2], "after", *start[3:]],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 0 and again.stderr == "", again.stderr
    assert rows(pg_url, "SELECT simulation_id FROM events") == [("after",)]


def test_a_server_restart_mid_load_fails_fast_or_succeeds_and_loses_nothing(
    pg_server: PostgresServer, pg_url, tmp_path
):
    env = environment(pg_url, tmp_path)
    subprocess.run(
        [sys.executable, "-m", "voicefallback", "probe", "--json"], env=env, check=True, timeout=60
    )

    def run(args: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "voicefallback", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,  # fail fast: a command that hangs on a lost server fails the test
        )

    commands = [
        ["start", "--simulation-id", f"r{n}", "--primary", SONNET, "--json"]
        if n % 4
        else ["health", "--json"]
        for n in range(16)
    ]
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(run, args) for args in commands]
        while sum(f.done() for f in futures) < 3:
            time.sleep(0.01)
        pg_server.restart("immediate")  # every connection dropped, mid-load
        results = [f.result() for f in futures]

    starts = [(a, r) for a, r in zip(commands, results, strict=True) if a[0] == "start"]
    for args, result in starts:  # a session never fails for its state
        assert result.returncode == 0, (args, result.stderr)
        assert result.stderr == "" or (
            result.stderr.count("\n") == 1 and "degraded" in result.stderr
        ), result.stderr
        assert json.loads(result.stdout)["usedFallback"] is True
    for args, result in zip(commands, results, strict=True):
        if args[0] == "health":  # readers succeed, or say in one line that it is away
            assert result.returncode in (0, 75), result.stderr
            assert result.stderr.count("\n") == (result.returncode == 75), result.stderr
    # The next write puts in what degraded starts spooled: every start's event, once.
    assert run(["probe", "--json"]).returncode == 0
    events = Counter(sim for (sim,) in rows(pg_url, "SELECT simulation_id FROM events"))
    assert events == Counter(args[2] for args, _ in starts)
    assert not list((tmp_path / "state").glob("voicefallback/spool/*/*.json"))
