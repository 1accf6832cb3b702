"""`voicefallback serve` over real HTTP: the old service's routes, bad input, auth, reloads."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.conftest import add_setting
from tests.pg_server import PASSWORD
from voicefallback.locking import probe_lock

pytest_plugins = ["tests.conftest_serve"]

SONNET = "anthropic:claude-3-5-sonnet-latest"  # down in the shipped stub registry
MINI = "openai:gpt-4o-mini"

EXECUTABLE = Path(sys.executable).with_name("voicefallback")
KEY = "sk-test-0123456789abcdefghijklmnop"  # an API key in the server's environment
TOKEN = "s3cret-token-for-tests-0123456789"


def test_reference_cases_a_b_c_over_http_answer_the_cli_documents(serve, cli, db_file):
    server = serve()
    a = server.post("/interviews/start", json={"simulationId": "sim-auto", "primary": SONNET})
    assert a.status_code == 200
    assert a.headers["content-type"] == "application/json"
    assert a.json()["usedFallback"] is True and a.json()["fallbackSource"] == "auto"
    assert a.json()["chosen"] == MINI
    assert a.json()["agent"]["received_config"] == {"simulationId": "sim-auto", "primary": SONNET}

    b_body = {
        "simulationId": "sim-caller",
        "primary": SONNET,
        "fallbacks": ["openai:gpt-4o", MINI],
        "voice": {"locale": "de-DE"},  # any other key reaches the opening call
    }
    b = server.post("/interviews/start", json=b_body)
    assert b.status_code == 200
    assert b.json()["chosen"] == "openai:gpt-4o" and b.json()["fallbackSource"] == "caller"
    assert b.json()["agent"]["received_config"] == b_body

    c = server.post("/interviews/start", json={"simulationId": "sim-healthy", "primary": MINI})
    assert c.status_code == 200
    assert c.json()["usedFallback"] is False and c.json()["chosen"] == MINI

    # The same bytes the CLI prints: a caller can switch between the two freely.
    again = cli("start", "--simulation-id", "sim-healthy", "--primary", MINI, "--json")
    assert c.content.decode() == again.stdout
    listing = server.get("/fallbacks")
    assert listing.status_code == 200
    assert listing.content.decode() == cli("fallbacks", "--json").stdout
    assert [e["simulationId"] for e in listing.json()["events"]] == ["sim-caller", "sim-auto"]
    assert rows(db_file, "SELECT simulation_id FROM events ORDER BY id") == [
        ("sim-auto",),
        ("sim-caller",),
    ]
    only = server.get("/fallbacks", params={"simulationId": "sim-auto", "limit": 5})
    assert [e["simulationId"] for e in only.json()["events"]] == ["sim-auto"]
    assert server.get("/fallbacks", params={"since": "1h"}).json()["events"]
    none = server.get("/fallbacks", params={"since": "2999-01-01T00:00:00Z"}).json()
    assert none["events"] == [] and none["total"] == 0


def test_health_probe_metrics_and_process_checks(serve, cli):
    server = serve()
    probed = server.post("/health/probe")
    assert probed.status_code == 200
    assert [r["model"] for r in probed.json()["results"]] == [
        MINI,
        SONNET,
        "openai:gpt-4o",
        "anthropic:claude-3-5-haiku-latest",
    ]
    one = server.post("/health/probe", params={"model": MINI}).json()
    assert [r["model"] for r in one["results"]] == [MINI]

    health = server.get("/health")
    assert health.status_code == 200
    assert without_times(health.json()) == without_times(cli("health", "--json").json)
    # The health command's options, as query parameters; a failed gate is 503.
    assert server.get("/health", params={"model": MINI, "check": "true"}).status_code == 200
    gate = server.get("/health", params={"model": MINI, "require": SONNET})
    assert gate.status_code == 503
    assert [(r["model"], r["ok"]) for r in gate.json()["models"]] == [(MINI, True), (SONNET, False)]
    history = server.get("/health", params={"history": SONNET, "limit": 1}).json()
    assert history["model"] == SONNET and len(history["probes"]) == 1

    metrics = server.get("/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert metrics.text == cli("health", "--format", "prometheus").stdout

    assert server.get("/livez").json() == {"status": "ok"}
    assert server.get("/nope").json() == {"error": "Not Found"}
    wrong = server.get("/interviews/start")
    assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"
    assert wrong.json() == {"error": "Method Not Allowed"}
    assert server.get("/readyz").json() == {
        "status": "ready",
        "mode": "stub",
        "models": 4,
        "state": "up",
        "reason": None,
        "error": None,
    }


BAD_BODIES = [
    (b"{not json", "body: not valid JSON"),
    (b"[1, 2]", "must be an object"),
    (b'{"primary": "openai:gpt-4o-mini"}', "simulationId: required"),
    (b'{"simulationId": 7, "primary": "openai:gpt-4o-mini"}', "simulationId: must be"),
    (b'{"simulationId": "s"}', "primary: required"),
    (b'{"simulationId": "s", "primary": ["x"]}', "primary: must be"),
    (b'{"simulationId": "s", "primary": "nope:model"}', "primary: unknown model"),
    (
        b'{"simulationId": "s", "primary": "openai:gpt-4o-mini", "fallbacks": "x"}',
        "fallbacks: must be an array",
    ),
    (
        b'{"simulationId": "s", "primary": "openai:gpt-4o-mini", "fallbacks": ["nope:m"]}',
        "fallbacks: unknown model",
    ),
    (b'{"simulationId": "", "primary": "openai:gpt-4o-mini"}', "simulationId: must be"),
    (b'{"simulationId": "a\\nb", "primary": "openai:gpt-4o-mini"}', "simulationId: at most"),
    (b'{"simulationId": "s", "simulationId": "t", "primary": "x"}', "duplicate key"),
    (b'{"simulationId": NaN}', "NaN is not valid JSON"),
    (b"\xff\xfe", "not UTF-8"),
]


def test_bad_bodies_are_400_with_one_line_and_write_nothing(serve, db_file):
    server = serve()
    for body, says in BAD_BODIES:
        answer = server.post("/interviews/start", content=body)
        assert answer.status_code == 400, body
        document = answer.json()
        assert list(document) == ["error"]
        assert says in document["error"] and "\n" not in document["error"], document
    written = "SELECT (SELECT count(*) FROM probes), (SELECT count(*) FROM events)"
    assert not db_file.exists() or rows(db_file, written) == [(0, 0)]


def test_bad_query_parameters_are_400_with_one_line(serve):
    server = serve()
    for path, params, says in [
        ("/fallbacks", {"limit": "0"}, "limit"),
        ("/fallbacks", {"since": "yesterday"}, "since: not an ISO-8601 time"),
        ("/health", {"window": "x"}, "window"),
        ("/health", {"span": "forever"}, "span: not a duration"),
        ("/health", {"model": "nope:m"}, "model: unknown model"),
        ("/health", {"limit": "5"}, "history"),
        ("/health/probe", {"model": "nope:m"}, "model: unknown model"),
    ]:
        method = server.post if path == "/health/probe" else server.get
        answer = method(path, params=params)
        assert answer.status_code == 400, (path, params, answer.text)
        assert says in answer.json()["error"], answer.json()


def test_a_body_over_256_kib_is_413_and_writes_nothing(serve, db_file):
    server = serve()
    big = {"simulationId": "big", "primary": SONNET, "padding": "x" * (256 * 1024)}
    answer = server.post("/interviews/start", json=big)
    assert answer.status_code == 413
    assert "256 KiB" in answer.json()["error"]

    def chunks():  # no Content-Length: the cap holds while reading, too
        yield b'{"simulationId": "big", "primary": "' + SONNET.encode() + b'", "p": "'
        for _ in range(40):
            yield b"y" * 8192
        yield b'"}'

    assert server.post("/interviews/start", content=chunks()).status_code == 413
    assert not db_file.exists() or rows(db_file, "SELECT count(*) FROM events") == [(0,)]


def test_no_model_can_start_is_503_with_the_start_document(serve, config_file, db_file):
    config_file.write_text(
        config_file.read_text().replace("stub = { latency_ms = 180 }", 'stub = { error = "auth" }')
    )
    server = serve()
    answer = server.post(
        "/interviews/start", json={"simulationId": "doomed", "primary": SONNET, "fallbacks": [MINI]}
    )
    assert answer.status_code == 503
    document = answer.json()
    assert document["chosen"] is None and document["agent"] is None
    assert [c["model"] for c in document["candidates"]] == [SONNET, MINI]
    assert document["error"].startswith("no model could be started")
    assert rows(db_file, "SELECT simulation_id, chosen FROM events") == [("doomed", None)]


def test_a_token_guards_every_route_but_livez(serve, cli, monkeypatch):
    server = serve("--token-env", "VF_TOKEN", env={"VF_TOKEN": TOKEN, "OPENAI_API_KEY": KEY})
    good = {"Authorization": f"Bearer {TOKEN}"}
    for path in ("/", "/health", "/fallbacks", "/metrics", "/readyz", "/openapi.json", "/nope"):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            answer = server.get(path, headers=headers)
            assert answer.status_code == 401, (path, headers)
            assert answer.json() == {"error": "unauthorized"}
            assert answer.headers["www-authenticate"] == "Bearer"
    assert server.post("/interviews/start", json={}).status_code == 401
    assert server.get("/livez").status_code == 200
    for path in ("/", "/health", "/fallbacks", "/metrics", "/readyz", "/openapi.json"):
        answer = server.get(path, headers=good)
        assert answer.status_code == 200, path
        assert TOKEN not in answer.text and KEY not in answer.text
    started = server.post(
        "/interviews/start",
        json={"simulationId": "s", "primary": SONNET},
        headers={"authorization": f"bearer {TOKEN}"},  # the scheme is case-insensitive
    )
    assert started.status_code == 200
    document = server.get("/openapi.json", headers=good).json()
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert "security" not in document["paths"]["/livez"]["get"]
    assert document["paths"]["/health"]["get"]["security"] == [{"bearer": []}]
    assert server.stop() == 0
    assert TOKEN not in server.stderr and KEY not in server.stderr


def test_listening_beyond_loopback_needs_a_set_token_variable(cli, monkeypatch):
    refused = cli("serve", "--host", "0.0.0.0")
    assert refused.exit_code == 2
    assert refused.stderr.count("\n") == 1 and "--token-env" in refused.stderr
    monkeypatch.delenv("VF_TOKEN", raising=False)
    unset = cli("serve", "--host", "127.0.0.1", "--token-env", "VF_TOKEN")
    assert unset.exit_code == 2 and "VF_TOKEN" in unset.stderr


def test_without_the_web_extra_serve_says_how_to_install_it(config_file):
    hide = (
        "import sys; sys.modules['fastapi'] = None; sys.argv = ['voicefallback', 'serve'];"
        " from voicefallback.cli import main; main()"
    )
    done = subprocess.run(
        [sys.executable, "-c", hide], capture_output=True, text=True, timeout=60, env=os.environ
    )
    assert done.returncode == 2
    assert done.stderr == (
        "voicefallback: error: serve needs the web extra: pip install 'voicefallback[serve]'\n"
    )


def test_a_taken_port_is_one_line_and_exit_75(serve, cli):
    server = serve()
    port = server.url.rsplit(":", 1)[1]
    taken = cli("serve", "--port", port)
    assert taken.exit_code == 75
    assert (
        taken.stderr == f"voicefallback: error: --port {port}: 127.0.0.1:{port} is already in use\n"
    )


def test_models_toml_reloads_on_change_and_refuses_an_invalid_file(serve, config_file):
    server = serve()
    added = '\n[[models]]\nid = "openai:gpt-4.1-mini"\nstub = { latency_ms = 90 }\n'
    config_file.write_text(config_file.read_text() + added)
    mark = len(server.lines)
    server.wait_for_line(r"models.toml reloaded: 5 models", after=mark)
    assert server.get("/readyz").json()["models"] == 5
    started = server.post(
        "/interviews/start", json={"simulationId": "s", "primary": "openai:gpt-4.1-mini"}
    )
    assert started.status_code == 200

    good = config_file.read_text()
    config_file.write_text(good + "\n[[models]]\nid = 42\n")
    mark = len(server.lines)
    line = server.wait_for_line(r"not reloaded", after=mark)
    assert "previous registry stays" in line and str(config_file) in line
    assert server.get("/readyz").json()["models"] == 5  # the old registry is still in force

    # SIGHUP reloads at once, whatever the file's timestamps say.
    config_file.write_text(good)
    mark = len(server.lines)
    server.process.send_signal(signal.SIGHUP)
    server.wait_for_line(r"models.toml reloaded: 5 models", after=mark)
    assert server.process.poll() is None


def test_the_probe_loop_shares_the_probe_lock_with_cron(serve, db_file):
    server = serve("--probe-every", "1s")
    probes = "SELECT count(*) FROM probes WHERE kind = 'probe'"
    recorded = wait_for_rows(db_file, probes, at_least=4)  # the first round, at start
    with probe_lock(Path(db_file), wait_s=5):  # a cron `probe` holds the lock...
        time.sleep(2.5)  # ...across two of the loop's rounds
        assert rows(db_file, probes)[0][0] == recorded  # which wait instead of overlapping
        assert server.get("/livez").status_code == 200  # the server answers meanwhile
    wait_for_rows(db_file, probes, at_least=recorded + 4)  # and probe once it is free
    assert server.stop() == 0


def test_a_probe_request_while_cron_probes_is_503_and_names_no_command_line_option(serve, db_file):
    server = serve()
    server.post("/health/probe")  # the state file exists
    with probe_lock(Path(db_file), wait_s=5):  # a cron `probe` is running
        busy = server.post("/health/probe")
    assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
    message = busy.json()["error"]
    assert message.startswith("another probe") and str(db_file) in message
    assert "--" not in message  # an HTTP caller has no --lock-timeout to turn
    assert server.post("/health/probe").status_code == 200  # free again
    assert server.stop() == 0


def wait_for_rows(db: Path, sql: str, at_least: int, timeout: float = 20.0) -> int:
    deadline = time.monotonic() + timeout
    while True:
        count = rows(db, sql)[0][0] if db.exists() else 0
        if count >= at_least or time.monotonic() > deadline:
            assert count >= at_least, f"{sql}: {count} rows, expected {at_least}"
            return int(count)
        time.sleep(0.05)


def test_json_logs_are_one_object_per_line(serve):
    server = serve("--json")
    server.get("/livez")
    assert server.stop() == 0
    for line in server.lines:
        record = json.loads(line)
        assert set(record) == {"at", "level", "logger", "message"}


def rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def without_times(document: dict[str, Any]) -> dict[str, Any]:
    """A health document without what depends on the moment it was read."""
    del document["generatedAt"], document["window"]["since"]
    for row in document["models"]:
        if row["lastFailure"]:
            del row["lastFailure"]["ageMs"]
    return document


def test_the_readme_systemd_unit_serves_reloads_and_stops_cleanly(serve, tmp_path, config_file):
    """The unit as written (its paths mapped under tmp, a free port instead of 3000)."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    unit = next(
        block
        for block in re.findall(r"```ini\n(.*?)```", readme, re.DOTALL)
        if block.startswith("# /etc/systemd/system/voicefallback-serve.service")
    )
    settings = dict(line.split("=", 1) for line in unit.splitlines() if "=" in line[:20])
    assert settings["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert int(settings["TimeoutStopSec"]) <= 10
    env_file = tmp_path / "env"
    env_file.write_text("VOICEFALLBACK_MODE=stub\n")
    places = {
        "/etc/voicefallback/env": str(env_file),
        "/etc/voicefallback/models.toml": str(config_file),
        "/var/lib/voicefallback/state.db": str(tmp_path / "state" / "state.db"),
        "/opt/voicefallback/venv/bin/voicefallback": str(
            Path(sys.executable).with_name("voicefallback")
        ),
    }
    command = settings["ExecStart"].replace("--port 3000", "--port 0")
    for path, local in places.items():
        command = command.replace(path, local)
    environment = dict(
        line.split("=", 1) for line in Path(places[settings["EnvironmentFile"]]).read_text().split()
    )
    server = serve(command=shlex.split(command), env={"PATH": "/usr/bin:/bin", **environment})
    try:
        assert server.get("/readyz").json()["status"] == "ready"
        server.wait_for_line(r"uvicorn.*startup complete")
        mark = len(server.lines)
        server.process.send_signal(signal.SIGHUP)  # systemctl reload
        server.wait_for_line(r"models.toml reloaded: 4 models", after=mark)
    finally:
        status = server.stop(signal.SIGTERM, timeout=10)  # systemctl stop
    assert status == 0
    assert (tmp_path / "state" / "state.db").exists()


def test_serve_on_postgresql_answers_the_same_and_never_shows_the_password(serve, pg_url):
    server = serve(env={"VOICEFALLBACK_DB": pg_url})
    a = server.post("/interviews/start", json={"simulationId": "sim-auto", "primary": SONNET})
    assert a.status_code == 200 and a.json()["chosen"] == MINI
    events = server.get("/fallbacks").json()["events"]
    assert [e["simulationId"] for e in events] == ["sim-auto"]
    assert server.get("/readyz").json()["status"] == "ready"
    page = server.get("/")
    assert page.status_code == 200 and "sim-auto" in page.text
    assert server.stop() == 0
    for text in (server.stderr, page.text, a.text):
        assert PASSWORD not in text


def test_a_database_that_stops_answering_never_hangs_a_route(serve, config_file, pg_url, pg_server):
    """Its tables locked (as `VACUUM FULL` locks them): a start still answers, degraded, after
    connect_timeout_s; a read route answers 503 after its deadline instead of hanging; the
    liveness probe is untouched; and the start is written once the lock is gone."""

    add_setting(config_file, "connect_timeout_s = 1")
    server = serve(env={"VOICEFALLBACK_DB": pg_url})
    warm = {"simulationId": "warm", "primary": SONNET}
    assert server.post("/interviews/start", json=warm).status_code == 200
    holder = pg_server.holder(pg_url)
    try:
        holder.execute("LOCK TABLE snapshots, events IN ACCESS EXCLUSIVE MODE")
        locked = {"simulationId": "locked", "primary": SONNET}
        started = server.post("/interviews/start", json=locked)
        health = server.get("/health")
        live = server.get("/livez")
    finally:
        holder.rollback()
        holder.close()
    assert started.status_code == 200 and started.json()["chosen"] == MINI
    assert started.json()["degraded"] is True
    # The start found it away (or busy) already: the read says so at once, not after its 10 s.
    error = health.json()["error"]
    assert health.status_code == 503
    assert "no answer within 1 s" in error or "busy for over 1 s" in error
    assert PASSWORD not in health.text
    assert live.status_code == 200
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the router reaches it again and writes the spool in
        events = server.get("/fallbacks")
        if events.status_code == 200 and len(events.json()["events"]) == 2:
            break
        server.post("/interviews/start", json={"simulationId": "back", "primary": MINI})
        time.sleep(0.2)
    assert [e["simulationId"] for e in events.json()["events"]] == ["locked", "warm"]
    assert server.stop() == 0


def test_a_state_database_out_of_reach_is_503_naming_the_host_not_the_password(serve):
    """Reads need the state: with its database down they fail fast, temporarily, and say where
    (a start would still decide, degraded; tests/test_degraded.py)."""
    url = "postgresql://vf:s3cret-pw@127.0.0.1:1/voicefallback"  # nothing listens on port 1
    server = serve(env={"VOICEFALLBACK_DB": url})
    for path in ("/health", "/fallbacks"):
        answer = server.get(path)
        assert answer.status_code == 503, answer.text
        assert "127.0.0.1" in answer.json()["error"] and "s3cret-pw" not in answer.text
    # Starts still go on, their writes spooled: still ready, saying the state is away.
    ready = server.get("/readyz")
    assert ready.status_code == 200 and ready.json()["state"] == "away", ready.text
    assert "127.0.0.1" in ready.json()["reason"] and "s3cret-pw" not in ready.text
    # The page left open on a second screen says so, and keeps refreshing until it is back.
    page = server.get("/")
    assert page.status_code == 503 and page.headers["content-type"].startswith("text/html")
    assert page.headers["retry-after"] == "1"  # as every other 503 of a busy or away state
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert '<meta http-equiv="refresh"' in page.text
    assert "state unavailable" in page.text and "127.0.0.1" in page.text
    assert "s3cret-pw" not in page.text
    assert server.stop() == 0
    assert "s3cret-pw" not in server.stderr


def test_a_state_file_that_is_not_ours_is_refused_before_listening(cli, tmp_path):
    foreign = tmp_path / "notours.db"
    foreign.write_bytes(b"garbage, not a state file\n")
    result = cli("serve", "--port", "0", "--db", str(foreign))
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "notours.db" in result.stderr
    assert foreign.read_bytes() == b"garbage, not a state file\n"
