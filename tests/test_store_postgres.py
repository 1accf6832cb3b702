"""The state on PostgreSQL, against a real throwaway server: the same documents as on
SQLite, the same schema built once, foreign or newer databases refused, no password shown."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SHIPPED_CONFIG
from tests.pg_server import PASSWORD, PostgresServer, rows
from voicefallback.store import SCHEMA_VERSION

SONNET = "anthropic:claude-3-5-sonnet-latest"
VARYING = {"ageMs", "bytesBefore", "bytesAfter", "bytesFreed"}  # clock- or backend-bound
ISO_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")

SCENARIO: list[tuple[str, ...]] = [
    ("health", "--json"),
    ("fallbacks", "--json"),
    ("models", "--json"),
    ("probe", "--json"),
    ("start", "--simulation-id", "sim-auto", "--primary", SONNET, "--json"),
    (
        "start",
        "--simulation-id",
        "sim-caller",
        "--primary",
        SONNET,
        "--fallback",
        "openai:gpt-4o",
        "--fallback",
        "openai:gpt-4o-mini",
        "--json",
    ),
    ("start", "--simulation-id", "sim-healthy", "--primary", "openai:gpt-4o-mini", "--json"),
    ("report", "openai:gpt-4o-mini", "--ttft-ms", "420", "--simulation-id", "sim-1", "--json"),
    ("report", "openai:gpt-4o", "--error", "stalled", "--json"),
    ("probe", "--if-older", "1h", "--json"),
    ("health", "--json"),
    ("health", "--history", SONNET, "--json"),
    ("fallbacks", "--json"),
    ("fallbacks", "--simulation-id", "sim-auto", "--json"),
    ("fallbacks", "--limit", "1", "--json"),
    ("models", "--json"),
    ("prune", "--events-older-than", "1", "--json"),
]


def normalized(document: Any) -> Any:
    """Times and sizes differ between runs and backends; everything else must not."""
    if isinstance(document, dict):
        return {
            key: "<varies>" if key in VARYING else normalized(value)
            for key, value in document.items()
        }
    if isinstance(document, list):
        return [normalized(item) for item in document]
    if isinstance(document, str):
        return ISO_TIME.sub("<time>", document)
    return document


def scenario_documents(cli: Any) -> list[tuple[tuple[str, ...], int, Any]]:
    outcomes = []
    for command in SCENARIO:
        result = cli(*command)
        assert result.stderr == "", (command, result.stderr)
        outcomes.append((command, result.exit_code, normalized(result.json)))
    return outcomes


def test_every_json_document_is_identical_on_both_backends(cli, db_file, pg_url, monkeypatch):
    on_sqlite = scenario_documents(cli)
    monkeypatch.setenv("VOICEFALLBACK_DB", pg_url)
    on_postgres = scenario_documents(cli)
    for (command, *pg), (_, *lite) in zip(on_postgres, on_sqlite, strict=True):
        assert pg == lite, command
    assert db_file.exists()  # the SQLite run really used its file...
    assert rows(pg_url, "SELECT count(*) FROM events") == [(2,)]  # ...and this one the server


def test_a_url_is_used_untouched_and_no_local_file_is_made(cli, pg_url, monkeypatch, isolated):
    monkeypatch.setenv("VOICEFALLBACK_DB", "/nonexistent/ignored.db")
    assert cli("probe", "--db", pg_url, "--json").exit_code == 0
    assert rows(pg_url, "SELECT count(*) > 0 FROM probes") == [(True,)]
    state_dir = isolated.parent / "home" / ".local" / "state"
    assert not state_dir.exists()
    assert [p.name for p in isolated.iterdir()] == ["models.toml"]  # no stray SQLite file


def test_schema_is_built_by_numbered_migrations_recorded_once(pg_url):
    from voicefallback.store import open_store

    with open_store(pg_url, write=True):
        pass
    with open_store(pg_url, write=True):  # up to date: nothing runs again
        pass
    assert rows(pg_url, "SELECT number, name FROM migrations ORDER BY number") == [
        (1, "m001_initial"),
        (2, "m002_operations"),
        (3, "m003_spool"),
    ]
    assert len(rows(pg_url, "SELECT 1 FROM migrations")) == SCHEMA_VERSION


def test_many_hosts_starting_at_once_migrate_exactly_once(pg_url, config_file):
    code = (
        "import sys; from voicefallback.store import open_store;"
        " open_store(sys.argv[1], write=True).close()"
    )
    processes = [
        subprocess.Popen([sys.executable, "-c", code, pg_url], stderr=subprocess.PIPE, text=True)
        for _ in range(8)
    ]
    errors = [p.communicate(timeout=60)[1] for p in processes]
    assert [p.returncode for p in processes] == [0] * 8, errors
    assert rows(pg_url, "SELECT count(*) FROM migrations") == [(SCHEMA_VERSION,)]


def _catalog(pg_server: PostgresServer, url: str) -> list[tuple[Any, ...]]:
    dbname = url.rsplit("/", 1)[1]
    return pg_server.admin(
        "SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n"
        " ON n.oid = c.relnamespace WHERE n.nspname = 'public' ORDER BY 1",
        dbname,
    )


@pytest.mark.parametrize("command", [("probe", "--json"), ("health", "--json")])
def test_a_database_holding_other_tables_is_refused_and_left_unchanged(
    cli, pg_url, pg_server, monkeypatch, command
):
    dbname = pg_url.rsplit("/", 1)[1]
    pg_server.admin("CREATE TABLE users (id int); INSERT INTO users VALUES (1)", dbname)
    pg_server.admin("ALTER TABLE users OWNER TO vf", dbname)
    before = _catalog(pg_server, pg_url)
    monkeypatch.setenv("VOICEFALLBACK_DB", pg_url)
    result = cli(*command)
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert "not a voicefallback state database" in result.stderr and "users" in result.stderr
    assert _catalog(pg_server, pg_url) == before


def test_a_database_from_a_newer_version_is_refused_and_left_unchanged(
    cli, pg_url, pg_server, monkeypatch
):
    monkeypatch.setenv("VOICEFALLBACK_DB", pg_url)
    assert cli("probe", "--json").exit_code == 0
    dbname = pg_url.rsplit("/", 1)[1]
    pg_server.admin(
        f"INSERT INTO migrations VALUES ({SCHEMA_VERSION + 1}, 'm_future', 'x')", dbname
    )
    before = rows(pg_url, "SELECT count(*) FROM probes")
    for command in (("probe", "--json"), ("health", "--json"), ("fallbacks", "--json")):
        result = cli(*command)
        assert result.exit_code == 2 and result.stdout == "", command
        assert "written by a newer voicefallback" in result.stderr
    assert rows(pg_url, "SELECT count(*) FROM probes") == before


def test_reading_an_empty_database_creates_nothing(cli, pg_url, pg_server, monkeypatch):
    monkeypatch.setenv("VOICEFALLBACK_DB", pg_url)
    assert cli("health", "--json").exit_code == 0
    assert cli("fallbacks", "--json").json["events"] == []
    assert _catalog(pg_server, pg_url) == []


def test_an_unreachable_server_is_one_line_naming_the_host_never_the_password(
    cli, pg_server, monkeypatch
):
    url = f"postgresql://vf:{PASSWORD}@127.0.0.1:1/nowhere"
    monkeypatch.setenv("VOICEFALLBACK_DB", url)
    for command in (("health", "--json"), ("fallbacks", "--json"), ("probe", "--json")):
        result = cli(*command)
        assert result.exit_code == 75 and result.stdout == "", command  # temporary: try again
        assert result.stderr.count("\n") == 1, result.stderr
        assert "127.0.0.1:1" in result.stderr and "cannot reach" in result.stderr
        assert PASSWORD not in result.stderr


def test_a_wrong_password_is_refused_without_printing_either_password(
    cli, pg_server, pg_url, monkeypatch
):
    wrong = "wrong-pw-Zq81xx"
    monkeypatch.setenv("VOICEFALLBACK_DB", pg_url.replace(PASSWORD, wrong))
    monkeypatch.setenv("PGPASSWORD", PASSWORD)  # the URL's password wins over it
    result = cli("health", "--json")
    assert result.exit_code == 2 and result.stdout == ""
    assert "password authentication failed" in result.stderr
    assert wrong not in result.stderr and PASSWORD not in result.stderr


def test_pgpassword_supplies_the_password_and_init_never_prints_one(
    cli, pg_server, pg_url, monkeypatch
):
    monkeypatch.setenv("PGPASSWORD", PASSWORD)
    monkeypatch.setenv("VOICEFALLBACK_DB", pg_url.replace(f":{PASSWORD}", ""))
    assert cli("probe", "--json").exit_code == 0
    monkeypatch.setenv("VOICEFALLBACK_DB", pg_url)
    result = cli("init", "--json", "--config", "new.toml")
    assert result.exit_code == 0, result.stderr
    assert PASSWORD not in result.stdout and result.json["db"].startswith("postgresql://vf@")


def test_without_the_driver_a_url_gets_a_one_line_hint(tmp_path):
    code = (
        "import sys; sys.modules['psycopg'] = None\n"
        "from voicefallback.cli import main\n"
        "sys.argv = ['voicefallback', 'health', '--json']\n"
        "main()\n"
    )
    env = {
        "VOICEFALLBACK_CONFIG": str(SHIPPED_CONFIG),
        "VOICEFALLBACK_DB": "postgresql://vf@127.0.0.1:1/x",
        "HOME": str(tmp_path),
        "PATH": "/usr/bin:/bin",
    }
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1
    assert "pip install 'voicefallback[postgres]'" in done.stderr


def test_connections_time_out_after_connect_timeout_s(cli, config_file, monkeypatch):
    """A host that never answers (a listening socket that never accepts) is given up on."""
    import socket

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(0)
        port = silent.getsockname()[1]
        text = config_file.read_text().replace("[settings]", "[settings]\nconnect_timeout_s = 1")
        config_file.write_text(text)
        monkeypatch.setenv("VOICEFALLBACK_DB", f"postgresql://vf@127.0.0.1:{port}/x")
        result = cli("probe", "--json")
    assert result.exit_code == 75 and "cannot reach" in result.stderr, result.stderr


def test_documents_keep_their_shape_in_json(cli, state):
    """Smoke over both backends: start writes, health reads it back."""
    assert cli("start", "--simulation-id", "s", "--primary", SONNET, "--json").exit_code == 0
    health = cli("health", "--json").json
    assert {m["model"] for m in health["models"] if m["status"] != "unknown"} >= {SONNET}
    assert json.loads(json.dumps(health)) == health


def test_state_paths_and_urls_are_told_apart():
    from voicefallback.environment import db_path, display_location

    url = f"postgresql://vf:{PASSWORD}@db.example:5433/vf?sslmode=require&password=x"
    assert db_path(url) == url
    assert db_path("postgres://h/db") == "postgres://h/db"
    assert db_path("state.db") == Path("state.db")
    shown = display_location(url)
    assert shown == "postgresql://vf@db.example:5433/vf?sslmode=require"


def test_the_status_board_reads_the_same_on_both_backends(cli, state):
    """The status page's figures (success rates, first-token series) from either backend."""
    from voicefallback.config import load_registry
    from voicefallback.records import utcnow
    from voicefallback.reports import status_board

    assert cli("probe", "--json").exit_code == 0
    assert cli("start", "--simulation-id", "s", "--primary", SONNET, "--json").exit_code == 0
    registry = load_registry(SHIPPED_CONFIG)
    board = status_board(registry.models, state, utcnow())
    by_model = {row.health.model.id: row for row in board.models}
    mini = by_model["openai:gpt-4o-mini"]
    assert [rate.calls for rate in mini.success] == [2, 2, 2]  # the probe, the opening call
    assert sum(bucket.calls for bucket in mini.series) == 2
    assert all(bucket.ttft_ms == 180 for bucket in mini.series)
    assert [e.simulation_id for e in board.events] == ["s"]


def test_a_pgpass_file_supplies_the_password(cli, pg_url, monkeypatch, isolated):
    home = Path(str(isolated.parent / "home"))  # the test's HOME (conftest)
    url = pg_url.replace(f":{PASSWORD}@", "@")
    host_port_db = url.split("@", 1)[1]
    host, _, rest = host_port_db.partition(":")
    port, _, dbname = rest.partition("/")
    pgpass = home / ".pgpass"
    pgpass.write_text(f"{host}:{port}:{dbname}:vf:{PASSWORD}\n")
    pgpass.chmod(0o600)
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", str(pgpass))  # libpq's own default is ~/.pgpass
    result = cli("probe", "--db", url, "--json")
    assert result.exit_code == 0, result.stderr
    assert PASSWORD not in result.stdout + result.stderr


def test_a_schema_of_its_own_in_a_shared_database(cli, pg_url, pg_server, monkeypatch):
    """A database that holds other tables is fine when voicefallback gets its own schema."""
    dbname = pg_url.rsplit("/", 1)[1]
    pg_server.admin("CREATE TABLE users (id int); ALTER TABLE users OWNER TO vf", dbname)
    pg_server.admin("CREATE SCHEMA voicefallback AUTHORIZATION vf", dbname)
    url = f"{pg_url}?options=-csearch_path%3Dvoicefallback"
    monkeypatch.setenv("VOICEFALLBACK_DB", url)
    assert cli("probe", "--json").exit_code == 0
    assert cli("health", "--json").exit_code == 0
    tables = pg_server.admin(
        "SELECT schemaname, count(*) FROM pg_tables WHERE tablename IN ('probes', 'users')"
        " GROUP BY 1 ORDER BY 1",
        dbname,
    )
    assert tables == [("public", 1), ("voicefallback", 1)]
