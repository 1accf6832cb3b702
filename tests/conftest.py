"""Every test runs in its own directory with its own registry, state file and user dirs."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.pg_server import PostgresServer, missing_reason
from voicefallback.cli import main

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
def bare_cli(
    isolated: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Run]:
    """`voicefallback ARGS` as a user runs it: the real entry point, `main()`, in-process, so
    usage errors, exit codes and signal handling are what users get. stdout and stderr are kept
    apart, as a shell would see them; stdin is `input` (or empty). No registry or state is set
    beyond the test's own user dirs; `cli` is the same with both set."""

    def run(*args: str, input: str | bytes | None = None) -> Run:
        data = input.encode() if isinstance(input, str) else input or b""
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))
        monkeypatch.setattr(sys, "argv", ["voicefallback", *args])
        handlers = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
        capsys.readouterr()
        try:
            main()
        except SystemExit as done:
            code = done.code
        else:
            raise AssertionError("main() returned instead of exiting")
        finally:  # main() installs its own SIGTERM and SIGINT handlers
            signal.signal(signal.SIGTERM, handlers[0])
            signal.signal(signal.SIGINT, handlers[1])
        out, err = capsys.readouterr()
        return Run(code if isinstance(code, int) else 0 if code is None else 1, out, err)

    return run


@pytest.fixture
def cli(config_file: Path, db_file: Path, bare_cli: Callable[..., Run]) -> Callable[..., Run]:
    """`bare_cli` with the test's copy of the shipped models.toml and its own state file."""
    return bare_cli


def write_config(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def add_setting(path: Path, line: str) -> None:
    """One more line in models.toml's [settings] table, e.g. `connect_timeout_s = 1`."""
    path.write_text(path.read_text().replace("[settings]", f"[settings]\n{line}"), "utf-8")
