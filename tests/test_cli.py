"""The entry point, `main()`: hostile input against an existing state file is exit 2, one line
naming what and where, and the file byte-for-byte as it was. (test_config.py and
test_cli_start.py check the messages of many of these cases on a missing state file; here the
state file exists.)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Run

SONNET = "anthropic:claude-3-5-sonnet-latest"
MINI = "openai:gpt-4o-mini"


@pytest.fixture
def existing_state(cli: Callable[..., Run], db_file: Path) -> Callable[[], tuple[str, list]]:
    assert cli("probe", "--json").exit_code == 0
    assert cli("start", "--simulation-id", "s", "--primary", SONNET, "--json").exit_code == 0

    def fingerprint() -> tuple[str, list[str]]:
        digest = hashlib.sha256(db_file.read_bytes()).hexdigest()
        return digest, sorted(p.name for p in db_file.parent.iterdir())

    return fingerprint


def assert_refused(result: Run, fragment: str) -> None:
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("voicefallback: error: ")
    assert fragment in result.stderr, result.stderr
    assert "\x1b" not in result.stderr and "\x07" not in result.stderr  # nothing for a terminal


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["fallbacks", "--since", "yesterday"], "--since: not an ISO-8601 time or a duration"),
        (["fallbacks", "--since", ""], "--since: not an ISO-8601 time or a duration"),
        (["fallbacks", "--since", "2026-13-45"], "--since: not an ISO-8601 time or a duration"),
        (["fallbacks", "--limit", "0"], "fallbacks: Invalid value for '--limit'"),
        (["fallbacks", "--limit", "-3"], "fallbacks: Invalid value for '--limit'"),
        (["fallbacks", "--limit", "ten"], "fallbacks: Invalid value for '--limit'"),
        (["start", "--simulation-id", "a\x07b", "--primary", MINI], "a control character"),
        (["start", "--simulation-id", "x" * 10_000, "--primary", MINI], "10000 characters"),
        (["start", "--simulation-id", "s", "--primary", "openai"], "--primary: unknown model"),
        (["start", "--simulation-id", "s", "--primary", "openai:"], "--primary: unknown model"),
        (["start", "--simulation-id", "s", "--primary", ":gpt"], "--primary: unknown model"),
        (["start", "--simulation-id", "s", "--primary", "openai:gpt 4o"], "unknown model"),
        (["start", "--simulation-id", "s", "--primary", "openai:\x1b[31mx"], "unknown model"),
        (["start", "--simulation-id", "s", "--primary", "x" * 10_000], "(10000 characters"),
        (["start", "--simulation-id", "s", "--primary", "groq:llama"], "--primary: unknown"),
        (
            ["start", "--simulation-id", "s", "--primary", SONNET, "--fallback", "openai:gpt 4o"],
            "--fallback: unknown model",
        ),
        (["start", "--body", "{not json"], "--body: not valid JSON"),
        (["start", "--body", '"a string"'], "--body: JSON body must be an object"),
        (["start", "--body", '{"simulationId": "a", "simulationId": "b"}'], "duplicate key"),
        (["start", "--body", '{"simulationId": "a", "primary": "x", "n": NaN}'], "NaN"),
        (["start", "--body", '{"simulationId": 5, "primary": "x"}'], "simulationId: must be"),
        (["start", "--body", "[" * 100_000 + "]" * 100_000], "--body"),
        (["start", "--body", json.dumps({"x": "y" * 3_000_000})], "larger than"),
        (["probe", "nope"], "MODEL_ID: unknown model 'nope'"),
        (["probe", "--concurrency", "0"], "probe: Invalid value for '--concurrency'"),
        (["probe", "--mode", "fast"], "--mode: mode must be 'stub' or 'live'"),
        (["health", "openai:\x07"], "MODEL_ID: unknown model"),
        (["prune", "--events-older-than", "-1"], "--events-older-than: must be a positive"),
        (["prune", "--events-older-than", "nan"], "--events-older-than: must be a positive"),
        (["prune", "--events-older-than", "soon"], "prune: Invalid value for '--events-older"),
        (["prune", "--events-older-than", "1e308"], "--events-older-than: must be at most 36500"),
        (["prune", "--events-older-than", "36500.5"], "--events-older-than: must be at most"),
        # Spans and times past what a date or a timer can hold: refused, not a traceback.
        (["fallbacks", "--since", "800000d"], "--since: duration must be at most 36500d"),
        (["fallbacks", "--since", "9999999999999d"], "--since: duration must be at most"),
        (["fallbacks", "--since", "9" * 400 + "d"], "--since: duration must be at most"),
        (["fallbacks", "--since", "0001-01-01T00:00:00+01:00"], "--since: time out of range"),
        (["fallbacks", "--since", "9999-12-31T23:30:00-01:00"], "--since: time out of range"),
        (["health", "--span", "800000d"], "--span: duration must be at most 36500d"),
        (["health", "--history", MINI, "--since", "800000d"], "--since: duration must be at"),
        (["probe", "--every", "99999999999d"], "--every: duration must be at most 36500d"),
        (["frobnicate"], "No such command"),
        (["start", "--colour", "red"], "No such option"),
        (["start", "--simulation-id"], "start: Option '--simulation-id' requires an argument"),
        (["probe", "--textfile"], "probe: Option '--textfile' requires an argument"),
    ],
)
def test_bad_option_is_one_line_exit_2_and_the_state_file_is_untouched(
    cli, existing_state, args, fragment
):
    before = existing_state()
    assert_refused(cli(*args), fragment)
    assert existing_state() == before


GOOD = """
[settings]
mode = "stub"
[providers.p]
type = "openai"
[[models]]
id = "p:m"
"""


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("[settings\nmode = 1", "invalid TOML"),
        (GOOD.encode() + b"# caf\xe9\n", "not UTF-8"),
        (GOOD + "#" * (2 * 1024 * 1024), "refusing to parse"),
        ("x = " + "[" * 5000 + "]" * 5000, "invalid TOML"),
        (GOOD + '[[models]]\nid = "p:m"\n', "duplicate model id"),
        (GOOD.replace('"p:m"', '"openai"'), 'must look like "PROVIDER:MODEL"'),
        (GOOD.replace('"p:m"', '"p:"'), 'must look like "PROVIDER:MODEL"'),
        (GOOD.replace('"p:m"', '":gpt"'), 'must look like "PROVIDER:MODEL"'),
        (GOOD.replace('"p:m"', '"p:gpt 4"'), "may hold only letters"),
        (GOOD.replace('"p:m"', '"p:gpt\\u001b[2J"'), "may hold only letters"),
        (GOOD.replace('"p:m"', '"q:m"'), "provider 'q' is not declared"),
    ],
    ids=[
        "malformed",
        "not-utf8",
        "huge",
        "deeply-nested",
        "duplicate-id",
        "id-openai",
        "id-openai-colon",
        "id-colon-gpt",
        "id-with-space",
        "id-with-control",
        "unknown-provider",
    ],
)
def test_hostile_registry_is_one_line_exit_2_and_the_state_file_is_untouched(
    cli, existing_state, tmp_path, content, fragment
):
    bad = tmp_path / "bad.toml"
    if isinstance(content, bytes):
        bad.write_bytes(content)
    else:
        bad.write_text(content)
    before = existing_state()
    for command in (
        ["probe"],
        ["health"],
        ["start", "--simulation-id", "s2", "--primary", "p:m"],
        ["prune"],
    ):
        result = cli(*command, "--config", str(bad))
        assert_refused(result, fragment)
        assert str(bad) in result.stderr
        assert existing_state() == before, command


def test_huge_limit_means_no_limit_rather_than_a_crash(cli, existing_state):
    result = cli("fallbacks", "--json", "--limit", "9" * 30)
    assert result.exit_code == 0 and len(result.json["events"]) == 1


def test_huge_windows_and_history_limits_are_refused_in_one_line(cli):
    for args in (
        ("health", "--window", "9" * 23),
        ("health", "--history", "openai:gpt-4o-mini", "--limit", "9" * 23),
    ):
        result = cli(*args)
        assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.stderr
        assert "Invalid value for" in result.stderr


def test_bare_voicefallback_prints_help_and_no_error_line(cli):
    result = cli()
    assert result.exit_code == 0
    assert "Usage: voicefallback" in result.stdout and "probe" in result.stdout
    assert result.stderr == ""


def test_an_unknown_model_in_the_body_is_blamed_on_the_body(cli, config_file, db_file):
    body = json.dumps({"simulationId": "s", "primary": "openai:nope"})
    result = cli("start", "--body", body)
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.startswith("voicefallback: error: --body primary: unknown model"), (
        result.stderr
    )
    with_fallback = json.dumps({"simulationId": "s", "primary": MINI, "fallbacks": ["x:y"]})
    result = cli("start", "--body", with_fallback)
    assert "--body fallbacks: unknown model 'x:y'" in result.stderr, result.stderr
    given = cli("start", "--body", body, "--primary", "openai:nope2")
    assert "--primary: unknown model 'openai:nope2'" in given.stderr
    assert not db_file.exists()
