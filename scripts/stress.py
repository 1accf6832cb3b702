"""Stress one state file from many processes at once and check that nothing was lost.

Not part of the test run (tests/test_store_concurrency.py is the small version). It starts, all at
the same moment and on a brand-new state file:

- STARTERS processes, each running `start` OPS times (half on a primary that is down in the
  shipped stub registry, so every one of those records a fallback event);
- PROBERS processes running `probe` in a loop (they also take turns on the probe lock);
- READERS processes alternating `health` and `fallbacks`;
- one process running `prune` (every third time with --vacuum).

Each worker runs its commands through the real entry point, one after the other in one
process (so thousands of operations fit in a minute); `--process-per-op` starts a new
process for every command instead. Then it checks the file:

- every command exited 0 and nothing at all was written to stderr ("database is locked"
  included);
- each expected fallback event is there exactly once, and no other;
- each model's snapshot counters equal a replay of its call history in commit order (a call
  older than the evidence already recorded stays in history but does not move the
  snapshot): a lost, duplicated or half-applied write would break the equality;
- every migration was applied once; PRAGMA integrity_check is ok.

    python scripts/stress.py                       # 16 starters x 150 starts, about 30 s
    python scripts/stress.py --starters 32 --ops 300
    python scripts/stress.py --postgres --ops 100  # the same on a throwaway PostgreSQL server

With `--postgres` (or `--db postgresql://…`, an empty database) the state is a PostgreSQL
database instead, and it also counts the server's connections from voicefallback while the
load runs: at most one per process.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # tests/pg_server.py: the throwaway server
SHIPPED_CONFIG = REPO / "models.toml"
DOWN = "anthropic:claude-3-5-sonnet-latest"  # fails every call in the shipped stub registry
UP = "openai:gpt-4o-mini"

# Runs the commands given as JSON lines on stdin through the real entry point, after waiting
# for the common start time; prints one JSON line per command: args, exit code, stdout.
WORKER = r"""
import contextlib, io, json, sys, time
go = float(sys.argv[1])
commands = [json.loads(line) for line in sys.stdin]
import voicefallback.cli
while time.time() < go:
    time.sleep(0.001)
for args in commands:
    sys.argv = ["voicefallback", *args]
    out = io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out):
        try:
            voicefallback.cli.main()
        except SystemExit as done:
            code = done.code if isinstance(done.code, int) else 1
    print(json.dumps({"args": args, "code": code, "out": out.getvalue()}), flush=True)
"""


def plan(args: argparse.Namespace) -> list[list[list[str]]]:
    """The commands of each worker."""
    workers: list[list[list[str]]] = []
    for w in range(args.starters):
        primary = DOWN if w % 2 == 0 else UP
        workers.append(
            [
                ["start", "--simulation-id", f"w{w}-{n}", "--primary", primary, "--json"]
                for n in range(args.ops)
            ]
        )
    for _ in range(args.probers):
        workers.append([["probe", "--json"]] * max(1, args.ops // 3))
    reads = (["health", "--json"], ["fallbacks", "--json"])
    for r in range(args.readers):
        workers.append([reads[(n + r) % 2] for n in range(args.ops)])
    workers.append(
        [["prune", "--json", *(["--vacuum"] if n % 3 == 2 else [])] for n in range(args.ops // 10)]
    )
    return workers


def run_worker(
    commands: list[list[str]], env: dict[str, str], go: float, per_op: bool
) -> tuple[list[dict[str, object]], str]:
    if per_op:
        while time.time() < go:
            time.sleep(0.001)
        results: list[dict[str, object]] = []
        stderr = ""
        for args in commands:
            done = subprocess.run(
                [sys.executable, "-m", "voicefallback", *args],
                env=env,
                capture_output=True,
                text=True,
            )
            results.append({"args": args, "code": done.returncode, "out": done.stdout})
            stderr += done.stderr
        return results, stderr
    done = subprocess.run(
        [sys.executable, "-c", WORKER, str(go)],
        input="".join(json.dumps(c) + "\n" for c in commands),
        env=env,
        capture_output=True,
        text=True,
    )
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    if done.returncode != 0:
        lines.append({"args": ["<worker>"], "code": done.returncode, "out": ""})
    return lines, done.stderr


Query = Callable[..., list[tuple[Any, ...]]]


def querying(location: Path | str) -> tuple[Query, Callable[[], None]]:
    """Run SQL (`?` placeholders) on the state, SQLite file or PostgreSQL URL; and a closer."""
    if isinstance(location, str):
        import psycopg

        pg = psycopg.connect(location, autocommit=True)
        return (
            lambda sql, params=(): list(pg.execute(sql.replace("?", "%s"), params).fetchall()),
            pg.close,
        )
    conn = sqlite3.connect(location)
    return lambda sql, params=(): list(conn.execute(sql, params).fetchall()), conn.close


def replay(query: Query, model: str) -> tuple[int, int]:
    """The counters a model's history implies, replayed in commit order."""
    failures = successes = 0
    latest = ""
    for at, ok in query("SELECT at, ok FROM probes WHERE model = ? ORDER BY id", (model,)):
        if at < latest:
            continue
        latest = at
        failures, successes = (0, successes + 1) if ok else (failures + 1, 0)
    return failures, successes


def check(db: Path | str, args: argparse.Namespace) -> dict[str, object]:
    query, close = querying(db)
    try:
        events = Counter(sim for (sim,) in query("SELECT simulation_id FROM events"))
        expected = {
            f"w{w}-{n}" for w in range(args.starters) if w % 2 == 0 for n in range(args.ops)
        }
        calls = dict(query("SELECT model, count(*) FROM probes GROUP BY model"))
        kinds = dict(query("SELECT kind, count(*) FROM probes GROUP BY kind"))
        counters = {
            model: (failures, successes)
            for model, failures, successes in query(
                "SELECT model, consecutive_failures, consecutive_successes FROM snapshots"
            )
        }
        replayed = {model: replay(query, model) for model in counters}
        migrations = query(
            "SELECT number, count(*) FROM migrations GROUP BY number ORDER BY number"
        )
        return {
            "events": sum(events.values()),
            "events_expected": len(expected),
            "events_missing": len(expected - set(events)),
            "events_unexpected": len(set(events) - expected),
            "events_duplicated": sum(1 for count in events.values() if count > 1),
            "probe_rows": sum(calls.values()),
            "probe_rows_by_kind": kinds,
            "snapshot_counters_match_history": counters == replayed,
            "migrations_applied_once": all(count == 1 for _, count in migrations),
            "integrity": ("ok" if isinstance(db, str) else query("PRAGMA integrity_check")[0][0]),
        }
    finally:
        close()


def watch_connections(url: str, stop: threading.Event) -> dict[str, int]:
    """The most connections voicefallback held on the server at once, while the load ran."""
    import psycopg

    peak = {"connections": 0}
    with psycopg.connect(url, autocommit=True) as conn:
        while not stop.is_set():
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'voicefallback'"
            ).fetchone()
            peak["connections"] = max(peak["connections"], int(row[0]) if row else 0)
            stop.wait(0.02)
    return peak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starters", type=int, default=16, help="processes running start")
    parser.add_argument("--ops", type=int, default=150, help="commands per start/read worker")
    parser.add_argument("--probers", type=int, default=2)
    parser.add_argument("--readers", type=int, default=4)
    parser.add_argument("--process-per-op", action="store_true", help="a new process per command")
    parser.add_argument("--keep", action="store_true", help="keep the state file and print where")
    parser.add_argument("--postgres", action="store_true", help="on a throwaway PostgreSQL server")
    parser.add_argument("--db", help="on this (empty) postgresql:// database instead")
    args = parser.parse_args()

    server = None
    if args.postgres and args.db is None:
        from tests.pg_server import PostgresServer

        server = PostgresServer(fsync=True)
        args.db = server.new_database()
    try:
        return run(args)
    finally:
        if server is not None:
            server.close()


def run(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="voicefallback-stress-"))
    config = work / "models.toml"
    shutil.copy(SHIPPED_CONFIG, config)
    db: Path | str = args.db or work / "state" / "state.db"
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(work),
        "VOICEFALLBACK_CONFIG": str(config),
        "VOICEFALLBACK_DB": str(db),
    }
    workers = plan(args)
    go = time.time() + 2.0 + 0.05 * len(workers)  # every worker started and waiting by then
    stop = threading.Event()
    with ThreadPoolExecutor(max_workers=len(workers) + 1) as pool:
        watcher = pool.submit(watch_connections, db, stop) if isinstance(db, str) else None
        jobs = [pool.submit(run_worker, w, env, go, args.process_per_op) for w in workers]
        outcomes = [job.result() for job in jobs]
        stop.set()
        peak = watcher.result()["connections"] if watcher is not None else None
    elapsed = time.time() - go  # from the moment every worker was let go

    by_command: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    unordered = 0
    stderr = "".join(text for _, text in outcomes)
    for results, _ in outcomes:
        for result in results:
            command = str(result["args"][0])  # type: ignore[index]
            by_command[command] += 1
            if result["code"] != 0:
                failed[command] += 1
            elif command == "fallbacks":
                ids = [e["id"] for e in json.loads(str(result["out"]))["events"]]
                unordered += ids != sorted(set(ids), reverse=True)
    facts = check(db, args)
    report = {
        "processes": len(workers),
        "mode": "process per command" if args.process_per_op else "commands in-process",
        "operations": sum(by_command.values()),
        "by_command": dict(by_command),
        "seconds": round(elapsed, 1),
        "failed": dict(failed),
        "stderr_lines": len(stderr.splitlines()),
        "database_is_locked": stderr.lower().count("database is locked"),
        "fallbacks_listings_out_of_order": unordered,
        "state": "postgresql" if isinstance(db, str) else "sqlite",
        "peak_server_connections": peak,
        **facts,
    }
    print(json.dumps(report, indent=2))
    if stderr:
        print("stderr (first lines):\n" + "\n".join(stderr.splitlines()[:10]), file=sys.stderr)
    ok = (
        not failed
        and not stderr
        and not unordered
        and facts["events"] == facts["events_expected"]
        and not facts["events_missing"]
        and not facts["events_duplicated"]
        and not facts["events_unexpected"]
        and facts["snapshot_counters_match_history"]
        and facts["migrations_applied_once"]
        and facts["integrity"] == "ok"
        and (peak is None or peak <= len(workers))  # at most one per process
    )
    print("OK" if ok else "FAILED", file=sys.stderr)
    if args.keep:
        print(f"state file: {db}", file=sys.stderr)
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
