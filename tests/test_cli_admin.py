"""`init` writes a starter registry a PyPI user can run at once; `models` lists the registry."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from voicefallback.config import load_registry
from voicefallback.starter import STARTER_TOML


def test_init_writes_a_starter_that_probes_and_starts_in_stub_mode(isolated: Path, bare_cli):
    target = isolated / "conf" / "models.toml"
    result = bare_cli("init", "--config", str(target), "--json")
    assert result.exit_code == 0, result.stderr
    state = Path(os.environ["XDG_STATE_HOME"]) / "voicefallback" / "state.db"
    assert json.loads(result.stdout) == {"config": str(target), "created": True, "db": str(state)}
    assert target.read_text() == STARTER_TOML
    assert not stat.S_IMODE(target.stat().st_mode) & 0o022  # nobody else may change it
    registry = load_registry(target)
    assert registry.mode == "stub" and len(registry.models) >= 2

    db = str(isolated / "state.db")
    probe = bare_cli("probe", "--config", str(target), "--db", db, "--json")
    assert probe.exit_code == 0, probe.stderr
    start = bare_cli(
        "start",
        "--config",
        str(target),
        "--db",
        db,
        "--simulation-id",
        "demo",
        "--primary",
        "openai:gpt-4o",
        "--json",
    )
    assert start.exit_code == 0, start.stderr
    assert '"usedFallback": true' in start.stdout  # the starter shows a fallback in stub mode


def test_init_refuses_to_overwrite(isolated: Path, bare_cli):
    target = isolated / "models.toml"
    target.write_text("# mine\n")
    result = bare_cli("init", "--config", str(target))
    assert result.exit_code == 2
    assert "already exists" in result.stderr and str(target) in result.stderr
    assert result.stdout == ""
    assert target.read_text() == "# mine\n"


def test_init_defaults_to_the_user_config_dir_where_commands_look(isolated: Path, bare_cli):
    result = bare_cli("init")
    assert result.exit_code == 0, result.stderr
    written = Path(os.environ["XDG_CONFIG_HOME"]) / "voicefallback" / "models.toml"
    assert written.read_text() == STARTER_TOML
    assert str(written) in result.stdout
    # No --config, no ./models.toml: every command now finds the starter.
    models = bare_cli("models", "--json")
    assert models.exit_code == 0, models.stderr
    assert '"config": "' + str(written) in models.stdout


def test_init_follows_the_config_variable(isolated: Path, bare_cli, monkeypatch):
    target = isolated / "from-env.toml"
    monkeypatch.setenv("VOICEFALLBACK_CONFIG", str(target))
    result = bare_cli("init", "--json")
    assert result.exit_code == 0 and target.exists()


@pytest.mark.usefixtures("config_file")
def test_models_lists_the_registry_in_order_with_status(cli, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret-value")
    before = cli("models", "--json")
    assert before.exit_code == 0
    assert [m["status"] for m in before.json["models"]] == ["unknown"] * 4
    cli("probe")
    doc = cli("models", "--json").json
    assert doc["mode"] == "stub"
    assert [(m["model"], m["status"]) for m in doc["models"]] == [
        ("openai:gpt-4o-mini", "healthy"),
        ("anthropic:claude-3-5-sonnet-latest", "unhealthy"),
        ("openai:gpt-4o", "healthy"),
        ("anthropic:claude-3-5-haiku-latest", "healthy"),
    ]
    mini = doc["models"][0]
    assert mini["apiKeyEnv"] == "OPENAI_API_KEY" and mini["apiKeySet"] is True
    assert doc["models"][1]["apiKeySet"] is False
    assert doc["models"][1]["ttftBudgetMs"] == 1200 and mini["timeoutMs"] == 10000
    assert "sk-test-secret-value" not in cli("models", "--json").stdout
    table = cli("models").stdout
    lines = {line.split()[3]: line for line in table.splitlines() if "_API_KEY" in line}
    assert "OPENAI_API_KEY" in lines["openai:gpt-4o-mini"]
    assert "unset" not in lines["openai:gpt-4o-mini"]
    assert "ANTHROPIC_API_KEY unset" in lines["anthropic:claude-3-5-sonnet-latest"]
    assert "sk-test" not in table


def test_prune_on_postgresql_speaks_of_tables_not_a_file(cli, pg_url, monkeypatch):
    monkeypatch.setenv("VOICEFALLBACK_DB", pg_url)
    assert cli("probe").exit_code == 0
    result = cli("prune", "--vacuum")
    assert result.exit_code == 0, result.stderr
    assert "state file" not in result.stdout, result.stdout
    assert "; state tables " in result.stdout
    assert "(vacuumed: the freed space is reused by new rows)" in result.stdout


def test_prune_on_sqlite_speaks_of_the_file(cli, db_file):
    assert cli("probe").exit_code == 0
    result = cli("prune", "--vacuum")
    assert result.exit_code == 0, result.stderr
    assert "; state file " in result.stdout and result.stdout.rstrip().endswith("(vacuumed)")
