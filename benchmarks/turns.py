"""How long a caller waits for a turn's first word when the primary misbehaves, side by side.

Each row is one fault of the primary (served by tests/fake_provider.py in its own process);
each column one way a worker runs its turns, all on the same real LiveKit plugin LLMs
(livekit-plugins-openai against the fake):

- `FallbackAdapter`: LiveKit's own `llm.FallbackAdapter` as shipped (attempt_timeout 5 s);
- `FallbackAdapter(B)`: the same with `attempt_timeout` = the budget B;
- `HealthAwareLLM`: voicefallback.livekit, budget B for every model.

Each cell is the median, over several turns, of the time from `chat()` to the first content
token the framework receives. Every turn starts with nothing learned (a new adapter, a new
state file): the turn measured is the first one after the fault begins, the one a caller
hears. With `--pipecat`, the same rows for Pipecat: its `LLMSwitcher` with
`ServiceSwitcherStrategyFailover` against voicefallback.pipecat's `HealthAwareLLMService`.

Targets (issue 18) for budget B: every fault row <= B + the fallback's own first-token time
+ 50 ms; never slower than FallbackAdapter on any row; healthy-row overhead <= 2 ms at p50
(against the plain plugin LLM, `bare`).

    python benchmarks/turns.py [--turns 3] [--budget-ms 500]

Exit status 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.live_probe_ttft import start_fake  # noqa: E402
from tests.fake_provider import KEY_ENV, KEYS, KINDS  # noqa: E402
from tests.frameworks import registry_text  # noqa: E402

FALLBACK_TTFT_MS = 100
MARGIN_MS = 50
HEALTHY_OVERHEAD_MS = 2.0


@dataclass(frozen=True)
class Row:
    name: str
    primary: str  # fake provider directives
    fallback: str
    fallback_ttft_ms: int


def rows(budget_ms: int) -> list[Row]:
    fallback = f"ttft-{FALLBACK_TTFT_MS}+fb"
    slow_fallback_ms = 2 * budget_ms
    return [
        Row("primary hangs", "hang", fallback, FALLBACK_TTFT_MS),
        Row("first token at 3 s", "ttft-3000", fallback, FALLBACK_TTFT_MS),
        Row("keep-alive only until 4 s", "keepalive-4000", fallback, FALLBACK_TTFT_MS),
        Row(
            f"first token at B+100 ms, fallback at 2B ({slow_fallback_ms} ms)",
            f"ttft-{budget_ms + 100}",
            f"ttft-{slow_fallback_ms}+fb",
            slow_fallback_ms,
        ),
        Row("503", "status-503", fallback, FALLBACK_TTFT_MS),
        Row("healthy", f"ttft-{FALLBACK_TTFT_MS}", fallback, FALLBACK_TTFT_MS),
    ]


async def first_token(stream: Any) -> float:
    """Seconds from `chat()` (already called) to the first content chunk, draining the rest;
    infinite when the turn got no answer at all (the framework saw an error)."""
    from livekit.agents import APIError

    began = time.perf_counter()
    first = float("inf")
    try:
        async with stream:
            async for chunk in stream:
                if first == float("inf") and chunk.delta is not None and chunk.delta.content:
                    first = time.perf_counter() - began
    except APIError:
        pass
    return first


class LiveKitColumns:
    """The LiveKit columns, on one pair of plugin LLMs shared by every column (same pools)."""

    def __init__(self, url: str, budget_ms: int, directory: Path) -> None:
        from livekit.plugins import openai as lk_openai

        self.url = url
        self.budget_ms = budget_ms
        self.directory = directory
        self._plugin: dict[str, Any] = {}
        self._lk_openai = lk_openai

    def plugin(self, name: str) -> Any:
        if name not in self._plugin:
            self._plugin[name] = self._lk_openai.LLM(
                model=name, api_key=KEYS["openai"], base_url=f"{self.url}/v1"
            )
        return self._plugin[name]

    def columns(self) -> dict[str, Callable[[Row], Awaitable[float]]]:
        return {
            "bare": self.bare,
            "FallbackAdapter": lambda row: self.fallback_adapter(row, 5.0),
            "FallbackAdapter(B)": lambda row: self.fallback_adapter(row, self.budget_ms / 1000),
            "HealthAwareLLM": self.health_aware,
        }

    async def bare(self, row: Row) -> float:
        if row.name != "healthy":
            return float("nan")
        return await first_token(self.plugin(row.primary).chat(chat_ctx=_context()))

    async def fallback_adapter(self, row: Row, attempt_timeout: float) -> float:
        from livekit.agents import llm

        adapter = llm.FallbackAdapter(
            [self.plugin(row.primary), self.plugin(row.fallback)], attempt_timeout=attempt_timeout
        )
        try:
            return await first_token(adapter.chat(chat_ctx=_context()))
        finally:
            await adapter.aclose()

    async def health_aware(self, row: Row) -> float:
        from voicefallback.livekit import HealthAwareLLM
        from voicefallback.router import AsyncSessionRouter

        primary, fallback = f"fake-openai:{row.primary}", f"fake-openai:{row.fallback}"
        config, db = _fresh_state(self.directory, self.url, [primary, fallback], self.budget_ms)
        async with AsyncSessionRouter(config=config, db=db) as router:
            members = {primary: self.plugin(row.primary), fallback: self.plugin(row.fallback)}
            model = HealthAwareLLM(router, members)
            try:
                return await first_token(model.chat(chat_ctx=_context()))
            finally:
                await model.aclose()


def _context() -> Any:
    from livekit.agents import llm

    ctx = llm.ChatContext.empty()
    ctx.add_message(role="user", content="Hello?")
    return ctx


def _fresh_state(
    directory: Path, url: str, model_ids: list[str], budget_ms: int
) -> tuple[Path, Path]:
    """A registry and a state file of their own: the turn starts knowing nothing."""
    fresh = tempfile.mkdtemp(dir=directory)
    config = Path(fresh) / "models.toml"
    config.write_text(registry_text(url, model_ids, budget_ms=budget_ms, timeout_s=10))
    return config, Path(fresh) / "state.db"


async def measure(
    columns: dict[str, Callable[[Row], Awaitable[float]]], row: Row, turns: int
) -> dict[str, list[float]]:
    """Turns taken in turns: column by column within each round, so drift hits all alike."""
    got: dict[str, list[float]] = {name: [] for name in columns}
    for _ in range(turns):
        for name, column in columns.items():
            got[name].append(await column(row) * 1000)
    return got


def report(budget_ms: int, table: list[tuple[Row, dict[str, list[float]]]]) -> bool:
    names = list(table[0][1])
    print(f"\nbudget B = {budget_ms} ms; median ms from chat() to the first content token")
    header = "| row | " + " | ".join(names) + " | target | vs FallbackAdapter |"
    print(header)
    print("|" + "---|" * (len(names) + 3))
    ok = True
    for row, got in table:
        med = {name: statistics.median(values) for name, values in got.items()}
        ours = med["HealthAwareLLM"]
        baseline = min(med["FallbackAdapter"], med["FallbackAdapter(B)"])
        if row.name == "healthy":
            overhead = ours - med["bare"]
            target = f"overhead {overhead:+.1f} ms (<= {HEALTHY_OVERHEAD_MS:g})"
            ok = ok and overhead <= HEALTHY_OVERHEAD_MS
        else:
            limit = budget_ms + row.fallback_ttft_ms + MARGIN_MS
            target = f"<= {limit} ms {'ok' if ours <= limit else 'MISSED'}"
            ok = ok and ours <= limit
        ok = ok and ours <= baseline + MARGIN_MS
        cells = " | ".join(_cell(v) for v in med.values())
        print(f"| {row.name} | {cells} | {target} | {ours / baseline:.2f}x |")
    return ok


def _cell(ms: float) -> str:
    if ms != ms:  # not measured
        return ""
    return "no answer" if ms == float("inf") else f"{ms:.0f}"


async def main_async(args: argparse.Namespace) -> bool:
    process, url = start_fake()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            bench = LiveKitColumns(url, args.budget_ms, Path(tmp))
            table = []
            for row in rows(args.budget_ms):
                turns = args.healthy_turns if row.name == "healthy" else args.turns
                table.append((row, await measure(bench.columns(), row, turns)))
            return report(args.budget_ms, table)
    finally:
        process.terminate()
        process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=3, help="turns per fault row")
    parser.add_argument("--healthy-turns", type=int, default=40, help="turns in the healthy row")
    parser.add_argument("--budget-ms", type=int, default=500)
    args = parser.parse_args()
    for kind in KINDS:
        os.environ[KEY_ENV[kind]] = KEYS[kind]
    logging.getLogger("livekit").setLevel(logging.CRITICAL)  # each fault is logged otherwise
    print(f"{time.strftime('%Y-%m-%d')}, python {sys.version.split()[0]}, {os.cpu_count()} cores")
    sys.exit(0 if asyncio.run(main_async(args)) else 1)


if __name__ == "__main__":
    main()
