"""`voicefallback serve` benchmark: each figure beside a baseline measured in the same run.

    python benchmarks/serve.py            # 2,000 stub starts at 50 clients; live at 20
    python benchmarks/serve.py --quick    # 500 stub starts; fewer live ones

Stub: 50 concurrent clients send 2,000 `POST /interviews/start` whose primary is unhealthy
(each falls back and records an event), each request in one write as Node's `http` and
Python's `http.client` send a small one; then 2,000 more with headers and body in two
writes, as `httpx` sends them. Server-side time is the app's own `Server-Timing` header;
the baseline is `GET /livez` (no work at all) under the same load, and a process per
session (`voicefallback start`). Live: the fake provider answers with its first token
after 200 ms; what is judged is the HTTP answer time minus the `agent.latencyMs` the
response reports (the provider's own time), at 20 concurrent clients.
Not part of the test suite: timings on a shared 2-core machine are noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # for tests.fake_provider

from tests.fake_provider import OPENAI_KEY, FakeProvider  # noqa: E402

PY = sys.executable
SONNET = "anthropic:claude-3-5-sonnet-latest"  # down in the shipped stub registry
MINI = "openai:gpt-4o-mini"
Row = tuple[str, str, float, str]


def vf(*args: str) -> list[str]:
    return [PY, "-m", "voicefallback", *args]


class Server:
    """`voicefallback serve --port 0`, its log in a file (a pipe could fill and stall it)."""

    def __init__(self, env: dict[str, str], log: Path, *args: str) -> None:
        self.log = log
        with open(log, "w") as handle:
            self.process = subprocess.Popen(
                vf("serve", "--port", "0", *args), env=env, stderr=handle, stdin=subprocess.DEVNULL
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            found = re.search(r"serving (http://\S+) ", log.read_text())
            if found and "startup complete" in log.read_text():
                self.url = found.group(1)
                return
            if self.process.poll() is not None:
                raise SystemExit(f"serve exited:\n{log.read_text()}")
            time.sleep(0.05)
        raise SystemExit(f"serve did not start:\n{log.read_text()}")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=15)


async def load(
    url: str,
    requests: int,
    clients: int,
    request: Callable[[int], tuple[str, str, Any]],
    *,
    two_writes: bool = False,
) -> tuple[list[tuple[int, float, float, Any]], float]:
    """`requests` requests from `clients` concurrent clients (one kept-alive connection
    each); for each (status, server ms, client ms, JSON body), and the wall time of the run.

    A small request goes out in one write, as Node's `http` and Python's `http.client` send
    it; with `two_writes` the headers and the body go in two, as `httpx` sends them, and the
    server may then wait a pass of its busy loop for the body (a wait its timing includes).
    """
    results: list[tuple[int, float, float, Any]] = []
    counter = iter(range(requests))
    host, _, port = url.removeprefix("http://").partition(":")

    async def client() -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            for index in counter:
                method, path, body = request(index)
                data = json.dumps(body).encode() if body is not None else b""
                head = (
                    f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
                ).encode()
                began = time.perf_counter()
                if two_writes and data:
                    writer.write(head)
                    await writer.drain()
                    writer.write(data)
                else:
                    writer.write(head + data)
                await writer.drain()
                status = int((await reader.readline()).split()[1])
                headers = {}
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                content = await reader.readexactly(int(headers.get("content-length", "0")))
                spent = (time.perf_counter() - began) * 1000
                timing = re.search(r"dur=([\d.]+)", headers.get("server-timing", ""))
                server_ms = float(timing.group(1)) if timing else float("nan")
                document = json.loads(content) if content else None
                results.append((status, server_ms, spent, document))
        finally:
            writer.close()

    began = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return results, time.perf_counter() - began


def quantile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def bench_stub(work: Path, starts: int) -> list[Row]:
    config = work / "models.toml"
    shutil.copy(REPO / "models.toml", config)
    db = work / "stub.db"
    env = os.environ | {"VOICEFALLBACK_CONFIG": str(config), "VOICEFALLBACK_DB": str(db)}
    server = Server(env, work / "stub.log")
    try:
        warm = asyncio.run(
            load(
                server.url,
                100,
                10,
                lambda i: (
                    "POST",
                    "/interviews/start",
                    {"simulationId": f"warm-{i}", "primary": MINI},
                ),
            )  # healthy: no event
        )[0]
        assert all(status == 200 for status, *_ in warm)
        livez, livez_wall = asyncio.run(
            load(server.url, starts, 50, lambda i: ("GET", "/livez", None))
        )

        def fall_back(prefix: str) -> Callable[[int], tuple[str, str, Any]]:
            return lambda i: (
                "POST",
                "/interviews/start",
                {"simulationId": f"{prefix}-{i}", "primary": SONNET},
            )

        started, wall = asyncio.run(load(server.url, starts, 50, fall_back("b")))
        split, _ = asyncio.run(load(server.url, starts, 50, fall_back("h"), two_writes=True))
    finally:
        server.stop()
    errors = sum(1 for status, *_ in started if status != 200)
    fell_back = sum(1 for *_, doc in started if doc and doc.get("usedFallback"))
    with sqlite3.connect(db) as conn:
        events = conn.execute(
            "SELECT count(*) FROM events WHERE simulation_id LIKE 'b-%'"
        ).fetchone()[0]
    server_ms = [s for _, s, _, _ in started]
    split_ms = [s for _, s, _, _ in split]
    errors += sum(1 for status, *_ in split if status != 200)
    client_ms = [c for _, _, c, _ in started]
    base_ms = [s for _, s, _, _ in livez]
    # A process per session, the way the CLI does it (median of a few).
    cli = []
    for index in range(5):
        began = time.perf_counter()
        subprocess.run(
            vf("start", "--json", "--simulation-id", f"cli-{index}", "--primary", SONNET),
            env=env,
            check=True,
            capture_output=True,
        )
        cli.append((time.perf_counter() - began) * 1000)
    p50, p99 = statistics.median(server_ms), quantile(server_ms, 0.99)
    return [
        (
            "stub starts at 50 clients: errors / events",
            f"{errors} / {events}",
            float("nan"),
            f"{starts} requests, {fell_back} fell back; target 0 errors, exactly {starts} events",
        ),
        (
            "  server-side p50 (Server-Timing)",
            f"{p50:.2f} ms",
            p50 / statistics.median(base_ms),
            f"GET /livez under the same load {statistics.median(base_ms):.2f} ms; target <= 5 ms",
        ),
        (
            "  server-side p99",
            f"{p99:.2f} ms",
            p99 / quantile(base_ms, 0.99),
            f"/livez p99 {quantile(base_ms, 0.99):.2f} ms; target <= 50 ms",
        ),
        (
            "  same, headers and body in two writes (as httpx sends them), p50 / p99",
            f"{statistics.median(split_ms):.2f} / {quantile(split_ms, 0.99):.2f} ms",
            statistics.median(split_ms) / p50,
            "ratio: p50 against one write; the wait for the body counts",
        ),
        (
            "  throughput",
            f"{starts / wall:.0f} req/s",
            (starts / wall) / (starts / livez_wall),
            f"/livez {starts / livez_wall:.0f} req/s (client and server share 2 cores)",
        ),
        (
            "  answer time at the client, p50",
            f"{statistics.median(client_ms):.1f} ms",
            statistics.median(client_ms) / statistics.median(cli),
            f"a process per session (`start --json`) {statistics.median(cli):.0f} ms",
        ),
    ]


def bench_live(work: Path, starts: int) -> list[Row]:
    with FakeProvider() as fake:
        config = work / "live.toml"
        config.write_text(
            '[settings]\nmode = "live"\n\n'
            '[providers.p]\ntype = "openai"\napi_key_env = "BENCH_KEY"\n'
            f'base_url = "{fake.url}/v1"\n\n'
            '[[models]]\nid = "p:primary+ttft-200+tokens-3"\n\n'
            '[[models]]\nid = "p:backup+ttft-200+tokens-3"\n'
        )
        db = work / "live.db"
        env = os.environ | {
            "VOICEFALLBACK_CONFIG": str(config),
            "VOICEFALLBACK_DB": str(db),
            "BENCH_KEY": OPENAI_KEY,
        }
        primary = "p:primary+ttft-200+tokens-3"
        server = Server(env, work / "live.log")
        try:

            def body(index: int) -> tuple[str, str, Any]:
                return (
                    "POST",
                    "/interviews/start",
                    {"simulationId": f"l-{index}", "primary": primary},
                )

            asyncio.run(load(server.url, 20, 20, body))  # warm: probe once, build the client
            results, wall = asyncio.run(load(server.url, starts, 20, body))
        finally:
            server.stop()
        cli = []
        for index in range(3):
            began = time.perf_counter()
            subprocess.run(
                vf("start", "--json", "--simulation-id", f"cli-{index}", "--primary", primary),
                env=env,
                check=True,
                capture_output=True,
            )
            cli.append((time.perf_counter() - began) * 1000)
    errors = sum(1 for status, *_ in results if status != 200)
    agent = [doc["agent"]["latencyMs"] for status, _, _, doc in results if status == 200]
    overhead = [c - doc["agent"]["latencyMs"] for status, _, c, doc in results if status == 200]
    p50 = statistics.median(overhead)
    return [
        (
            "live starts at 20 clients, 200 ms first token: HTTP time - agent.latencyMs, p50",
            f"{p50:.1f} ms",
            p50 / statistics.median(agent),
            f"{starts} requests, {errors} errors; agent.latencyMs p50"
            f" {statistics.median(agent):.0f} ms; target <= 20 ms",
        ),
        (
            "  same, p95",
            f"{quantile(overhead, 0.95):.1f} ms",
            float("nan"),
            f"throughput {starts / wall:.0f} req/s",
        ),
        (
            "  a process per session (`start --mode live`), wall",
            f"{statistics.median(cli):.0f} ms",
            statistics.median(cli) / (statistics.median(agent) + p50),
            "vs the warm server's answer (agent time + overhead)",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests")
    args = parser.parse_args()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="vf-serve-bench-") as tmp:
        work = Path(tmp)
        os.environ.pop("VOICEFALLBACK_MODE", None)
        print("... stub", file=sys.stderr, flush=True)
        rows += bench_stub(work, 500 if args.quick else 2000)
        print("... live", file=sys.stderr, flush=True)
        rows += bench_live(work, 100 if args.quick else 400)
    print(
        f"\nvoicefallback serve benchmark, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores,"
        f" Python {sys.version.split()[0]}\n"
    )
    width = max(len(r[0]) for r in rows)
    print(f"{'figure':<{width}}  {'value':>12}  {'ratio':>6}  baseline / target")
    for label, value, ratio, note in rows:
        shown = "" if ratio != ratio else f"{ratio:.2f}"
        print(f"{label:<{width}}  {value:>12}  {shown:>6}  {note}")


if __name__ == "__main__":
    main()
