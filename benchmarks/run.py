"""voicefallback benchmarks: each figure beside a baseline measured in the same run.

    python benchmarks/run.py            # full run (builds a 1,000,000-row state file: ~1 min)
    python benchmarks/run.py --quick    # fewer repeats, 100,000 rows

Not part of the test suite: timings on a shared 2-core machine are noisy, so figures are
medians over repeated runs, baselines and measurements are interleaved, and what is judged
is the ratio, never an absolute time.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # for tests.fake_provider

from tests.fake_provider import OPENAI_KEY, FakeProvider  # noqa: E402

PY = sys.executable
BASE_IMPORTS = [PY, "-c", "import typer, rich, sqlite_utils"]


def registry_text(models: int, *, live_url: str | None = None, ttft_ms: int = 200) -> str:
    lines = [
        '[settings]\nmode = "stub"\n',
        '[providers.p]\ntype = "openai"\napi_key_env = "BENCH_KEY"',
    ]
    if live_url:
        lines.append(f'base_url = "{live_url}/v1"')
    lines.append("")
    for index in range(models):
        stub = 'stub = { error = "overloaded" }' if index == 0 else "stub = { latency_ms = 150 }"
        name = f"m{index:02d}+ttft-{ttft_ms}+tokens-3" if live_url else f"m{index:02d}"
        lines.append(f'[[models]]\nid = "p:{name}"\n{stub}\n')
    return "\n".join(lines)


def timed(cmd: list[str], env: dict[str, str]) -> float:
    began = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - began
    if done.returncode not in (0, 1):
        raise SystemExit(f"benchmark command failed: {' '.join(cmd)}\n{done.stderr}")
    return elapsed


def interleaved(
    runs: int, env: dict[str, str], *commands: list[str], prepare: Callable[[], None] | None = None
) -> list[float]:
    """Median wall time of each command, run in turns so drift hits them alike."""
    samples: list[list[float]] = [[] for _ in commands]
    for command in commands:
        timed(command, env)  # warm the page cache
    for _ in range(runs):
        for index, command in enumerate(commands):
            if prepare:
                prepare()
            samples[index].append(timed(command, env))
    return [statistics.median(s) for s in samples]


def vf(*args: str) -> list[str]:
    return [PY, "-m", "voicefallback", *args]


def fill_state(db: Path, models: list[str], probes: int, events: int) -> None:
    """Write history the fast way (plain SQL, one transaction) after the real migrations."""
    subprocess.run(
        vf("probe", "--json", "--db", str(db)),
        check=True,
        capture_output=True,
        env=os.environ | {"VOICEFALLBACK_DB": str(db)},
    )
    now = time.time()
    span = 30 * 86400
    conn = sqlite3.connect(db)
    rng = random.Random(7)
    with conn:
        conn.executemany(
            "INSERT INTO probes (model, at, kind, ok, latency_ms, ttft_ms, error, stub)"
            " VALUES (?, ?, 'probe', ?, ?, ?, ?, 1)",
            (
                (
                    models[i % len(models)],
                    _iso(now - span + span * i / probes),
                    int(rng.random() > 0.05),
                    rng.randint(100, 900),
                    rng.randint(80, 600),
                    None,
                )
                for i in range(probes)
            ),
        )
        conn.executemany(
            "INSERT INTO events (uid, at, simulation_id, primary_model, chosen, reason,"
            " fallback_source, candidates) VALUES (?, ?, ?, ?, ?, 'primary_unhealthy', 'auto',"
            " '[]')",
            (
                (
                    uuid.uuid4().hex,
                    _iso(now - span + span * i / events),
                    f"sim-{i % 5000}",
                    models[0],
                    models[1],
                )
                for i in range(events)
            ),
        )
    conn.close()


def _iso(epoch: float) -> str:
    moment = time.gmtime(epoch)
    return time.strftime("%Y-%m-%dT%H:%M:%S", moment) + f".{int(epoch * 1000) % 1000:03d}Z"


def bench_processes(work: Path, runs: int) -> list[tuple[str, str, float, str]]:
    config = work / "models.toml"
    config.write_text(registry_text(20))
    db = work / "fresh.db"
    env = os.environ | {"VOICEFALLBACK_CONFIG": str(config), "VOICEFALLBACK_DB": str(db)}
    subprocess.run(vf("probe", "--json"), env=env, check=True, capture_output=True)
    start = vf("start", "--json", "--simulation-id", "bench", "--primary", "p:m01")
    base, start_s, health_s = interleaved(runs, env, BASE_IMPORTS, start, vf("health", "--json"))
    return [
        (
            "start --json, stub, 20 models",
            f"{start_s * 1000:.0f} ms",
            start_s / base,
            f"baseline import typer+rich+sqlite_utils {base * 1000:.0f} ms; target <= 1.0",
        ),
        (
            "health --json, 20 models",
            f"{health_s * 1000:.0f} ms",
            health_s / base,
            "same baseline; target <= 1.0",
        ),
    ]


def bench_history(
    work: Path, runs: int, probes: int, events: int
) -> list[tuple[str, str, float, str]]:
    config = work / "models.toml"
    config.write_text(registry_text(20))
    models = [f"p:m{i:02d}" for i in range(20)]
    empty, full = work / "empty.db", work / "full.db"
    began = time.perf_counter()
    fill_state(full, models, probes, events)
    filled = time.perf_counter() - began
    env = os.environ | {"VOICEFALLBACK_CONFIG": str(config)}
    subprocess.run(
        vf("probe", "--json", "--db", str(empty)), env=env, check=True, capture_output=True
    )

    rows = []
    for label, args in (
        ("health", ["health", "--json"]),
        ("fallbacks --limit 50", ["fallbacks", "--json", "--limit", "50"]),
        ("start", ["start", "--json", "--simulation-id", "bench", "--primary", "p:m01"]),
    ):
        small, big = interleaved(
            runs, env, vf(*args, "--db", str(empty)), vf(*args, "--db", str(full))
        )
        rows.append(
            (
                f"{label} on {probes:,} probes / {events:,} events",
                f"{big * 1000:.0f} ms",
                big / small,
                f"same command on an empty state file {small * 1000:.0f} ms; target <= 1.2",
            )
        )
    size = full.stat().st_size / 1e6
    rows.append(
        (
            f"state file with {probes:,} probes",
            f"{size:.0f} MB",
            float("nan"),
            f"filled in {filled:.0f} s",
        )
    )
    return rows


def bench_choose(work: Path) -> list[tuple[str, str, float, str]]:
    from voicefallback import SessionRouter

    config = work / "models.toml"
    config.write_text(registry_text(20))
    with SessionRouter(config=config, db=work / "router.db") as router:
        router.choose("warm", "p:m01")
        samples = []
        for _ in range(2000):
            began = time.perf_counter()
            router.choose("bench", "p:m01", record_event=False)
            samples.append(time.perf_counter() - began)
        fallback = []
        for _ in range(500):
            began = time.perf_counter()
            router.choose("bench", "p:m00")  # unhealthy primary: records an event
            fallback.append(time.perf_counter() - began)
    p50 = statistics.median(samples) * 1000
    return [
        (
            "choose in-process, healthy primary",
            f"{p50:.3f} ms",
            float("nan"),
            "p50; target <= 1 ms",
        ),
        (
            "choose in-process, fallback + event write",
            f"{statistics.median(fallback) * 1000:.3f} ms",
            float("nan"),
            "p50",
        ),
    ]


_RUN_AND_REPORT = """
import resource, runpy, sys
sys.argv = ["voicefallback", *sys.argv[1:]]
try:
    runpy.run_module("voicefallback", run_name="__main__")
except SystemExit:
    pass
sys.stderr.write("MODULES=" + ",".join(m for m in sys.modules if not m.startswith("__")) + "\\n")
sys.stderr.write(f"PEAK_MB={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f}\\n")
"""


def run_and_report(command: list[str], env: dict[str, str]) -> tuple[str, dict[str, str]]:
    """Run a voicefallback command line in-process; its stdout, and what it reported: every
    module it ended up importing, in order (the SDK and what its client loads lazily on first
    use included), and its peak memory."""
    done = subprocess.run(
        [PY, "-c", _RUN_AND_REPORT, *command[3:]], env=env, capture_output=True, text=True
    )
    facts = dict(x.split("=", 1) for x in done.stderr.splitlines() if x[:1].isupper() and "=" in x)
    return done.stdout, facts


_IMPORT_ONLY = """
import importlib, sys
for name in sys.argv[1].split(","):
    try:
        importlib.import_module(name)
    except Exception:
        pass
"""


def bench_live_probe(work: Path, runs: int) -> list[tuple[str, str, float, str]]:
    with FakeProvider() as fake:
        config = work / "live.toml"
        config.write_text(registry_text(50, live_url=fake.url, ttft_ms=200))
        db = work / "live.db"
        env = os.environ | {
            "VOICEFALLBACK_CONFIG": str(config),
            "VOICEFALLBACK_DB": str(db),
            "BENCH_KEY": OPENAI_KEY,
        }
        probe = vf("probe", "--json", "--mode", "live")
        baseline = [PY, "-c", _IMPORT_ONLY, run_and_report(probe, env)[1]["MODULES"]]
        base, wall = interleaved(runs, env, baseline, probe)
        ttfts: list[float] = []
        peaks: list[float] = []
        for _ in range(runs):
            stdout, facts = run_and_report(probe, env)
            document = json.loads(stdout.splitlines()[0])
            ttfts += [r["ttftMs"] for r in document["results"] if r["ttftMs"] is not None]
            peaks.append(float(facts["PEAK_MB"]))
    median_ttft = statistics.median(ttfts)
    return [
        (
            "probe, live, 50 models at 200 ms (extra wall)",
            f"{(wall - base) * 1000:.0f} ms",
            (wall - base) / 0.2,
            f"wall {wall * 1000:.0f} ms - importing what it imports {base * 1000:.0f} ms;"
            " target <= 2.0 x 200 ms",
        ),
        (
            "median ttftMs recorded by that probe",
            f"{median_ttft:.0f} ms",
            median_ttft / 200,
            "true TTFT 200 ms; target <= 1.25",
        ),
        (
            "peak memory of that probe",
            f"{statistics.median(peaks):.0f} MB",
            float("nan"),
            "max RSS of the process",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, smaller state file")
    args = parser.parse_args()
    runs = 5 if args.quick else 15
    probes, events = (100_000, 10_000) if args.quick else (1_000_000, 100_000)
    rows: list[tuple[str, str, float, str]] = []
    with tempfile.TemporaryDirectory(prefix="vf-bench-") as tmp:
        work = Path(tmp)
        os.environ.pop("VOICEFALLBACK_MODE", None)
        for name, bench in (
            ("processes", lambda: bench_processes(work, runs)),
            ("choose", lambda: bench_choose(work)),
            ("live probe", lambda: bench_live_probe(work, max(3, runs // 3))),
            ("history", lambda: bench_history(work, runs, probes, events)),
        ):
            print(f"... {name}", file=sys.stderr, flush=True)
            rows += bench()
    print(
        f"\nvoicefallback benchmarks, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores,"
        f" Python {sys.version.split()[0]}\n"
    )
    width = max(len(r[0]) for r in rows)
    print(f"{'figure':<{width}}  {'value':>10}  {'ratio':>6}  baseline / target")
    for label, value, ratio, note in rows:
        shown = "" if ratio != ratio else f"{ratio:.2f}"
        print(f"{label:<{width}}  {value:>10}  {shown:>6}  {note}")


if __name__ == "__main__":
    main()
