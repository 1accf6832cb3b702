"""The state on PostgreSQL against SQLite, and a large PostgreSQL state against an empty one.

    python benchmarks/postgres.py           # 1,000,000 probes / 100,000 events (~2 min)
    python benchmarks/postgres.py --quick   # fewer repeats, 100,000 probes

It starts a throwaway server (tests/pg_server.py, fsync on, as a real one would run) and
reaches it over its local unix socket. Every figure is a median of whole `voicefallback`
processes, interleaved with its baseline in the same run; what is judged is the ratio:

- `start --json` and `health --json` on PostgreSQL against the same on a SQLite file
  (target <= 1.3);
- `health`, `fallbacks --limit 50` and `start` on a database holding 1,000,000 probes and
  100,000 events against an empty one (target <= 1.2).
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.run import _iso, interleaved, registry_text, vf  # noqa: E402
from tests.pg_server import PostgresServer  # noqa: E402

MODELS = [f"p:m{i:02d}" for i in range(20)]
START = ["start", "--json", "--simulation-id", "bench", "--primary", "p:m01"]


def fill(url: str, probes: int, events: int) -> None:
    """History the fast way (COPY, after the real migrations), then VACUUM ANALYZE, as
    autovacuum would have left a database that grew this large."""
    import psycopg

    now = time.time()
    span = 30 * 86400
    rng = random.Random(7)
    with psycopg.connect(url, autocommit=True) as conn:
        with conn.cursor().copy(
            "COPY probes (model, at, kind, ok, latency_ms, ttft_ms, stub) FROM STDIN"
        ) as copy:
            for i in range(probes):
                copy.write_row(
                    (
                        MODELS[i % len(MODELS)],
                        _iso(now - span + span * i / probes),
                        "probe",
                        int(rng.random() > 0.05),
                        rng.randint(100, 900),
                        rng.randint(80, 600),
                        1,
                    )
                )
        with conn.cursor().copy(
            "COPY events (uid, at, simulation_id, primary_model, chosen, reason,"
            " fallback_source, candidates) FROM STDIN"
        ) as copy:
            for i in range(events):
                copy.write_row(
                    (
                        uuid.uuid4().hex,
                        _iso(now - span + span * i / events),
                        f"sim-{i % 5000}",
                        MODELS[0],
                        MODELS[1],
                        "primary_unhealthy",
                        "auto",
                        "[]",
                    )
                )
        conn.execute("VACUUM ANALYZE")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, smaller history")
    args = parser.parse_args()
    runs = 5 if args.quick else 15
    probes, events = (100_000, 10_000) if args.quick else (1_000_000, 100_000)
    rows: list[tuple[str, str, float, str]] = []
    server = PostgresServer(fsync=True)
    try:
        with tempfile.TemporaryDirectory(prefix="vf-bench-pg-") as tmp:
            work = Path(tmp)
            config = work / "models.toml"
            config.write_text(registry_text(20))
            env = os.environ | {"VOICEFALLBACK_CONFIG": str(config), "HOME": str(work)}
            env.pop("VOICEFALLBACK_DB", None)
            sqlite = str(work / "state.db")
            empty, full = (server.socket_url(server.new_database().rsplit("/", 1)[1]) for _ in "ab")
            for location in (sqlite, empty, full):
                subprocess.run(vf("probe", "--json", "--db", location), env=env, check=True)

            print("... PostgreSQL against SQLite", file=sys.stderr, flush=True)
            for label, command in (
                ("start --json", START),
                ("health --json", ["health", "--json"]),
            ):
                lite, pg = interleaved(
                    runs, env, vf(*command, "--db", sqlite), vf(*command, "--db", empty)
                )
                rows.append(
                    (
                        f"{label}, 20 models, PostgreSQL (local socket)",
                        f"{pg * 1000:.0f} ms",
                        pg / lite,
                        f"same on a SQLite file {lite * 1000:.0f} ms; target <= 1.3",
                    )
                )

            print(f"... filling {probes:,} probes / {events:,} events", file=sys.stderr, flush=True)
            began = time.perf_counter()
            fill(full, probes, events)
            filled = time.perf_counter() - began
            print("... large against empty", file=sys.stderr, flush=True)
            for label, command in (
                ("health", ["health", "--json"]),
                ("fallbacks --limit 50", ["fallbacks", "--json", "--limit", "50"]),
                ("start", START),
            ):
                small, big = interleaved(
                    runs, env, vf(*command, "--db", empty), vf(*command, "--db", full)
                )
                rows.append(
                    (
                        f"{label} on {probes:,} probes / {events:,} events, PostgreSQL",
                        f"{big * 1000:.0f} ms",
                        big / small,
                        f"same on an empty database {small * 1000:.0f} ms; target <= 1.2;"
                        f" filled in {filled:.0f} s",
                    )
                )
    finally:
        server.close()
    print(
        f"\nvoicefallback PostgreSQL benchmarks, {time.strftime('%Y-%m-%d')},"
        f" {os.cpu_count()} cores, Python {sys.version.split()[0]}\n"
    )
    width = max(len(r[0]) for r in rows)
    print(f"{'figure':<{width}}  {'value':>8}  {'ratio':>6}  baseline / target")
    for label, value, ratio, note in rows:
        print(f"{label:<{width}}  {value:>8}  {ratio:>6.2f}  {note}")


if __name__ == "__main__":
    main()
