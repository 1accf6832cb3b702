"""Every test runs in its own directory with its own registry, state file and user dirs."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.pg_server import PostgresServer, missing_reason
from voicefallback.cli import app

REPO = Path(__file__).resolve().parent.parent
SHIPPED_CONFIG = REPO / "models.toml"
KEY_VARIABLES = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GROQ_API_KEY")


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(home / ".local" / "state"))
    for name in ("VOICEFALLBACK_CONFIG", "VOICEFALLBACK_DB", "VOICEFALLBACK_MODE", *KEY_VARIABLES):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "200")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


@pytest.fixture
def config_file(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The shipped models.toml, copied into the test's own directory."""
    path = isolated / "models.toml"
    shutil.copy(SHIPPED_CONFIG, path)
    monkeypatch.setenv("VOICEFALLBACK_CONFIG", str(path))
    return path


@pytest.fixture
def db_file(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = isolated / "state" / "state.db"
    monkeypatch.setenv("VOICEFALLBACK_DB", str(path))
    return path


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL server for the whole run (see tests/pg_server.py)."""
    reason = missing_reason()
    if reason is not None:
        if os.environ.get("CI", "").lower() not in ("", "0", "false"):
            pytest.fail(f"PostgreSQL tests must run in CI, but cannot: {reason}")
        pytest.skip(f"PostgreSQL tests skipped: {reason}")
    server = PostgresServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def pg_url(pg_server: PostgresServer) -> str:
    """A fresh, empty database on the test server (password in the URL, over TCP)."""
    return pg_server.new_database()


@pytest.fixture(params=["sqlite", "postgres"])
def state(
    request: pytest.FixtureRequest, db_file: Path, monkeypatch: pytest.MonkeyPatch
) -> Path | str:
    """VOICEFALLBACK_DB on each backend in turn: the test's SQLite file, or a fresh
    PostgreSQL database."""
    if request.param == "sqlite":
        return db_file
    url: str = request.getfixturevalue("pg_url")
    monkeypatch.setenv("VOICEFALLBACK_DB", url)
    return url


@dataclass
class Run:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        return json.loads(self.stdout)


@pytest.fixture
def cli(config_file: Path, db_file: Path) -> Callable[..., Run]:
    """Run a command in-process; stdout and stderr kept apart, as a shell would see them."""
    runner = CliRunner()

    def run(*args: str, input: str | None = None) -> Run:
        result = runner.invoke(app, list(args), input=input, catch_exceptions=False)
        return Run(result.exit_code, result.stdout, result.stderr)

    return run


def write_config(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path
