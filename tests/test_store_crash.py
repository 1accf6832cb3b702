"""Killing a command at any moment leaves the state file consistent; Ctrl-C and SIGTERM roll back.

Commands run as real processes. To stop one exactly in the middle of a write, a wrapper
makes its connection pause right before COMMIT, once the transaction holds the rows.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import SHIPPED_CONFIG

SONNET = "anthropic:claude-3-5-sonnet-latest"

PAUSE_BEFORE_COMMIT = r"""
import sqlite3, sys, time
marker, trigger = sys.argv[1], sys.argv[2]
connect = sqlite3.connect

class Pausing(sqlite3.Connection):
    armed = False

    def execute(self, sql, *args):
        if sql.startswith(trigger):
            self.armed = True
        elif sql == "COMMIT" and self.armed:
            open(marker, "w").close()
            time.sleep(60)  # the test kills or interrupts the process here
        return super().execute(sql, *args)

sqlite3.connect = lambda *a, **k: connect(*a, factory=Pausing, **k)
from voicefallback.cli import main
sys.argv = ["voicefallback", *sys.argv[3:]]
main()
"""

# The write each command makes, and the statement that shows it has started.
WRITES = {
    "probe": (["probe", "--json"], "INSERT INTO probes"),
    "start": (
        ["start", "--simulation-id", "interrupted", "--primary", SONNET, "--json"],
        "INSERT INTO events",
    ),
}


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


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "voicefallback", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def paused(env: dict[str, str], tmp_path: Path, command: str) -> subprocess.Popen[str]:
    """Start `command` and return once it is inside its write transaction, before COMMIT."""
    args, trigger = WRITES[command]
    marker = tmp_path / "paused"
    marker.unlink(missing_ok=True)
    process = subprocess.Popen(
        [sys.executable, "-c", PAUSE_BEFORE_COMMIT, str(marker), trigger, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while not marker.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the command never reached its write"
        time.sleep(0.01)
    return process


def state(env: dict[str, str]) -> dict[str, object]:
    conn = sqlite3.connect(env["VOICEFALLBACK_DB"])
    try:
        return {
            "integrity": conn.execute("PRAGMA integrity_check").fetchall(),
            "probes": conn.execute("SELECT count(*) FROM probes").fetchone()[0],
            "events": conn.execute("SELECT simulation_id FROM events ORDER BY id").fetchall(),
            "snapshots": conn.execute("SELECT * FROM snapshots ORDER BY model").fetchall(),
        }
    finally:
        conn.close()


@pytest.mark.parametrize("command", ["probe", "start"])
def test_sigkill_in_the_middle_of_a_write_loses_only_that_write(env, tmp_path, command):
    assert run(env, "probe").returncode == 0
    before = state(env)
    process = paused(env, tmp_path, command)
    process.kill()
    process.communicate()
    after = state(env)
    assert after == before  # integrity ok, no partial event, no probe row, same snapshots
    assert after["integrity"] == [("ok",)]
    started = time.monotonic()
    next_start = run(env, "start", "--simulation-id", "next", "--primary", SONNET, "--json")
    assert next_start.returncode == 0, next_start.stderr
    assert time.monotonic() - started < 10  # no lock left behind to wait for
    assert state(env)["events"] == [("next",)]


@pytest.mark.parametrize("command", ["probe", "start"])
@pytest.mark.parametrize(
    ("signum", "code", "word"), [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "")]
)
def test_sigterm_and_ctrl_c_mid_write_roll_back_without_a_traceback(
    env, tmp_path, command, signum, code, word
):
    assert run(env, "probe").returncode == 0
    before = state(env)
    process = paused(env, tmp_path, command)
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == code, stderr
    assert "Traceback" not in stderr and stdout == ""
    assert stderr.count("\n") == 1 and stderr.startswith("voicefallback: error: "), stderr
    assert (word or "interrupted") in stderr
    assert state(env) == before  # rolled back: nothing of it is in the file
    assert run(env, "probe").returncode == 0


MARK_LOCK_WAIT = r"""
import sqlite3, sys
marker = sys.argv[1]
connect = sqlite3.connect

class Marking(sqlite3.Connection):
    def execute(self, sql, *args):
        if sql == "BEGIN IMMEDIATE":
            open(marker, "w").close()  # about to ask for the write lock
        return super().execute(sql, *args)

sqlite3.connect = lambda *a, **k: connect(*a, factory=Marking, **k)
from voicefallback.cli import main
sys.argv = ["voicefallback", *sys.argv[2:]]
main()
"""


WAITING_START = ("start", "--simulation-id", "w", "--primary", SONNET)


def test_sigterm_while_waiting_for_the_write_lock_exits_promptly(env, tmp_path):
    assert run(env, "probe").returncode == 0
    marker = tmp_path / "waiting"
    holder = sqlite3.connect(env["VOICEFALLBACK_DB"], isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another writer that is taking its time
    try:
        process = subprocess.Popen(
            [sys.executable, "-c", MARK_LOCK_WAIT, str(marker), *WAITING_START],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 30
        while not marker.exists():
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(1.5)  # well into the wait: more than one SQLite busy timeout
        assert process.poll() is None
        sent = time.monotonic()
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
        assert time.monotonic() - sent < 3
        assert process.returncode == 143 and "Traceback" not in stderr, stderr
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert state(env)["events"] == []


def many_models(env: dict[str, str], count: int) -> None:
    lines = ['[settings]\nmode = "stub"\n[providers.p]\ntype = "openai"\n']
    lines += [f'[[models]]\nid = "p:m{n:04d}"\nstub = {{ latency_ms = 0 }}\n' for n in range(count)]
    Path(env["VOICEFALLBACK_CONFIG"]).write_text("".join(lines))


def test_sigkill_at_random_moments_never_leaves_a_partial_probe(env):
    models = 400
    many_models(env, models)
    started = time.monotonic()
    assert run(env, "probe", "--json").returncode == 0
    duration = time.monotonic() - started
    rng = random.Random(4)
    completed = 1
    for _ in range(8):
        process = subprocess.Popen(
            [sys.executable, "-m", "voicefallback", "probe", "--json"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(0.3, 1.0) * duration)
        process.kill()
        process.wait()
        now = state(env)
        assert now["integrity"] == [("ok",)]
        probes = now["probes"]
        assert isinstance(probes, int) and probes % models == 0, probes  # whole runs only
        completed = probes // models
        # Every snapshot counts exactly the runs whose rows are there.
        counts = {row[7] for row in now["snapshots"]}  # consecutive_successes
        assert counts == {completed}, counts
    assert run(env, "probe", "--json").returncode == 0
    assert state(env)["probes"] == (completed + 1) * models
