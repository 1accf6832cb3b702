"""Does probing many models at once distort what is measured?

Starts the fake provider (tests/fake_provider.py) in its own process, registers N
OpenAI-compatible models whose first token truly comes after --ttft-ms, probes them all
concurrently through Adapters("live") on one event loop (at most --workers calls at once),
and prints the recorded ttft_ms figures against the truth, and the wall time.

    python benchmarks/live_probe_ttft.py [--models 50] [--workers 16] [--ttft-ms 200] [--rounds 3]

Exit status 1 when the median ttft_ms is more than 25% away from --ttft-ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fake_provider import OPENAI_KEY  # noqa: E402  (the key the fake server accepts)
from voicefallback.config import Model, Provider, Thresholds  # noqa: E402
from voicefallback.providers import Adapters  # noqa: E402
from voicefallback.records import ProbeResult  # noqa: E402

KEY_ENV = "VOICEFALLBACK_BENCH_KEY"


def start_fake() -> tuple[subprocess.Popen[str], str]:
    """The fake server in another process, so its work does not share our GIL."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "fake_provider.py")],
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ | {"PYTHONPATH": path},
    )
    assert process.stdout is not None
    url = process.stdout.readline().strip()
    if not url.startswith("http://"):
        process.kill()
        raise SystemExit(f"fake provider did not start (said {url!r})")
    return process, url


def server_truth(url: str, count: int) -> list[float]:
    """How long after each request the fake really sent its first token (last `count`)."""
    with urllib.request.urlopen(f"{url}/_first_token_ms", timeout=5) as response:
        return sorted(json.load(response)[-count:])


def probe_all(models: list[Model], workers: int) -> tuple[list[ProbeResult], float]:
    async def at_once() -> tuple[list[ProbeResult], float]:
        async with Adapters("live", concurrency=workers) as adapters:
            await adapters.prepare(models)  # one-time costs (SDK import, client) untimed
            began = time.perf_counter()
            results = await asyncio.gather(*map(adapters.probe, models))
            return list(results), time.perf_counter() - began

    return asyncio.run(at_once())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=50)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--ttft-ms", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    os.environ[KEY_ENV] = OPENAI_KEY
    process, url = start_fake()
    try:
        provider = Provider(name="bench", type="openai", api_key_env=KEY_ENV, base_url=f"{url}/v1")
        models = [
            Model(
                id=f"bench:ttft-{args.ttft_ms}+m{index:02d}",
                provider=provider,
                name=f"ttft-{args.ttft_ms}+m{index:02d}",
                thresholds=Thresholds(timeout_s=10),
            )
            for index in range(args.models)
        ]
        medians = []
        for round_no in range(1, args.rounds + 1):
            results, wall = probe_all(models, args.workers)
            failed = [r for r in results if not r.ok]
            ttfts = sorted(r.ttft_ms for r in results if r.ttft_ms is not None)
            if failed or not ttfts:
                print(
                    f"round {round_no}: {len(failed)} failed, e.g. {failed[0].error}: "
                    f"{failed[0].message}"
                    if failed
                    else "no ttft recorded"
                )
                return 1
            median = statistics.median(ttfts)
            medians.append(median)
            p90 = ttfts[int(len(ttfts) * 0.9) - 1]
            truth = server_truth(url, len(models))
            print(
                f"round {round_no}: {len(results)} models, {args.workers} workers: "
                f"ttft_ms median {median:.0f} ({(median / args.ttft_ms - 1) * 100:+.1f}% "
                f"vs {args.ttft_ms}), min {ttfts[0]}, p90 {p90}, max {ttfts[-1]}; "
                f"server sent first tokens after median {statistics.median(truth):.0f}, "
                f"max {truth[-1]:.0f} ms; wall {wall:.2f} s"
            )
    finally:
        process.terminate()
        process.wait(5)
    worst = max(medians, key=lambda m: abs(m - args.ttft_ms))
    within = abs(worst - args.ttft_ms) <= 0.25 * args.ttft_ms
    print(
        f"worst median {worst:.0f} ms: {'within' if within else 'NOT within'} 25% of "
        f"{args.ttft_ms} ms"
    )
    return 0 if within else 1


if __name__ == "__main__":
    sys.exit(main())
