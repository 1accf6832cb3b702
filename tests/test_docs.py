"""Every command explains itself (a one-line summary, an example, help on every option), and
the README documents every command and every option its `--help` shows."""

from __future__ import annotations

import inspect
import json
import re

import pytest
import typer

from tests.conftest import REPO
from voicefallback.cli import app

pytest_plugins = ["tests.conftest_serve"]

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
def test_help_paragraphs_wrap_to_the_terminal_not_mid_sentence(name):
    """Typer keeps the line breaks of every docstring paragraph after the first: a paragraph
    written over two lines prints over two lines, broken mid-sentence at any width."""
    paragraphs = inspect.cleandoc(ALL[name].help or "").split("\n\n")[1:]
    broken = [p for p in paragraphs if "\n" in p]
    assert not broken, f"{name}: write each paragraph on one line: {broken}"


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
    """README "Files": every command accepts --config, --db and --json."""
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


# -- the README ----------------------------------------------------------------------------


def readme_sections() -> tuple[str, dict[str, str]]:
    """The README's opening sections (what every command shares: `--json`, the Files table),
    and each command's own documentation: every section whose heading names the command in
    backticks, down to the next heading of the same or a higher level."""
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    headings = []  # (line number, level, text), outside code blocks
    fenced = False
    for number, line in enumerate(lines):
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (match := re.match(r"(#+) (.*)", line)):
            headings.append((number, len(match[1]), match[2]))
    opening = "\n".join(lines[: next(n for n, _, text in headings if text == "models.toml")])
    sections: dict[str, str] = {}
    for i, (number, level, text) in enumerate(headings):
        end = next((n for n, lv, _ in headings[i + 1 :] if lv <= level), len(lines))
        for name in re.findall(r"`([a-z][a-z ]*)`", text):
            sections[name] = sections.get(name, "") + "\n".join(lines[number:end])
    return opening, sections


OPENING, SECTIONS = readme_sections()


def shown_options(command: typer.core.TyperCommand) -> list[str]:
    """The long options `--help` shows for a command, each name of each (`--x/--no-x`)."""
    return [
        name
        for param in command.params
        if param.param_type_name == "option" and not getattr(param, "hidden", False)
        for name in (*param.opts, *param.secondary_opts)
        if name.startswith("--") and name != "--help"
    ]


def mentioned(option: str, text: str) -> bool:
    return re.search(re.escape(option) + r"(?![\w-])", text) is not None


def test_every_command_has_a_readme_section():
    missing = [name for name in LEAVES if name not in SECTIONS]
    assert not missing, f"commands without a README section (### `name` — ...): {missing}"


@pytest.mark.parametrize("name", LEAVES)
def test_every_option_in_help_is_in_the_readme(name, bare_cli):
    """Each option `--help` shows is in the command's README section, or in the opening
    sections for the options every command shares (`--config`, `--db`, `--mode`, `--json`)."""
    help_text = bare_cli(*name.split(), "--help").stdout
    options = shown_options(ALL[name])
    assert options and all(mentioned(option, help_text) for option in options)
    section = SECTIONS.get(name, "")
    missing = [o for o in options if not mentioned(o, section) and not mentioned(o, OPENING)]
    assert not missing, f"{name}: options in --help but not in its README section: {missing}"


def test_root_options_are_in_the_readme_opening(bare_cli):
    help_text = bare_cli("--help").stdout
    options = shown_options(ROOT)
    assert all(mentioned(option, help_text) for option in options)
    missing = [o for o in options if not mentioned(o, OPENING)]
    assert not missing, f"root options in --help but not in the README's opening: {missing}"


@pytest.mark.parametrize("name", COMMANDS)
def test_help_describes_the_tool_not_its_history(name):
    """Help says what a command or option is; which service it replaced is no help."""
    texts = [ALL[name].help or ""] + [getattr(p, "help", None) or "" for p in ALL[name].params]
    assert not [t for t in texts if "old service" in t.lower()], name


def test_the_openapi_document_describes_the_api_not_its_history(serve):
    document = serve().get("/openapi.json").json()
    assert "old service" not in json.dumps(document).lower()
    assert "start voice sessions" in document["info"]["description"]


def test_code_cites_the_readme_not_a_document_outside_the_repository():
    outside = "SP" + "EC"  # spelled so that this file does not cite it either
    citing = [
        f"{path.relative_to(REPO)}:{number}"
        for folder in ("voicefallback", "tests", "benchmarks", "scripts")
        for path in sorted((REPO / folder).rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if re.search(rf"\b{outside}\b", line)
    ]
    assert not citing, f"cite the README instead: {citing}"


def test_the_readme_states_facts_not_a_change_log():
    """What holds today, with dates on measurements; history belongs in CHANGELOG.md."""
    history = re.compile(
        r"\b(used to|as before|what changed|landed|now (runs|is|takes|uses|has))\b", re.I
    )
    text = (REPO / "README.md").read_text()
    found = [line for line in text.splitlines() if history.search(line)]
    assert not found, found
