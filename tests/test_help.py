"""Every command explains itself: a one-line summary, an example, and help on every option."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from voicefallback.cli import app

ROOT = typer.main.get_command(app)
COMMANDS = sorted(ROOT.commands)  # type: ignore[attr-defined]
EXPECTED = {"probe", "health", "start", "fallbacks", "init", "models"}


def test_the_documented_commands_exist():
    assert set(COMMANDS) >= EXPECTED


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_has_a_summary_and_an_example(name):
    command = ROOT.commands[name]  # type: ignore[attr-defined]
    text = command.help or ""
    summary = text.strip().splitlines()[0]
    assert summary and summary.endswith("."), f"{name}: one-line summary missing"
    assert len(summary) <= 100
    assert f"Example: voicefallback {name}" in text, f"{name}: no example in --help"


@pytest.mark.parametrize("name", COMMANDS)
def test_every_option_and_argument_has_help(name):
    command = ROOT.commands[name]  # type: ignore[attr-defined]
    for param in command.params:
        if param.name == "help":
            continue
        assert getattr(param, "help", None), f"{name}: {param.name} has no help text"


@pytest.mark.parametrize("name", COMMANDS)
def test_help_output_shows_the_example(name):
    result = CliRunner().invoke(app, [name, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "Example: voicefallback" in result.stdout
    first = (ROOT.commands[name].help or "").splitlines()[0]  # type: ignore[attr-defined]
    assert first in result.stdout


def test_root_help_lists_every_command_with_its_summary():
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for name in COMMANDS:
        assert name in result.stdout
    for option in ROOT.params:
        if option.name != "help":
            assert getattr(option, "help", None), option.name


def test_every_command_accepts_config_db_and_json():
    """SPEC: every subcommand accepts --config, --db and --json."""
    for name in COMMANDS:
        options = {opt for p in ROOT.commands[name].params for opt in p.opts}  # type: ignore[attr-defined]
        assert {"--config", "--db", "--json"} <= options, name


@pytest.mark.parametrize("name", COMMANDS)
def test_help_texts_survive_rich_markup(name):
    """Typer renders help as rich markup: text in [brackets] would silently vanish."""
    for param in ROOT.commands[name].params:  # type: ignore[attr-defined]
        assert "[" not in (getattr(param, "help", None) or ""), f"{name}: {param.name}"
    result = CliRunner().invoke(app, [name, "--help"], env={"COLUMNS": "200"})
    if any("--config" in p.opts for p in ROOT.commands[name].params):  # type: ignore[attr-defined]
        assert "VOICEFALLBACK_CONFIG" in result.stdout and "VOICEFALLBACK_DB" in result.stdout
