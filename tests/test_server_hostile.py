"""`voicefallback serve` under hostile or careless clients, and what its log may never show."""

from __future__ import annotations

import os
import socket
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import write_config
from tests.fake_provider import FakeProvider

pytest_plugins = ["tests.conftest_serve"]

MINI = "openai:gpt-4o-mini"
KEY = "gw-token-0f1e2d3c4b5a"  # a configured key of no recognisable shape
TOKEN = "s3cret-token-for-tests-0123456789"


def rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchall()


def address(url: str) -> tuple[str, int]:
    host, _, port = url.removeprefix("http://").rpartition(":")
    return host.strip("[]"), int(port)


def answer_of(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    sock.settimeout(30)
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


# -- secrets ------------------------------------------------------------------------------


def test_no_secret_a_client_sends_in_a_query_string_reaches_the_log(serve):
    server = serve("--token-env", "VF_TOKEN", env={"VF_TOKEN": TOKEN, "OPENAI_API_KEY": KEY})
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for query in (f"token={TOKEN}", f"key={KEY}", "api_key=abc123", "api-key=abc123"):
        server.get(f"/livez?{query}")
        server.get(f"/health?{query}", headers=auth)  # 400 (unknown parameter) or 401
    server.get(f"/livez?mine={KEY}")  # a configured key under any name
    assert server.stop() == 0
    logged = server.stderr
    assert TOKEN not in logged and KEY not in logged and "abc123" not in logged
    assert '"GET /livez?token=[REDACTED] HTTP/1.1" 400' in logged  # the line is kept


def test_a_live_serve_logs_no_provider_url_and_redacts_a_key_echoed_in_the_opening(
    serve, config_file, db_file
):
    with FakeProvider(keys=(KEY,)) as fake:
        write_config(
            config_file,
            f"""
[settings]
mode = "live"
[providers.gw]
type = "openai"
base_url = "{fake.url}/v1"
api_key_env = "GW_KEY"
[[models]]
id = "gw:echo-key"
""",
        )
        server = serve(env={"GW_KEY": KEY})
        assert server.post("/health/probe").status_code == 200
        started = server.post(
            "/interviews/start", json={"simulationId": "s", "primary": "gw:echo-key"}
        )
        assert started.status_code == 200
        assert started.json()["agent"]["text"] == "Your key is [REDACTED]."
        assert server.stop() == 0
    assert fake.url not in server.stderr  # the SDK's HTTP client logs each request's URL
    assert KEY not in server.stderr


def test_a_simulation_id_equal_to_the_token_or_a_key_is_400_and_nothing_written(serve, db_file):
    server = serve("--token-env", "VF_TOKEN", env={"VF_TOKEN": TOKEN, "OPENAI_API_KEY": KEY})
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for simulation_id in (TOKEN, KEY):
        body = {"simulationId": simulation_id, "primary": MINI}
        refused = server.post("/interviews/start", json=body, headers=auth)
        assert refused.status_code == 400
        assert refused.json()["error"].startswith("simulationId: looks like an API key")
        assert simulation_id not in refused.text
    assert not db_file.exists() or rows(db_file, "SELECT count(*) FROM probes") == [(0,)]


# -- slow, large and odd requests ---------------------------------------------------------


def test_a_request_whose_headers_never_end_is_408_at_the_read_timeout(serve):
    server = serve("--read-timeout", "1s")
    with socket.create_connection(address(server.url)) as slow:
        slow.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: a")  # and nothing more
        answer = answer_of(slow)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert answer.endswith(b'{"error": "request not received in time"}\n')
    with socket.create_connection(address(server.url)) as silent:  # never sends a byte
        assert answer_of(silent).startswith(b"HTTP/1.1 408 ")
    assert server.get("/livez").status_code == 200


def test_a_chunked_body_with_no_end_is_408_at_the_read_timeout_and_writes_nothing(serve, db_file):
    server = serve("--read-timeout", "1s")
    with socket.create_connection(address(server.url)) as slow:
        slow.sendall(
            b"POST /interviews/start HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Transfer-Encoding: chunked\r\n\r\n5\r\n{"sim\r\n'  # no terminating 0 chunk
        )
        assert answer_of(slow).startswith(b"HTTP/1.1 408 ")
    assert server.get("/livez").status_code == 200
    assert server.stop() == 0
    assert "Traceback" not in server.stderr and "Exception" not in server.stderr
    assert not db_file.exists() or rows(db_file, "SELECT count(*) FROM events") == [(0,)]


def test_headers_over_64_kib_are_431_before_the_token_is_looked_at(serve):
    server = serve("--token-env", "VF_TOKEN", env={"VF_TOKEN": TOKEN})
    with socket.create_connection(address(server.url)) as big:
        big.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (70 * 1024))
        answer = answer_of(big)  # answered while the header line is still going
    assert answer.startswith(b"HTTP/1.1 431 ")
    assert b"larger than 64 KiB" in answer
    # A request just under the limit is read as usual (and then needs the token).
    under = server.get("/health", headers={"X-Big": "a" * (60 * 1024)})
    assert under.status_code == 401
    assert "server-timing" in under.headers  # 401 answers are timed like every other


def test_connections_past_the_open_file_limit_are_503_with_one_log_line(serve):
    """With 1,024 open files and more slow clients than that, asyncio would log a traceback
    for every accept that fails (hundreds of thousands), and a good client would wait."""
    limit = 200
    command = [
        sys.executable,
        "-c",
        "import os, resource, sys; "
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({limit}, {limit})); "
        "os.execv(sys.executable, [sys.executable, '-m', 'voicefallback', 'serve', "
        "'--port', '0', '--read-timeout', '2s'])",
    ]
    server = serve(command=command, env=dict(os.environ))
    most = int(server.wait_for_line(r"up to \d+ connections").split("up to ")[1].split()[0])
    assert most < limit
    served = [socket.create_connection(address(server.url)) for _ in range(most)]
    # Past the limit: clients that send their request at once, and clients that send nothing.
    eager = [socket.create_connection(address(server.url)) for _ in range(20)]
    for client in eager:
        client.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
    silent = [socket.create_connection(address(server.url)) for _ in range(5)]
    try:
        refused = [answer_of(c)[:12] for c in eager + silent]  # at once, or within 1 s
        timed_out = [answer_of(c)[:12] for c in served]  # 408 at the read timeout, 2 s
    finally:
        for client in served + eager + silent:
            client.close()
    assert refused == [b"HTTP/1.1 503"] * 25  # a request already sent does not reset it
    assert timed_out == [b"HTTP/1.1 408"] * most
    assert server.get("/livez").status_code == 200
    assert server.stop() == 0
    assert server.stderr.count("refusing new connections") == 1
    assert server.stderr.count("accepting connections again; 25 were refused") == 1
    assert "out of system resource" not in server.stderr


def test_head_answers_like_get_without_a_body(serve):
    server = serve()
    for path in ("/livez", "/health", "/fallbacks", "/metrics", "/readyz", "/"):
        get, head = server.get(path), server.client.head(path)
        assert head.status_code == get.status_code == 200, path
        assert head.content == b""
        assert head.headers["content-type"] == get.headers["content-type"]
    assert server.client.head("/interviews/start").status_code == 405


def test_unknown_query_parameters_are_400_naming_the_parameter(serve):
    server = serve()
    server.post("/health/probe")
    for method, path, name in [
        ("GET", "/health?bogus=1", "bogus"),
        ("POST", "/health/probe?check=true", "check"),
        ("GET", "/fallbacks?simulation_id=x", "simulation_id"),  # the name is simulationId
        ("POST", "/interviews/start?dry=1", "dry"),
        ("GET", "/livez?x=1", "x"),
    ]:
        answer = server.client.request(method, path, json={"simulationId": "s", "primary": MINI})
        assert answer.status_code == 400, path
        assert answer.json()["error"].startswith(f"{name}: unknown query parameter"), path
    assert server.get("/health?check=true&model=" + MINI).status_code == 200


def test_history_with_check_is_503_when_the_model_is_not_healthy(serve):
    """As `health --history M --check`: the history document, gated on that model."""
    server = serve()
    server.post("/health/probe")
    down = server.get(
        "/health", params={"history": "anthropic:claude-3-5-sonnet-latest", "check": "true"}
    )
    assert down.status_code == 503 and down.json()["status"] == "unhealthy"
    up = server.get("/health", params={"history": MINI, "check": "true"})
    assert up.status_code == 200 and up.json()["model"] == MINI


def test_readyz_503_says_when_to_retry(serve, db_file):
    server = serve()
    server.post("/health/probe")  # the state file exists
    db_file.unlink()  # starts cannot be recorded any more, as the next one finds
    server.post("/interviews/start", json={"simulationId": "s", "primary": MINI})
    unready = server.get("/readyz")
    assert unready.status_code == 503 and unready.json()["status"] == "unready"
    assert unready.headers["retry-after"] == "1"


def test_an_ipv6_address_is_logged_in_brackets(serve):
    server = serve("--host", "::1")
    assert server.url.startswith("http://[::1]:")
    assert server.get("/livez").status_code == 200


def test_serve_runs_on_uvloop_where_it_is_installed_and_on_asyncio_without(serve):
    pytest.importorskip("uvloop")
    assert "; uvloop, up to" in serve().lines[0]
    hide = (
        "import sys; sys.modules['uvloop'] = None; sys.argv = ['voicefallback', 'serve',"
        " '--port', '0']; from voicefallback.cli import main; main()"
    )
    plain = serve(command=[sys.executable, "-c", hide], env=dict(os.environ))
    assert "; asyncio, up to" in plain.lines[0]
    assert plain.get("/livez").status_code == 200
