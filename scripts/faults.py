"""Break the state under a loaded `serve` and check that no answered start was lost silently.

Not part of the test run (tests/test_state_faults.py holds the small versions). It starts
`voicefallback serve` on a state, keeps CLIENTS threads posting starts to it (each with its
own simulation id, on a primary that is down in the shipped stub registry, so every start
records a fallback event), and meanwhile does to the state, one after the other, what
operators and disks do:

- SQLite (on a 64 MiB tmpfs of its own, which needs root; without it, `fill` is skipped):
  `delete` (rm state.db*; then a `probe` makes a new file at the path), `replace` (a backup
  taken a moment before is moved over the file), `fill` (the disk filled to the last byte,
  then freed), `lock` (another process holds the write lock), `newer` (a newer voicefallback
  bumps the schema version, then it is put back);
- PostgreSQL (`--postgres`, a throwaway server): `freeze` (the server's backends stopped,
  SIGSTOP, then resumed), `down` (the server stopped, then started), `lock` (a table lock).

Then it heals everything, lets `serve` write in what it kept aside, stops it with SIGTERM
and checks:

- every start was answered 200 (a start never fails for its state), degraded or not;
- no simulation id has more than one event: nothing was written twice;
- every start answered after the last fault that takes records away with it (`delete`,
  `replace`: the operator removed them) has its event exactly once, except those `serve`
  logged as never recorded (writes held in memory at the stop);
- `serve` logged one `state away` line per outage at most (never one per start), no
  traceback, and stopped within 7 s with exit 0;
- PRAGMA integrity_check is ok (SQLite).

    python scripts/faults.py                  # SQLite, every fault, about a minute
    python scripts/faults.py --postgres
    python scripts/faults.py --clients 16 --phase-s 5
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # tests/pg_server.py: the throwaway server
SHIPPED_CONFIG = REPO / "models.toml"
DOWN = "anthropic:claude-3-5-sonnet-latest"  # fails every call in the shipped stub registry
SCHEMA_VERSION_PRAGMA = "PRAGMA user_version"
LISTENING = re.compile(r"serving (http://\S+) ")


@dataclass
class Answer:
    simulation_id: str
    at: float  # monotonic, when the answer came
    status: int
    degraded: bool


@dataclass
class Run:
    answers: list[Answer] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)
    destructive_at: float = 0.0  # when the last fault that takes records away began
    outages: int = 0


def client(url: str, name: str, run: Run) -> None:
    with httpx.Client(base_url=url, timeout=60) as http:
        n = 0
        while not run.stop.is_set():
            simulation_id = f"{name}-{n}"
            n += 1
            try:
                answer = http.post(
                    "/interviews/start", json={"simulationId": simulation_id, "primary": DOWN}
                )
                status, degraded = answer.status_code, bool(answer.json().get("degraded"))
            except httpx.HTTPError:
                status, degraded = 0, False
            with run.lock:
                run.answers.append(Answer(simulation_id, time.monotonic(), status, degraded))


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "voicefallback", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


# -- faults on a SQLite file ------------------------------------------------------------------


def sqlite_faults(db: Path, env: dict[str, str], mounted: bool) -> dict[str, Callable[..., None]]:
    def delete(run: Run, hold_s: float) -> None:
        run.destructive_at = time.monotonic()
        run.outages += 1
        for path in db.parent.glob(db.name + "*"):
            path.unlink()
        time.sleep(hold_s)
        cli(env, "probe", "--json")  # a state back at the path

    def replace(run: Run, hold_s: float) -> None:
        backup = db.with_name("backup.db")
        with sqlite3.connect(db) as source, sqlite3.connect(backup) as target:
            source.backup(target)
        source.close()
        target.close()
        time.sleep(hold_s)
        run.destructive_at = time.monotonic()
        backup.rename(db)

    def fill(run: Run, hold_s: float) -> None:
        ballast = db.with_name("ballast")
        fd = os.open(ballast, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            while True:
                os.write(fd, b"\0" * 65536)
        except OSError:
            pass
        finally:
            os.close(fd)
        run.outages += 1
        time.sleep(hold_s)
        ballast.unlink()

    def lock(run: Run, hold_s: float) -> None:
        holder = sqlite3.connect(db, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        time.sleep(hold_s)
        holder.execute("ROLLBACK")
        holder.close()

    def newer(run: Run, hold_s: float) -> None:
        with sqlite3.connect(db, isolation_level=None) as conn:
            version = conn.execute(SCHEMA_VERSION_PRAGMA).fetchone()[0]
            conn.execute(f"PRAGMA user_version = {version + 1}")
        run.outages += 1
        time.sleep(hold_s)
        with sqlite3.connect(db, isolation_level=None) as conn:
            conn.execute(f"PRAGMA user_version = {version}")

    faults = {"delete": delete, "replace": replace, "lock": lock, "newer": newer}
    if mounted:
        faults["fill"] = fill
    return faults


# -- faults on a PostgreSQL database ------------------------------------------------------------


def postgres_faults(server: object, url: str) -> dict[str, Callable[..., None]]:
    database = url.rsplit("/", 1)[1]

    def backends() -> list[int]:
        found = server.admin(  # type: ignore[attr-defined]
            f"SELECT pid FROM pg_stat_activity WHERE datname = '{database}'"
        )
        return [pid for (pid,) in found]

    def freeze(run: Run, hold_s: float) -> None:
        pids = backends()
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        run.outages += 1
        time.sleep(hold_s)
        for pid in pids:
            os.kill(pid, signal.SIGCONT)

    def down(run: Run, hold_s: float) -> None:
        server.stop()  # type: ignore[attr-defined]
        run.outages += 1
        time.sleep(hold_s)
        server.start()  # type: ignore[attr-defined]

    def lock(run: Run, hold_s: float) -> None:
        holder = server.holder(url)  # type: ignore[attr-defined]
        holder.execute("LOCK TABLE snapshots, events IN ACCESS EXCLUSIVE MODE")
        time.sleep(hold_s)
        holder.rollback()
        holder.close()

    return {"freeze": freeze, "down": down, "lock": lock}


def events_of(location: Path | str) -> Counter[str]:
    if isinstance(location, Path):
        with sqlite3.connect(location) as conn:
            found = conn.execute("SELECT simulation_id FROM events").fetchall()
    else:
        import psycopg

        with psycopg.connect(location) as conn:
            found = conn.execute("SELECT simulation_id FROM events").fetchall()
    return Counter(sim for (sim,) in found)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", action="store_true", help="a throwaway PostgreSQL state")
    parser.add_argument("--clients", type=int, default=8, help="threads posting starts")
    parser.add_argument("--phase-s", type=float, default=3.0, help="how long each fault lasts")
    options = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="vf-faults-"))
    config = work / "models.toml"
    shutil.copy(SHIPPED_CONFIG, config)
    config.write_text(
        config.read_text().replace("[settings]", "[settings]\nconnect_timeout_s = 1"), "utf-8"
    )
    env = {
        **os.environ,
        "HOME": str(work / "home"),
        "XDG_STATE_HOME": str(work / "home" / "state"),
        "VOICEFALLBACK_CONFIG": str(config),
    }
    pg = None
    mounted = False
    state_dir = work / "disk"
    state_dir.mkdir()
    if options.postgres:
        from tests.pg_server import PostgresServer

        pg = PostgresServer()
        location: Path | str = pg.new_database()
        faults = postgres_faults(pg, str(location))
    else:
        mounted = (
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "size=64m,mode=0700", "tmpfs", str(state_dir)],
                capture_output=True,
            ).returncode
            == 0
        )
        location = state_dir / "state.db"
        faults = sqlite_faults(location, {**env, "VOICEFALLBACK_DB": str(location)}, mounted)
    env["VOICEFALLBACK_DB"] = str(location)
    print(f"state: {'postgresql' if pg else location} ({', '.join(faults)})")

    serve = subprocess.Popen(
        [sys.executable, "-m", "voicefallback", "serve", "--port", "0"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    assert serve.stderr is not None
    first = serve.stderr.readline()
    lines.append(first)
    match = LISTENING.search(first)
    if match is None:
        print(first + serve.stderr.read(), file=sys.stderr)
        return 2
    url = match.group(1)
    reader = threading.Thread(target=lambda: lines.extend(serve.stderr), daemon=True)  # type: ignore[arg-type]
    reader.start()

    run = Run()
    clients = [
        threading.Thread(target=client, args=(url, f"c{n}", run)) for n in range(options.clients)
    ]
    began = time.monotonic()
    problems: list[str] = []
    try:
        for thread in clients:
            thread.start()
        time.sleep(options.phase_s)
        for name, fault in faults.items():
            print(f"  {name} ...", flush=True)
            fault(run, options.phase_s)
            time.sleep(options.phase_s)  # healed: the load goes on
        run.stop.set()
        for thread in clients:
            thread.join()
        # What was kept aside goes in with the next write: starts until one is not degraded.
        with httpx.Client(base_url=url, timeout=60) as http:
            for n in range(200):
                answer = http.post(
                    "/interviews/start", json={"simulationId": f"final-{n}", "primary": DOWN}
                )
                run.answers.append(
                    Answer(f"final-{n}", time.monotonic(), answer.status_code, False)
                )
                if not answer.json().get("degraded"):
                    break
                time.sleep(0.1)
            else:
                problems.append("the state never took writes again")
    finally:
        run.stop.set()
        stopping = time.monotonic()
        serve.send_signal(signal.SIGTERM)
        try:
            code = serve.wait(timeout=30)
        except subprocess.TimeoutExpired:
            serve.kill()
            code = -9
        stop_s = time.monotonic() - stopping
        reader.join(timeout=5)
    elapsed = time.monotonic() - began

    log = "".join(lines)
    never = sum(int(n) for n in re.findall(r"(\d+) write\(s\) held in memory were never", log))
    found = events_of(location)
    if pg is not None:
        pg.close()
    answered = [a for a in run.answers if a.status == 200]
    failed = [a for a in run.answers if a.status != 200]
    twice = [sim for sim, count in found.items() if count > 1]
    required = [a for a in answered if a.at > run.destructive_at + 0.5]
    missing = [a.simulation_id for a in required if found[a.simulation_id] != 1]
    away_lines = log.count("state away")
    if failed:
        problems.append(f"{len(failed)} starts not answered 200 (first: {failed[0]})")
    if twice:
        problems.append(f"{len(twice)} events written twice (first: {twice[0]})")
    if len(missing) > never:
        problems.append(f"{len(missing)} answered starts not recorded (first: {missing[0]})")
    if "Traceback" in log:
        problems.append("a traceback in the log")
    if away_lines > run.outages:
        problems.append(f"{away_lines} 'state away' lines for {run.outages} outages")
    if code != 0 or stop_s > 7:
        problems.append(f"serve stopped with {code} after {stop_s:.1f} s")
    if isinstance(location, Path) and location.exists():
        with sqlite3.connect(location) as conn:
            check = conn.execute("PRAGMA integrity_check").fetchone()[0]
        if check != "ok":
            problems.append(f"integrity_check: {check}")
    degraded = sum(a.degraded for a in answered)
    print(
        f"{len(run.answers)} starts in {elapsed:.0f} s: {len(answered)} answered 200"
        f" ({degraded} degraded), {len(required)} after the last destructive fault, of which"
        f" {len(required) - len(missing)} recorded once ({never} logged as never recorded);"
        f" {len(twice)} written twice; {away_lines} 'state away' log lines;"
        f" serve stopped in {stop_s:.1f} s with {code}"
    )
    for problem in problems:
        print(f"PROBLEM: {problem}")
    if away_lines > run.outages:
        print("\n".join(line for line in lines if "state " in line))
    if mounted:
        subprocess.run(["umount", "-l", str(state_dir)], check=False)
    shutil.rmtree(work, ignore_errors=True)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
