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
Slow clients: 1,000 connections that send their headers one byte a second stay open while
one client makes starts, each on a new connection; its p99 against the same starts with no
slow connection open. Event loop: the stub starts again on asyncio's own loop, against
uvloop (what `serve` uses where it is installed).
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


def limit_files(files: int) -> None:
    """An open-file limit of `files`, soft and hard, as a unit's LimitNOFILE sets it."""
    import resource

    resource.setrlimit(resource.RLIMIT_NOFILE, (files, files))


class Server:
    """`voicefallback serve --port 0`, its log in a file (a pipe could fill and stall it);
    with `uvloop=False`, on asyncio's own loop (uvloop hidden from the import system)."""

    def __init__(
        self,
        env: dict[str, str],
        log: Path,
        *args: str,
        uvloop: bool = True,
        files: int | None = None,
    ) -> None:
        self.log = log
        command = vf("serve", "--port", "0", *args)
        if not uvloop:
            hide = "import sys; sys.modules['uvloop'] = None; import runpy; sys.argv = "
            hide += repr(["voicefallback", *command[3:]])
            command = [PY, "-c", hide + "; runpy.run_module('voicefallback', run_name='__main__')"]
        with open(log, "w") as handle:
            self.process = subprocess.Popen(
                command,
                env=env,
                stderr=handle,
                stdin=subprocess.DEVNULL,
                preexec_fn=None if files is None else lambda: limit_files(files),
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


async def one_start_each(
    url: str, starts: int, prefix: str, expect: bytes = b"HTTP/1.1 200 "
) -> list[float]:
    """`starts` starts one after another, each on a new connection; client ms of each."""
    host, _, port = url.removeprefix("http://").partition(":")
    spent = []
    for index in range(starts):
        data = json.dumps({"simulationId": f"{prefix}-{index}", "primary": SONNET}).encode()
        began = time.perf_counter()
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            f"POST /interviews/start HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n".encode()
            + data
        )
        answer = await reader.read()
        spent.append((time.perf_counter() - began) * 1000)
        writer.close()
        assert answer.startswith(expect), answer[:200]
    return spent


async def with_slow_clients(
    url: str, slow: int, starts: int, expect: bytes = b"HTTP/1.1 200 "
) -> tuple[list[float], int]:
    """Good starts while `slow` connections trickle their headers a byte a second; the good
    starts' times, and how many slow connections were still open at the end."""
    host, _, port = url.removeprefix("http://").partition(":")
    writers = []
    for _ in range(slow):
        writers.append((await asyncio.open_connection(host, int(port)))[1])
    for writer in writers:
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")

    async def trickle() -> None:
        while True:
            await asyncio.sleep(1)
            for writer in writers:
                if not writer.is_closing():
                    writer.write(b"a")

    dripping = asyncio.create_task(trickle())
    try:
        spent = await one_start_each(url, starts, "slow", expect)
    finally:
        dripping.cancel()
    still_open = sum(1 for w in writers if not w.is_closing() and not w.transport.is_closing())
    for writer in writers:
        writer.close()
    return spent, still_open


def bench_slow_clients(work: Path, starts: int) -> list[Row]:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1500 <= hard:  # this process holds the slow connections
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    config = work / "models.toml"
    shutil.copy(REPO / "models.toml", config)
    env = os.environ | {"VOICEFALLBACK_CONFIG": str(config), "VOICEFALLBACK_DB": str(work / "s.db")}
    server = Server(env, work / "slow.log", "--read-timeout", "30s")
    try:
        asyncio.run(one_start_each(server.url, 50, "warm"))
        alone = asyncio.run(one_start_each(server.url, starts, "alone"))
        crowded, still_open = asyncio.run(with_slow_clients(server.url, 1000, starts))
    finally:
        server.stop()
    # At systemd's default 1,024 open files, 1,100 slow connections are past what serve
    # takes: a new one is refused at once (503), and the log says so once.
    server = Server(env, work / "full.log", "--read-timeout", "30s", files=1024)
    try:
        full, _ = asyncio.run(with_slow_clients(server.url, 1100, starts, b"HTTP/1.1 503 "))
    finally:
        server.stop()
    lines = server.log.read_text().splitlines()
    refusing = sum(1 for line in lines if "refusing new connections" in line)
    p99, base = quantile(crowded, 0.99), quantile(alone, 0.99)
    return [
        (
            "a start on a new connection, 1,000 slow connections open: p99",
            f"{p99:.1f} ms",
            p99 / base,
            f"no slow connection: p99 {base:.1f} ms; {still_open} of 1,000 still open at the"
            " end; target < 50 ms",
        ),
        (
            "  the same, p50",
            f"{statistics.median(crowded):.1f} ms",
            statistics.median(crowded) / statistics.median(alone),
            f"no slow connection: p50 {statistics.median(alone):.1f} ms",
        ),
        (
            "  1,100 slow connections at 1,024 open files: a new one refused (503), p99",
            f"{quantile(full, 0.99):.1f} ms",
            quantile(full, 0.99) / base,
            f"log: {len(lines)} lines in all, {refusing} saying it refuses",
        ),
    ]


def bench_loops(work: Path, starts: int, rounds: int) -> list[Row]:
    """The same requests to a server on uvloop and one on asyncio's own loop, both running,
    taken in turns for `rounds` rounds (noise on a shared machine comes and goes): the
    median round's throughput of each, and the server-side p50 over all rounds."""
    config = work / "models.toml"
    shutil.copy(REPO / "models.toml", config)
    servers = {}
    for name in ("uvloop", "asyncio"):
        env = os.environ | {
            "VOICEFALLBACK_CONFIG": str(config),
            "VOICEFALLBACK_DB": str(work / f"{name}.db"),
        }
        servers[name] = Server(env, work / f"{name}.log", uvloop=name == "uvloop")
        assert f"; {name}," in servers[name].log.read_text(), servers[name].log.read_text()
    rates: dict[str, dict[str, list[float]]] = {n: {"livez": [], "start": []} for n in servers}
    server_ms: dict[str, list[float]] = {n: [] for n in servers}
    try:
        for turn in range(rounds):
            for name in ("uvloop", "asyncio") if turn % 2 == 0 else ("asyncio", "uvloop"):
                url = servers[name].url

                def body(index: int, prefix: str = f"{name}-{turn}") -> tuple[str, str, Any]:
                    primary = SONNET  # falls back: an event each
                    return (
                        "POST",
                        "/interviews/start",
                        {"simulationId": f"{prefix}-{index}", "primary": primary},
                    )

                _, wall = asyncio.run(load(url, starts, 50, lambda i: ("GET", "/livez", None)))
                rates[name]["livez"].append(starts / wall)
                results, wall = asyncio.run(load(url, starts, 50, body))
                assert all(status == 200 for status, *_ in results)
                rates[name]["start"].append(starts / wall)
                server_ms[name] += [s for _, s, _, _ in results]
    finally:
        for server in servers.values():
            server.stop()
    livez = {n: statistics.median(r["livez"]) for n, r in rates.items()}
    start = {n: statistics.median(r["start"]) for n, r in rates.items()}
    p50 = {n: statistics.median(ms) for n, ms in server_ms.items()}
    return [
        (
            f"GET /livez at 50 clients on uvloop: throughput (median of {rounds} rounds)",
            f"{livez['uvloop']:.0f} req/s",
            livez["uvloop"] / livez["asyncio"],
            f"asyncio's own loop: {livez['asyncio']:.0f} req/s",
        ),
        (
            "  stub starts at 50 clients: throughput",
            f"{start['uvloop']:.0f} req/s",
            start["uvloop"] / start["asyncio"],
            f"asyncio's own loop: {start['asyncio']:.0f} req/s",
        ),
        (
            "  the same, server-side p50",
            f"{p50['uvloop']:.2f} ms",
            p50["uvloop"] / p50["asyncio"],
            f"asyncio's own loop: {p50['asyncio']:.2f} ms",
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
    parts = ("stub", "live", "slow", "loops")
    parser.add_argument("--only", choices=parts, action="append", help="run only these parts")
    args = parser.parse_args()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="vf-serve-bench-") as tmp:
        work = Path(tmp)
        os.environ.pop("VOICEFALLBACK_MODE", None)
        benches: dict[str, Callable[[], list[Row]]] = {
            "stub": lambda: bench_stub(work, 500 if args.quick else 2000),
            "live": lambda: bench_live(work, 100 if args.quick else 400),
            "slow": lambda: bench_slow_clients(work, 100 if args.quick else 300),
            "loops": lambda: bench_loops(work, 500 if args.quick else 1000, 1 if args.quick else 5),
        }
        for part in args.only or parts:
            print(f"... {part}", file=sys.stderr, flush=True)
            rows += benches[part]()
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
