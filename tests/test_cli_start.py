"""`start` through the CLI: just-in-time probes, failures, request bodies, bad input."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from tests.conftest import write_config

SONNET = "anthropic:claude-3-5-sonnet-latest"
HEAD = """
[settings]
mode = "stub"
[providers.p]
type = "openai"
api_key_env = "P_KEY"
"""


def count(db: Path, table: str) -> int:
    with sqlite3.connect(db) as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def test_an_unknown_primary_s_opening_call_is_its_probe(cli, db_file):
    """Nothing is known: the primary's opening call is made at once, and decides. No other
    model is called, since none was needed."""
    result = cli("start", "--simulation-id", "s", "--primary", "openai:gpt-4o", "--json")
    assert result.exit_code == 0 and result.json["chosen"] == "openai:gpt-4o"
    with sqlite3.connect(db_file) as conn:
        calls = conn.execute("SELECT model, kind FROM probes ORDER BY id").fetchall()
    assert calls == [("openai:gpt-4o", "start")]
    # Fresh evidence is reused: a second start makes only the opening call.
    cli("start", "--simulation-id", "s2", "--primary", "openai:gpt-4o")
    assert count(db_file, "probes") == 2


def test_nothing_behind_a_known_healthy_candidate_is_called(cli, db_file):
    cli("probe", "openai:gpt-4o-mini")
    result = cli("start", "--simulation-id", "s", "--primary", SONNET, "--json")
    assert result.json["chosen"] == "openai:gpt-4o-mini"
    with sqlite3.connect(db_file) as conn:
        calls = conn.execute("SELECT model, kind FROM probes ORDER BY id").fetchall()
    # The primary (unknown) is tried; the models behind gpt-4o-mini are not.
    assert calls == [
        ("openai:gpt-4o-mini", "probe"),
        (SONNET, "start"),
        ("openai:gpt-4o-mini", "start"),
    ]
    # Every candidate judged is in the document, those behind the chosen one included.
    assert [c["model"] for c in result.json["candidates"]] == [
        SONNET, "openai:gpt-4o", "anthropic:claude-3-5-haiku-latest",
    ]  # fmt: skip


def test_a_just_in_time_probe_that_succeeded_is_not_stale_however_short_stale_after_is(cli):
    # stale_after_s of a microsecond: any evidence is stale a moment later, but the model a
    # probe has just found healthy is judged at the time of that probe, and started on.
    path = write_config(
        Path("tiny.toml"),
        HEAD.replace("[settings]", "[settings]\nstale_after_s = 0.000001")
        + '[[models]]\nid = "p:a"\n[[models]]\nid = "p:b"\n',
    )
    result = cli(
        "start", "--config", str(path), "--simulation-id", "s", "--primary", "p:a", "--json"
    )
    assert result.exit_code == 0, result.stderr
    assert result.json["chosen"] == "p:a" and result.json["usedFallback"] is False


def test_caller_fallbacks_none_healthy_exits_1_and_records_the_event(cli, db_file):
    write_config(
        Path("models.toml"),
        HEAD
        + """
[[models]]
id = "p:a"
stub = { error = "overloaded" }
[[models]]
id = "p:b"
stub = { error = "auth" }
[[models]]
id = "p:c"
""",
    )
    result = cli(
        "start",
        "--config",
        "models.toml",
        "--simulation-id",
        "s",
        "--primary",
        "p:a",
        "--fallback",
        "p:b",
        "--json",
    )
    assert result.exit_code == 1
    doc = result.json
    assert doc["chosen"] is None and doc["usedFallback"] is False and doc["agent"] is None
    assert doc["reason"] == "primary_unhealthy"
    assert doc["candidates"] == [
        {"model": "p:a", "status": "unhealthy", "error": "overloaded"},
        {"model": "p:b", "status": "misconfigured", "error": "auth"},
    ]
    assert "\n" not in doc["error"] and "p:a" in doc["error"]
    assert result.stderr.count("\n") == 1
    events = cli("fallbacks", "--json").json["events"]
    assert (
        len(events) == 1 and events[0]["chosen"] is None and events[0]["fallbackSource"] == "caller"
    )


def test_slow_models_are_a_last_resort(cli):
    write_config(
        Path("models.toml"),
        HEAD
        + """
[[models]]
id = "p:down"
stub = { error = "timeout" }
[[models]]
id = "p:slow"
stub = { latency_ms = 3000, ttft_ms = 2500 }
[[models]]
id = "p:fast"
stub = { latency_ms = 300 }
""",
    )
    # A slow model is known from a probe; a just-in-time probe would abandon it at the
    # budget (over_budget) instead of measuring it.
    assert cli("probe", "--config", "models.toml").exit_code == 0
    auto = cli(
        "start", "--config", "models.toml", "--simulation-id", "s", "--primary", "p:down", "--json"
    )
    assert auto.json["chosen"] == "p:fast"
    last = cli(
        "start",
        "--config",
        "models.toml",
        "--simulation-id",
        "s",
        "--primary",
        "p:down",
        "--fallback",
        "p:slow",
        "--json",
    )
    assert last.exit_code == 0 and last.json["chosen"] == "p:slow"


def test_body_reaches_the_opening_call_and_options_override_it(cli, tmp_path):
    body = {"simulationId": "from-body", "primary": SONNET, "candidate": {"name": "Ada"}}
    inline = cli("start", "--body", json.dumps(body), "--json")
    assert inline.exit_code == 0, inline.stderr
    assert inline.json["simulationId"] == "from-body"
    assert inline.json["agent"]["received_config"]["candidate"] == {"name": "Ada"}

    path = tmp_path / "body.json"
    path.write_text(json.dumps(body))
    from_file = cli(
        "start",
        "--body",
        f"@{path}",
        "--simulation-id",
        "override",
        "--primary",
        "openai:gpt-4o",
        "--json",
    )
    assert from_file.json["simulationId"] == "override"
    assert from_file.json["chosen"] == "openai:gpt-4o" and from_file.json["usedFallback"] is False
    assert from_file.json["agent"]["received_config"]["simulationId"] == "override"

    stdin = cli("start", "--body", "-", "--json", input=json.dumps(body))
    assert stdin.json["agent"]["received_config"]["candidate"] == {"name": "Ada"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--primary", "openai:nope"], "--primary: unknown model 'openai:nope'"),
        (["--primary", SONNET, "--fallback", "x:y"], "--fallback: unknown model 'x:y'"),
        (["--body", "{not json"], "--body: not valid JSON"),
        (["--body", "[1, 2]"], "--body: JSON body must be an object"),
        (["--body", '{"simulationId": "a", "simulationId": "b"}'], "duplicate key 'simulationId'"),
        (
            ["--body", '{"simulationId": 5, "primary": "openai:gpt-4o"}'],
            "--body simulationId: must be a non-empty string",
        ),
        (
            ["--body", '{"simulationId": "a", "primary": "openai:gpt-4o", "x": NaN}'],
            "NaN is not valid JSON",
        ),
        (
            ["--body", '{"simulationId": "a", "primary": "openai:gpt-4o", "fallbacks": "x"}'],
            "fallbacks must be an array",
        ),
        (["--body", "@missing.json"], "--body missing.json: cannot read"),
        (["--body", "null"], "--body: JSON body must be an object, got null"),
        (["--body", '"text"'], "--body: JSON body must be an object, got a string"),
        (
            ["--body", '{"simulationId": "a", "primary": "openai:gpt-4o", "x": 1e999}'],
            "--body: number 1e999 is out of range",
        ),
        (
            ["--body", '{"simulationId": "a", "primary": "openai:gpt-4o", "x": [-1E400]}'],
            "--body: number -1E400 is out of range",
        ),
        (
            [
                "--body",
                '{"simulationId": "a", "primary": "openai:gpt-4o", "x": ' + "9" * 5000 + "}",
            ],
            "--body: a number in the JSON body is too long",
        ),
        (
            [
                "--body",
                '{"simulationId": "a", "primary": "openai:gpt-4o", "x": '
                + "[" * 980
                + "]" * 980
                + "}",
            ],
            "--body: JSON nested deeper than 64 levels",
        ),
        (
            [
                "--body",
                '{"simulationId": "a", "primary": "openai:gpt-4o", "x": '
                + '{"y": ' * 64
                + "1"
                + "}" * 64
                + "}",
            ],
            "--body: JSON nested deeper than 64 levels",
        ),
        (
            ["--body", '{"simulationId": "a\\u200bb", "primary": "openai:gpt-4o"}'],
            "--body simulationId: at most 256 printable characters (got an invisible character"
            " U+200B)",
        ),
    ],
)
def test_bad_start_input_is_one_line_exit_2_and_writes_nothing(cli, db_file, args, message):
    full = ["start", "--json", *args]
    if "--body" not in args or "simulationId" not in " ".join(args):
        full += ["--simulation-id", "sim"]
    result = cli(*full)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and message in result.stderr
    assert not db_file.exists()


def test_a_body_nested_to_the_limit_is_accepted_and_echoed(cli):
    deep: object = "leaf"
    for _ in range(63):  # the body itself is the 64th level
        deep = [deep]
    body = {"simulationId": "s", "primary": "openai:gpt-4o", "deep": deep}
    result = cli("start", "--body", json.dumps(body), "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json["agent"]["received_config"]["deep"] == deep


@pytest.mark.parametrize("hidden", ["\u202e", "\u200b", "\u2028", "\x7f"])
def test_a_simulation_id_with_characters_that_print_as_something_else_is_refused(
    cli, db_file, hidden
):
    result = cli("start", "--simulation-id", f"evil{hidden}gnp.exe", "--primary", SONNET)
    assert result.exit_code == 2 and result.stdout == ""
    assert "--simulation-id: at most 256 printable characters (got a" in result.stderr
    assert f"U+{ord(hidden):04X}" in result.stderr or "control character" in result.stderr
    assert hidden not in result.stderr and not db_file.exists()


def test_simulation_id_of_10000_characters_is_refused(cli, db_file):
    result = cli("start", "--simulation-id", "x" * 10_000, "--primary", SONNET)
    assert result.exit_code == 2 and "--simulation-id: at most 256" in result.stderr
    assert len(result.stderr) < 300 and not db_file.exists()


def test_megabytes_of_body_are_refused(cli, db_file):
    body = json.dumps({"simulationId": "s", "primary": SONNET, "junk": "x" * 3_000_000})
    result = cli("start", "--body", body)
    assert result.exit_code == 2 and "larger than" in result.stderr and not db_file.exists()


def test_text_that_is_not_unicode_is_refused_before_anything_is_written(cli, db_file):
    lone = '{"simulationId": "a\\ud800", "primary": "openai:gpt-4o-mini"}'
    result = cli("start", "--body", lone, "--json")
    assert result.exit_code == 2 and "not valid Unicode" in result.stderr
    hidden = '{"simulationId": "a", "primary": "openai:gpt-4o-mini", "note": "\\udfff"}'
    assert cli("start", "--body", hidden).exit_code == 2
    assert cli("start", "--simulation-id", "a\udcff", "--primary", SONNET).exit_code == 2
    piped = cli("start", "--body", "-", input=b'{"simulationId": "a\xff", "primary": "x"}')
    assert piped.exit_code == 2 and "--body -: not UTF-8" in piped.stderr
    assert not db_file.exists()


def test_a_stub_slower_than_timeout_s_times_out_like_a_live_call(cli):
    write_config(
        Path("models.toml"),
        HEAD
        + """
[[models]]
id = "p:glacial"
timeout_s = 1
stub = { latency_ms = 20000, ttft_ms = 300 }
""",
    )
    result = cli("probe", "--config", "models.toml", "--json").json["results"][0]
    assert (result["status"], result["error"], result["latencyMs"]) == (
        "unhealthy",
        "timeout",
        1000,
    )
    assert result["ttftMs"] == 300
