"""What a person reads: ids print as given, never as markup or emoji, and are never cut."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import write_config

REGISTRY = """
[settings]
mode = "stub"
[providers.ollama]
type = "openai"
base_url = "http://localhost:11434/v1"
[[models]]
id = "ollama:tiger:"
stub = { error = "overloaded" }
[[models]]
id = "ollama:a-rather-long-model-name-that-would-not-fit-an-80-column-table:latest"
"""
SIM = "[bold red]sim[/] :fire: [/x]"


def test_ids_with_brackets_and_colons_print_as_themselves(cli):
    write_config(Path("models.toml"), REGISTRY)
    started = cli(
        "start", "--config", "models.toml", "--simulation-id", SIM, "--primary", "ollama:tiger:"
    )
    assert started.exit_code == 0, started.stderr
    assert SIM in started.stdout and "ollama:tiger:" in started.stdout
    assert "\N{TIGER FACE}" not in started.stdout and "\N{FIRE}" not in started.stdout
    listing = cli("fallbacks", "--config", "models.toml")
    assert listing.exit_code == 0, listing.stderr
    assert "ollama:tiger:" in listing.stdout and "[/x]" in listing.stdout.replace("\n", "")


def test_piped_tables_keep_whole_model_ids(tmp_path):
    config = write_config(tmp_path / "models.toml", REGISTRY)
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    env |= {"VOICEFALLBACK_CONFIG": str(config), "VOICEFALLBACK_DB": str(tmp_path / "s.db")}
    long_id = "ollama:a-rather-long-model-name-that-would-not-fit-an-80-column-table:latest"
    for command in (["probe"], ["health"], ["models"]):
        done = subprocess.run(
            [sys.executable, "-m", "voicefallback", *command],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert long_id in done.stdout, done.stdout
        assert "…" not in done.stdout


SHIPPED_IDS = [
    "openai:gpt-4o-mini",
    "anthropic:claude-3-5-sonnet-latest",
    "openai:gpt-4o",
    "anthropic:claude-3-5-haiku-latest",
]


def whole(model_id: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![\w:.-]){re.escape(model_id)}(?![\w.-])")


@pytest.mark.parametrize("columns", [60, 80, 200])
def test_ids_stay_whole_on_one_line_at_60_80_and_200_columns(cli, monkeypatch, columns):
    assert cli("start", "--simulation-id", "sim-auto", "--primary", SHIPPED_IDS[1]).exit_code == 0
    monkeypatch.setenv("COLUMNS", str(columns))
    for command in (("probe",), ("health",), ("models",), ("fallbacks",)):
        result = cli(*command)
        assert result.exit_code == 0, result.stderr
        lines = result.stdout.splitlines()
        assert all(len(line) <= columns for line in lines), (command, result.stdout)
        shown = [i for i in SHIPPED_IDS if any(whole(i).search(line) for line in lines)]
        expected = SHIPPED_IDS if command != ("fallbacks",) else SHIPPED_IDS[:2]
        assert shown == expected, (command, columns, result.stdout)
        assert "…" not in "".join(lines[:1]), result.stdout  # headers are not cut either
    events = cli("fallbacks").stdout
    assert "sim-auto" in events and "primary_unhealthy" in events


def test_wide_terminals_keep_every_column(cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    cli("probe")
    header = cli("health").stdout
    for column in ("model", "status", "for", "TTFT", "p50/p95", "success", "checked", "fails"):
        assert f" {column} " in header, header
    monkeypatch.setenv("COLUMNS", "80")
    narrow = cli("health").stdout
    assert " p50/p95 " not in narrow and " TTFT " in narrow  # secondary columns went first


def test_human_output_names_the_registry_and_state_file_in_full(cli, config_file, db_file):
    for command in (
        ("probe",),
        ("start", "--simulation-id", "s", "--primary", SHIPPED_IDS[0]),
        ("health",),
        ("models",),
    ):
        result = cli(*command)
        assert result.exit_code == 0, result.stderr
        lines = result.stdout.splitlines()
        assert f"registry: {config_file.resolve()}" in lines, (command, result.stdout)
        assert f"state:    {db_file.resolve()}" in lines, (command, result.stdout)
    assert f"state:    {db_file.resolve()}" in cli("fallbacks").stdout.splitlines()


def test_relative_paths_are_shown_absolute(cli, isolated, monkeypatch):
    monkeypatch.setenv("VOICEFALLBACK_CONFIG", "models.toml")
    monkeypatch.setenv("VOICEFALLBACK_DB", "here.db")
    lines = cli("probe").stdout.splitlines()
    assert f"registry: {isolated / 'models.toml'}" in lines
    assert f"state:    {isolated / 'here.db'}" in lines


def test_what_a_provider_said_cannot_drive_the_terminal(cli, db_file):
    from voicefallback.config import Thresholds
    from voicefallback.health import apply_probe
    from voicefallback.records import ProbeResult, utcnow
    from voicefallback.store import open_store

    said = "\x1b[2J\x1b]0;pwned\x07 evil\u202etxt.exe"
    failure = ProbeResult(
        model=SHIPPED_IDS[0], ok=False, at=utcnow(), error="server_error", message=said
    )
    with open_store(db_file, write=True) as store:
        store.record([failure], {SHIPPED_IDS[0]: Thresholds()}, update=apply_probe)
    result = cli("health", "--history", SHIPPED_IDS[0])
    assert result.exit_code == 0, result.stderr
    assert "\x1b" not in result.stdout and "\u202e" not in result.stdout
    assert "\\u001b[2J" in result.stdout and "\\u202etxt.exe" in result.stdout


def test_the_start_panel_says_when_the_chosen_model_is_slow(cli):
    slow_only = """
[settings]
mode = "stub"
[providers.p]
type = "openai"
[[models]]
id = "p:slow"
ttft_budget_ms = 100
stub = { ttft_ms = 400, latency_ms = 600 }
"""
    write_config(Path("models.toml"), slow_only)
    started = cli("start", "--simulation-id", "s", "--primary", "p:slow")
    assert started.exit_code == 0, started.stderr
    assert "slow: first token over its 100 ms budget" in started.stdout, started.stdout


def test_the_start_panel_says_when_the_start_was_not_recorded(cli, config_file):
    pytest.importorskip("psycopg")  # the postgres extra (absent from the dependency-floor run)
    unreachable = "postgresql://nobody@127.0.0.1:1/state"  # nothing listens on port 1
    started = cli("start", "--simulation-id", "s", "--primary", SHIPPED_IDS[0], "--db", unreachable)
    assert started.exit_code == 0, started.stderr
    panel = " ".join(started.stdout.split())
    assert "degraded: 1 call not recorded" in panel, started.stdout
    assert "cannot reach the state database" in panel


MAVERICK = "groq:meta-llama/llama-4-maverick-17b-128e-instruct"
WITH_A_LONG_ID = f"""
[settings]
mode = "stub"
[providers.openai]
type = "openai"
[providers.anthropic]
type = "anthropic"
[providers.groq]
type = "openai"
base_url = "https://api.groq.com/openai/v1"
[[models]]
id = "openai:gpt-4o-mini"
[[models]]
id = "anthropic:claude-3-5-sonnet-latest"
stub = {{ error = "overloaded" }}
[[models]]
id = "{MAVERICK}"
stub = {{ error = "not_found" }}
"""


@pytest.mark.parametrize("columns", [60, 80])
def test_a_long_id_stays_whole_and_the_reason_stays_in_sight(cli, monkeypatch, columns):
    """Narrow terminals: ids never break across lines, and the error that says why a model
    is down is never among the columns that give way."""
    write_config(Path("models.toml"), WITH_A_LONG_ID)
    monkeypatch.setenv("COLUMNS", str(columns))
    for command in ("probe", "health", "models"):
        result = cli(command)
        assert result.exit_code == 0, result.stderr
        lines = result.stdout.splitlines()
        assert all(len(line) <= columns for line in lines), result.stdout
        assert any(whole(MAVERICK).search(line) for line in lines), (command, result.stdout)
        if command != "models":
            assert "not_found" in result.stdout and "overloaded" in result.stdout, result.stdout


def test_history_keeps_each_time_whole_at_60_columns(cli, monkeypatch):
    cli("probe")
    cli("probe")
    monkeypatch.setenv("COLUMNS", "60")
    result = cli("health", "--history", SHIPPED_IDS[1])
    assert result.exit_code == 0, result.stderr
    times = re.findall(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", result.stdout)
    assert len(times) == 3, result.stdout  # one status change, two probes
    assert "…" not in result.stdout and "overloaded" in result.stdout


def test_fallbacks_keeps_what_was_passed_over_at_200_columns(cli, monkeypatch):
    long_sim = "interview-" + "x" * 40
    cli("start", "--simulation-id", long_sim, "--primary", SHIPPED_IDS[1])
    cli(
        "start", "--simulation-id", "s2", "--primary", SHIPPED_IDS[1], "--fallback", "openai:gpt-4o"
    )
    monkeypatch.setenv("COLUMNS", "200")
    result = cli("fallbacks")
    assert result.exit_code == 0, result.stderr
    assert " passed over " in result.stdout, result.stdout
    assert f"{SHIPPED_IDS[1]} unhealthy (overloaded)" in result.stdout
    assert long_sim in result.stdout
