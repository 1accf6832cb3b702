"""Every command explains itself: a one-line summary, an example, and help on every option."""

from __future__ import annotations

import pytest
import typer

from voicefallback.cli import app

ROOT = typer.main.get_command(app)
# Every command, and every subcommand of a group ("state copy"), by the words that run it.
ALL: dict[str, typer.core.TyperCommand] = {}
for _name, _command in ROOT.commands.items():  # type: ignore[attr-defined]
    ALL[_name] = _command
    for _sub, _subcommand in getattr(_command, "commands", {}).items():
        ALL[f"{_name} {_sub}"] = _subcommand
COMMANDS = sorted(ALL)
LEAVES = sorted(name for name, command in ALL.items() if not hasattr(command, "commands"))
EXPECTED = {"probe", "health", "start", "fallbacks", "init", "models"}


def test_the_documented_commands_exist():
    assert set(COMMANDS) >= EXPECTED


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_has_a_summary_and_an_example(name):
    command = ALL[name]
    text = command.help or ""
    summary = text.strip().splitlines()[0]
    assert summary and summary.endswith("."), f"{name}: one-line summary missing"
    assert len(summary) <= 100
    assert f"Example: voicefallback {name}" in text, f"{name}: no example in --help"


@pytest.mark.parametrize("name", COMMANDS)
def test_every_option_and_argument_has_help(name):
    command = ALL[name]
    for param in command.params:
        if param.name == "help":
            continue
        assert getattr(param, "help", None), f"{name}: {param.name} has no help text"


@pytest.mark.parametrize("name", COMMANDS)
def test_help_output_shows_the_example(name, bare_cli):
    result = bare_cli(*name.split(), "--help")
    assert result.exit_code == 0
    assert "Example: voicefallback" in result.stdout
    first = (ALL[name].help or "").splitlines()[0]
    assert first in result.stdout


def test_root_help_lists_every_command_with_its_summary(bare_cli):
    result = bare_cli("--help")
    assert result.exit_code == 0
    for name in ROOT.commands:  # type: ignore[attr-defined]
        assert name in result.stdout
    for option in ROOT.params:
        if option.name != "help":
            assert getattr(option, "help", None), option.name


def test_every_command_accepts_config_db_and_json():
    """SPEC: every subcommand accepts --config, --db and --json."""
    for name in LEAVES:
        options = {opt for p in ALL[name].params for opt in p.opts}
        assert {"--config", "--db", "--json"} <= options, name


@pytest.mark.parametrize("name", COMMANDS)
def test_help_texts_survive_rich_markup(name, bare_cli):
    """Typer renders help as rich markup: text in [brackets] would silently vanish."""
    for param in ALL[name].params:
        assert "[" not in (getattr(param, "help", None) or ""), f"{name}: {param.name}"
    result = bare_cli(*name.split(), "--help")
    if any("--config" in p.opts for p in ALL[name].params):
        assert "VOICEFALLBACK_CONFIG" in result.stdout and "VOICEFALLBACK_DB" in result.stdout
