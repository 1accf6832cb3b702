"""Many processes on one state file: nothing lost, nothing duplicated, nobody sees a lock.

Every command here is a real `python -m voicefallback` process. scripts/stress.py does the
same at a larger scale (16+ processes, thousands of operations), outside the test run.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import SHIPPED_CONFIG
from voicefallback.store import SCHEMA_VERSION

SONNET = "anthropic:claude-3-5-sonnet-latest"  # down in the shipped stub registry
MINI = "openai:gpt-4o-mini"
MODELS = 4  # in the shipped registry

STARTERS = 8
STARTS_EACH = 5
PROBES = 6
READS_EACH = 6


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    config = tmp_path / "models.toml"
    shutil.copy(SHIPPED_CONFIG, config)
    return {
        **os.environ,
        "VOICEFALLBACK_CONFIG": str(config),
        "VOICEFALLBACK_DB": str(tmp_path / "state" / "state.db"),
        "HOME": str(tmp_path),
    }


def run(env: dict[str, str], *args: str) -> tuple[list[str], int, str, str]:
    done = subprocess.run(
        [sys.executable, "-m", "voicefallback", *args, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return list(args), done.returncode, done.stdout, done.stderr


def rows(db: str, sql: str) -> list[tuple]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_concurrent_starts_probes_and_readers_lose_and_duplicate_nothing(env):
    db = env["VOICEFALLBACK_DB"]
    # One probe first, so every model is fresh for the whole test: a start then makes
    # exactly one call (its opening call) and the expected rows can be counted exactly.
    assert run(env, "probe")[1] == 0

    def starter(worker: int) -> list[tuple[list[str], int, str, str]]:
        primary = SONNET if worker % 2 == 0 else MINI  # half of them fall back
        return [
            run(env, "start", "--simulation-id", f"w{worker}-{n}", "--primary", primary)
            for n in range(STARTS_EACH)
        ]

    def prober() -> list[tuple[list[str], int, str, str]]:
        return [run(env, "probe") for _ in range(PROBES)]

    def reader(command: str) -> list[tuple[list[str], int, str, str]]:
        return [run(env, command) for _ in range(READS_EACH)]

    with ThreadPoolExecutor(max_workers=STARTERS + 3) as pool:
        jobs = [pool.submit(starter, w) for w in range(STARTERS)]
        jobs += [pool.submit(prober), pool.submit(reader, "health")]
        jobs += [pool.submit(reader, "fallbacks")]
        results = [result for job in jobs for result in job.result()]

    for args, code, stdout, stderr in results:
        assert code == 0, (args, stderr)
        assert stderr == "", (args, stderr)  # in particular, no "database is locked"
        document = json.loads(stdout)
        if args[0] == "fallbacks":
            ids = [event["id"] for event in document["events"]]
            assert ids == sorted(set(ids), reverse=True)  # newest first, no duplicates

    expected_events = {
        f"w{w}-{n}" for w in range(STARTERS) if w % 2 == 0 for n in range(STARTS_EACH)
    }
    events = [sim for (sim,) in rows(db, "SELECT simulation_id FROM events")]
    assert sorted(events) == sorted(expected_events)  # each exactly once
    assert rows(db, "SELECT count(*) FROM events") == [(len(expected_events),)]
    kinds = dict(rows(db, "SELECT kind, count(*) FROM probes GROUP BY kind"))
    assert kinds == {"probe": MODELS * (1 + PROBES), "start": STARTERS * STARTS_EACH}
    # Snapshots are read-modify-write: a lost update would show in the counters. Replaying
    # history in commit order gives what they must be (a call older than the evidence
    # already recorded is kept in history but does not move the snapshot).
    snapshots = {
        model: (failures, successes)
        for model, failures, successes in rows(
            db, "SELECT model, consecutive_failures, consecutive_successes FROM snapshots"
        )
    }
    for model in (SONNET, MINI):
        assert snapshots[model] == replayed_counters(db, model), model
    assert snapshots[SONNET][0] >= 1 and snapshots[MINI][1] >= 1
    assert rows(db, "PRAGMA integrity_check") == [("ok",)]


def replayed_counters(db: Path, model: str) -> tuple[int, int]:
    failures = successes = 0
    latest = ""
    for at, ok in rows(db, f"SELECT at, ok FROM probes WHERE model = '{model}' ORDER BY id"):
        if at < latest:
            continue
        latest = at
        failures, successes = (0, successes + 1) if ok else (failures + 1, 0)
    return failures, successes


OPEN_AT_ONCE = r"""
import sys, time
go, argv = float(sys.argv[1]), sys.argv[2:]
import voicefallback.cli, voicefallback.store, voicefallback.sessions, voicefallback.probing
while time.time() < go:
    time.sleep(0.001)
sys.argv = ["voicefallback", *argv]
voicefallback.cli.main()
"""


@pytest.mark.parametrize("existing", ["none", "empty file"])
def test_eight_processes_opening_a_new_file_at_once_migrate_it_once(env, tmp_path, existing):
    for round_ in range(2):
        db = tmp_path / f"round{round_}" / "state.db"
        if existing == "empty file":
            db.parent.mkdir()
            db.touch()  # e.g. made by a provisioning script
        go = time.time() + 1.2  # every process imported and waiting by then
        commands = [
            ["start", "--simulation-id", f"s{n}", "--primary", SONNET if n % 2 else MINI]
            for n in range(6)
        ] + [["probe"], ["health"]]
        processes = [
            subprocess.Popen(
                [sys.executable, "-c", OPEN_AT_ONCE, str(go), *args, "--json", "--db", str(db)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for args in commands
        ]
        for args, process in zip(commands, processes, strict=True):
            _, stderr = process.communicate(timeout=120)
            assert process.returncode == 0 and stderr == "", (args, stderr)
        numbers = rows(str(db), "SELECT number, count(*) FROM migrations GROUP BY number")
        assert numbers == [(n, 1) for n in range(1, SCHEMA_VERSION + 1)]
        assert rows(str(db), "PRAGMA user_version") == [(SCHEMA_VERSION,)]
        assert rows(str(db), "SELECT count(*) FROM events") == [(3,)]
        assert sorted(p.name for p in db.parent.iterdir() if ".new" in p.name) == []
