"""Is `start` bounded by first-token budgets, however many stale candidates hang?

For K = 1, 2, 4, 8 hanging candidates ahead of a healthy one (all OpenAI-compatible models
served by tests/fake_provider.py in its own process), times the whole process
`voicefallback start --mode live --json` twice, in turns:

- stale: every snapshot an hour old (stale_after_s = 300), so `start` must probe them all
  just in time; the hanging ones never send a byte;
- fresh: the same registry and command with every snapshot fresh and true (the hanging
  models known unhealthy, the healthy one healthy), so `start` goes straight to the
  healthy model's opening call.

The difference is what deciding costs a session. Both runs import the same SDK and make the
same opening call, so those cancel out. Target (issue 10): difference <= the largest
ttft_budget_ms among the K + 300 ms. The old sequential behaviour would cost K x timeout_s.

Then the decisions of issue 16, in process, each against a baseline from the same run:

- slow primary (first token at 3 x budget) + dead fallback (503), both never probed: the
  session starts, in about the slow model's own opening call (baseline: the same start with
  the slow model known healthy);
- dead primary (401) + slow never-probed fallback: one call, about the fallback's own opening
  call (baseline: the same), not two;
- cold dead primary (503) + healthy fallback whose answer streams for a second:
  `AsyncSessionRouter.choose` decides at the fallback's first token (baseline: the same choice
  with fresh evidence, which makes no call), not at the end of its answer.

    python benchmarks/start_budget.py [--runs 3] [--budget-ms 500] [--timeout-s 10]

Evidence is seeded through voicefallback's own store API before each run (untimed), in a new
state file per run. Exit status 1 when any K misses the target.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.live_probe_ttft import start_fake  # noqa: E402
from tests.fake_provider import OPENAI_KEY  # noqa: E402
from voicefallback.config import load_registry  # noqa: E402
from voicefallback.health import apply_probe  # noqa: E402
from voicefallback.records import ProbeResult, utcnow  # noqa: E402
from voicefallback.routing import start_session  # noqa: E402
from voicefallback.sessions import CLI_NAMES, build_request  # noqa: E402
from voicefallback.store import open_store  # noqa: E402

KEY_ENV = "VOICEFALLBACK_BENCH_KEY"
HEALTHY = "p:ttft-200+healthy"
MARGIN_MS = 300


def hanging(k: int) -> list[str]:
    return [f"p:hang+n{i}" for i in range(k)]


def write_registry(path: Path, url: str, k: int, budget_ms: int, timeout_s: float) -> None:
    lines = [
        "[settings]",
        'mode = "live"',
        f"timeout_s = {timeout_s}",
        f"ttft_budget_ms = {budget_ms}",
        "stale_after_s = 300",
        "",
        "[providers.p]",
        'type = "openai"',
        f'api_key_env = "{KEY_ENV}"',
        f'base_url = "{url}/v1"',
        "",
    ]
    for model in [*hanging(k), HEALTHY]:
        lines += ["[[models]]", f'id = "{model}"', ""]
    path.write_text("\n".join(lines))


def seed(config: Path, db: Path, k: int, *, stale: bool) -> None:
    """Evidence for every model, written through the store as a probe would write it."""
    registry = load_registry(config)
    now = utcnow()
    results = []
    for model in hanging(k):
        if stale:  # they answered an hour ago, when cron last ran; they hang now
            results.append(ProbeResult(model, True, now - timedelta(hours=1), 300, 200))
        else:  # a probe a moment ago found them hanging
            results.append(ProbeResult(model, False, now, 10_000, None, error="timeout"))
    at = now - timedelta(hours=1) if stale else now
    results.append(ProbeResult(HEALTHY, True, at, 300, 200))
    limits = {m.id: m.thresholds for m in registry.models}
    with open_store(db, write=True) as store:
        store.record(results, limits, update=apply_probe)


def timed_start(
    config: Path, db: Path, k: int, env: dict[str, str]
) -> tuple[float, dict[str, object]]:
    models = [*hanging(k), HEALTHY]
    command = [sys.executable, "-m", "voicefallback", "start", "--mode", "live", "--json"]
    command += ["--config", str(config), "--db", str(db), "--simulation-id", "bench"]
    command += ["--primary", models[0]]
    for model in models[1:]:
        command += ["--fallback", model]
    began = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - began
    try:
        document = json.loads(done.stdout)
    except ValueError:
        raise SystemExit(
            f"start printed no JSON (exit {done.returncode}):\n{done.stderr}"
        ) from None
    if done.returncode != 0 or document.get("chosen") != HEALTHY:
        raise SystemExit(f"start did not choose {HEALTHY}: exit {done.returncode}\n{done.stdout}")
    return elapsed, document


def in_process(config: Path, db: Path, k: int) -> float:
    """The same start through the same core (`start_session`), SDK already imported: only
    what deciding and the opening call cost, without the process around them."""
    models = [*hanging(k), HEALTHY]
    registry = load_registry(config)
    request = build_request({}, "bench", models[0], models[1:], CLI_NAMES)
    began = time.perf_counter()
    outcome = asyncio.run(start_session(registry, db, "live", request))
    elapsed = time.perf_counter() - began
    if outcome.chosen != HEALTHY:
        raise SystemExit(f"start_session chose {outcome.chosen}, not {HEALTHY}")
    return elapsed


@dataclass
class Row:
    k: int
    fresh: list[float] = field(default_factory=list)  # whole process, s
    stale: list[float] = field(default_factory=list)
    fresh_in: list[float] = field(default_factory=list)  # in-process, s
    stale_in: list[float] = field(default_factory=list)
    over_budget: int = 0

    @staticmethod
    def diff_ms(fresh: list[float], stale: list[float]) -> float:
        """Median of the differences of runs made back to back (drift hits both alike)."""
        return statistics.median(b - a for a, b in zip(fresh, stale, strict=True)) * 1000


def measure(work: Path, url: str, k: int, args: argparse.Namespace, env: dict[str, str]) -> Row:
    config = work / f"k{k}.toml"
    write_registry(config, url, k, args.budget_ms, args.timeout_s)
    row = Row(k)
    for run in range(args.runs):
        for stale in (False, True):
            db = work / f"k{k}-{run}-{'stale' if stale else 'fresh'}.db"
            seed(config, db, k, stale=stale)
            elapsed, _ = timed_start(config, db, k, env)
            (row.stale if stale else row.fresh).append(elapsed)
            if stale:
                row.over_budget += over_budget_rows(db, k)
    for run in range(args.runs_in_process):
        for stale in (False, True):
            db = work / f"k{k}-{run}-{'stale' if stale else 'fresh'}-in.db"
            seed(config, db, k, stale=stale)
            (row.stale_in if stale else row.fresh_in).append(in_process(config, db, k))
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="whole-process runs per K")
    parser.add_argument("--runs-in-process", type=int, default=3, help="in-process runs per K")
    parser.add_argument("--budget-ms", type=int, default=500, help="ttft_budget_ms of every model")
    parser.add_argument("--timeout-s", type=float, default=10, help="timeout_s of every model")
    parser.add_argument("--k", type=int, nargs="+", default=[1, 2, 4, 8])
    args = parser.parse_args()

    process, url = start_fake()
    os.environ[KEY_ENV] = OPENAI_KEY
    os.environ.pop("VOICEFALLBACK_MODE", None)
    env = dict(os.environ)
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="vf-bench-start-") as tmp:
            work = Path(tmp)
            write_registry(work / "warm.toml", url, 1, args.budget_ms, args.timeout_s)
            seed(work / "warm.toml", work / "warm.db", 1, stale=False)
            timed_start(work / "warm.toml", work / "warm.db", 1, env)  # page cache, SDK import
            in_process(work / "warm.toml", work / "warm.db", 1)
            for k in args.k:
                rows.append(measure(work, url, k, args, env))
                print(f"... K={k}", file=sys.stderr, flush=True)
        decisions = decision_rows(url, args)
    finally:
        process.terminate()
        process.wait(5)

    limit = args.budget_ms + MARGIN_MS
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"\nstart --mode live --json: K hanging stale candidates, then {HEALTHY};"
        f" ttft_budget_ms = {args.budget_ms}, timeout_s = {args.timeout_s:g};"
        f" {os.cpu_count()} cores, load average {load}\n"
        f"whole process: median of {args.runs} runs; diff: median of back-to-back differences;"
        f" in-process: the same core, {args.runs_in_process} runs\n"
    )
    print(
        f"{'K':>2}  {'budget':>7}  {'fresh':>8}  {'stale':>8}  {'diff':>7}  {'limit':>7}  result"
        f"  {'in-process fresh':>16}  {'stale':>7}  {'diff':>7}  result  over_budget"
    )
    failed = False
    for row in rows:
        diff = Row.diff_ms(row.fresh, row.stale)
        diff_in = Row.diff_ms(row.fresh_in, row.stale_in)
        ok, ok_in = diff <= limit, diff_in <= limit
        failed = failed or not ok or not ok_in
        print(
            f"{row.k:>2}  {args.budget_ms:>4} ms  {statistics.median(row.fresh) * 1000:>5.0f} ms"
            f"  {statistics.median(row.stale) * 1000:>5.0f} ms  {diff:>4.0f} ms  {limit:>4} ms"
            f"  {'pass' if ok else 'FAIL':<6}  {statistics.median(row.fresh_in) * 1000:>13.0f} ms"
            f"  {statistics.median(row.stale_in) * 1000:>4.0f} ms  {diff_in:>4.0f} ms"
            f"  {'pass' if ok_in else 'FAIL':<6}  {row.over_budget}/{row.k * args.runs}"
        )
    print(
        f"\nlimit: the largest ttft_budget_ms among the K + {MARGIN_MS} ms (issue 10);"
        f" sequential probing would add about K x {args.timeout_s:g} s\n"
        "over_budget: hanging models whose just-in-time probe was recorded as over_budget"
    )
    print(f"\ndecisions (in process, median of {args.runs} runs; B = {args.budget_ms} ms):")
    print(f"{'case':<58} {'time':>8} {'baseline':>9} {'ratio':>6}  calls  target")
    for case, took, base, calls, target, ok in decisions:
        failed = failed or not ok
        print(
            f"{case:<58} {took:>5.0f} ms {base:>6.0f} ms {took / base:>6.2f}  {calls:>5}"
            f"  {target} {'pass' if ok else 'FAIL'}"
        )
    return 1 if failed else 0


def decision_rows(
    url: str, args: argparse.Namespace
) -> list[tuple[str, float, float, int, str, bool]]:
    """The three decisions of issue 16, each timed against its baseline in the same run."""
    from voicefallback import AsyncSessionRouter

    budget = args.budget_ms
    slow = f"p:ttft-{3 * budget}"
    long_answer = "p:ttft-100+tokens-20+gap-50"
    rows = []
    with tempfile.TemporaryDirectory(prefix="vf-bench-decide-") as tmp:
        work = Path(tmp)
        config = work / "d.toml"
        lines = [
            "[settings]", 'mode = "live"', f"timeout_s = {args.timeout_s}",
            f"ttft_budget_ms = {budget}", "", "[providers.p]", 'type = "openai"',
            f'api_key_env = "{KEY_ENV}"', f'base_url = "{url}/v1"', "",
        ]  # fmt: skip
        for model in (slow, "p:status-503", "p:status-401", long_answer):
            lines += ["[[models]]", f'id = "{model}"', ""]
        config.write_text("\n".join(lines))
        registry = load_registry(config)

        def start(db: Path, primary: str, fallbacks: list[str]) -> tuple[float, int]:
            request = build_request({}, "bench", primary, fallbacks, CLI_NAMES)
            began = time.perf_counter()
            outcome = asyncio.run(start_session(registry, db, "live", request))
            elapsed = (time.perf_counter() - began) * 1000
            if outcome.chosen is None:
                raise SystemExit(f"nothing started: {outcome.error}")
            with open_store(db, write=False) as store:
                calls = store.counts()["probes"]
            return elapsed, calls

        def known(db: Path, *models: str) -> None:
            """Fresh evidence, true to each model: a 503 failed, the others answered."""
            with open_store(db, write=True) as store:
                for model in models:
                    if "status-" in model:
                        result = ProbeResult(model, False, utcnow(), 5, error="overloaded")
                    else:
                        result = ProbeResult(model, True, utcnow(), 100, 100, kind="session")
                    store.record([result], {model: registry.require(model, "m").thresholds},
                                 update=apply_probe)  # fmt: skip

        def choose(db: Path) -> float:
            async def once() -> float:
                async with AsyncSessionRouter(config=config, db=db) as router:
                    began = time.perf_counter()
                    outcome = await router.choose("bench", "p:status-503", [long_answer])
                    elapsed = (time.perf_counter() - began) * 1000
                    assert outcome.chosen == long_answer, outcome
                    return elapsed

            return asyncio.run(once())

        samples: dict[str, list[tuple[float, float, int]]] = {"1": [], "2": [], "3": []}
        for run in range(args.runs):
            known(known_slow := work / f"b1-{run}.db", slow)
            base, _ = start(known_slow, slow, [])
            took, calls = start(work / f"c1-{run}.db", slow, ["p:status-503"])
            samples["1"].append((took, base, calls))
            took, calls = start(work / f"c2-{run}.db", "p:status-401", [slow])
            samples["2"].append((took, base, calls - 1))  # the 401 is the other call
            known(fresh := work / f"b3-{run}.db", "p:status-503", long_answer)
            base3 = choose(fresh) + 100  # a choice on fresh evidence, then the first token
            samples["3"].append((choose(work / f"c3-{run}.db"), base3, 1))
        for key, case, target, limit in (
            ("1", f"{slow} + dead fallback, never probed: starts", "~1x", 1.25),
            ("2", f"401 + {slow} never probed: one call", "~1x, not 2x", 1.25),
            ("3", "cold 503 + fallback streaming 1 s: choose at first token", "~1x", 3.0),
        ):
            took = statistics.median(t for t, _, _ in samples[key])
            base = statistics.median(b for _, b, _ in samples[key])
            calls = max(c for _, _, c in samples[key])
            rows.append((case, took, base, calls, target, took / base <= limit))
    return rows


def over_budget_rows(db: Path, k: int) -> int:
    """How many of the hanging models' just-in-time probes were recorded as over_budget."""
    with open_store(db, write=False) as store:
        snapshots = store.snapshots(hanging(k))
    return sum(1 for s in snapshots.values() if s.last_error == "over_budget")


if __name__ == "__main__":
    sys.exit(main())
