"""models.toml: found in the documented places, validated completely before anything runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import SHIPPED_CONFIG, write_config

GOOD = """
[settings]
mode = "stub"
[providers.p]
type = "openai"
[[models]]
id = "p:m"
"""


def test_option_beats_environment_beats_working_directory(cli, tmp_path, monkeypatch):
    local = write_config(Path("models.toml"), GOOD.replace("p:m", "p:local"))
    env = write_config(tmp_path / "env.toml", GOOD.replace("p:m", "p:env"))
    opt = write_config(tmp_path / "opt.toml", GOOD.replace("p:m", "p:opt"))
    monkeypatch.delenv("VOICEFALLBACK_CONFIG")
    assert cli("health", "--json").json["models"][0]["model"] == "p:local"
    monkeypatch.setenv("VOICEFALLBACK_CONFIG", str(env))
    assert cli("health", "--json").json["models"][0]["model"] == "p:env"
    assert cli("health", "--json", "--config", str(opt)).json["models"][0]["model"] == "p:opt"
    local.unlink()


def test_user_config_dir_is_the_last_resort(cli, isolated, monkeypatch):
    monkeypatch.delenv("VOICEFALLBACK_CONFIG")
    Path("models.toml").unlink()  # no ./models.toml either
    user = isolated.parent / "home" / ".config" / "voicefallback" / "models.toml"
    user.parent.mkdir(parents=True)
    write_config(user, GOOD.replace("p:m", "p:user"))
    assert cli("health", "--json").json["models"][0]["model"] == "p:user"


def test_missing_config_says_how_to_fix_it(cli, monkeypatch):
    monkeypatch.delenv("VOICEFALLBACK_CONFIG")
    Path("models.toml").unlink()
    result = cli("health")
    assert result.exit_code == 2 and "voicefallback init" in result.stderr


def test_mode_option_beats_environment_beats_file(cli, monkeypatch):
    monkeypatch.setenv("VOICEFALLBACK_MODE", "bogus")
    result = cli("probe", "--json")
    assert result.exit_code == 2 and "VOICEFALLBACK_MODE" in result.stderr
    assert cli("probe", "--json", "--mode", "stub").json["mode"] == "stub"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[settings\nmode=1", "invalid TOML"),
        (GOOD + "colour = 'red'\n", "model 'p:m': unknown key 'colour'"),
        (GOOD.replace('mode = "stub"', 'mode = "fast"'), "mode must be 'stub' or 'live'"),
        (GOOD + "ttft_budget_ms = -5\n", "ttft_budget_ms must be a positive integer, got -5"),
        (GOOD + "fail_after = 1.5\n", "fail_after must be a positive integer"),
        (GOOD + "timeout_s = 'ten'\n", "timeout_s must be a positive number, got a string"),
        (GOOD.replace("[settings]", "[settings]\nstale_after_s = 0"), "[settings]: stale_after_s"),
        (GOOD + '[[models]]\nid = "p:m"\n', "model 'p:m': duplicate model id"),
        (GOOD.replace('id = "p:m"', 'id = "q:m"'), "provider 'q' is not declared"),
        (
            GOOD.replace('type = "openai"', 'type = "cohere"'),
            "type must be 'openai' or 'anthropic'",
        ),
        (GOOD + "stub = { error = 'on_fire' }\n", "stub: error must be one of"),
        (GOOD + "stub = { latency_ms = -1 }\n", "latency_ms must be a non-negative integer"),
        (GOOD.replace('id = "p:m"', 'id = "openai"'), 'must look like "PROVIDER:MODEL"'),
        (GOOD.replace('id = "p:m"', 'id = "p:"'), 'must look like "PROVIDER:MODEL"'),
        (GOOD.replace('id = "p:m"', 'id = ":gpt"'), 'must look like "PROVIDER:MODEL"'),
        (GOOD.replace('id = "p:m"', 'id = "p:gpt 4"'), "may hold only letters"),
        (GOOD.replace('id = "p:m"', 'id = "p:gpt\\u0007"'), "may hold only letters"),
        (GOOD.replace('id = "p:m"', "id = 7"), "id must be a string"),
        ("[settings]\nmode='stub'\n", "no models declared"),
        ("surprise = 1\n" + GOOD, "unknown key 'surprise'"),
        ("x = " + "[" * 5000 + "]" * 5000 + "\n", "invalid TOML"),
    ],
)
def test_invalid_registry_is_one_line_naming_file_and_place(cli, db_file, text, message):
    path = write_config(Path("bad.toml"), text)
    for args in (
        ("probe",),
        ("health",),
        ("start", "--simulation-id", "s", "--primary", "p:m"),
    ):
        result = cli(*args, "--config", str(path))
        assert result.exit_code == 2, (args, result.stdout)
        assert result.stdout == ""
        assert result.stderr.count("\n") == 1
        assert str(path) in result.stderr and message in result.stderr, result.stderr
    assert not db_file.exists()


def test_fallbacks_reads_events_without_the_registry(cli, monkeypatch):
    """An operator reading what happened must not be stopped by a broken models.toml."""
    write_config(Path("models.toml"), "[settings\nbroken")
    assert cli("fallbacks", "--json").json == {"events": []}


def test_registry_that_is_not_utf8_or_huge(cli, db_file):
    latin = Path("latin.toml")
    latin.write_bytes(GOOD.encode() + b"# caf\xe9\n")
    result = cli("health", "--config", str(latin))
    assert result.exit_code == 2 and "not UTF-8" in result.stderr
    huge = Path("huge.toml")
    huge.write_text(GOOD + "#" * (2 * 1024 * 1024) + "\n")
    result = cli("probe", "--config", str(huge))
    assert result.exit_code == 2 and "refusing to parse" in result.stderr
    assert not db_file.exists()


def test_shipped_registry_has_the_reference_models():
    from voicefallback.config import load_registry

    registry = load_registry(SHIPPED_CONFIG)
    ids = [m.id for m in registry.models]
    for wanted in (
        "openai:gpt-4o-mini",
        "openai:gpt-4o",
        "anthropic:claude-3-5-sonnet-latest",
        "anthropic:claude-3-5-haiku-latest",
    ):
        assert wanted in ids
    assert registry.get("anthropic:claude-3-5-sonnet-latest").stub.error == "overloaded"
    assert registry.get("anthropic:claude-3-5-sonnet-latest").thresholds.ttft_budget_ms == 1200
