"""models.toml: found in the documented places, validated completely before anything runs."""

from __future__ import annotations

import os
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
    assert "--config (config= from Python)" in result.stderr  # a router says the same


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
        (GOOD + "stub = { latency_ms = 1000000000000000000000 }\n", "latency_ms must be at most"),
        (GOOD + "stub = { ttft_ms = 600001 }\n", "stub: ttft_ms must be at most 600000"),
        (GOOD.replace('id = "p:m"', 'id = "openai"'), 'must look like "PROVIDER:MODEL"'),
        (GOOD.replace('id = "p:m"', 'id = "p:"'), 'must look like "PROVIDER:MODEL"'),
        (GOOD.replace('id = "p:m"', 'id = ":gpt"'), 'must look like "PROVIDER:MODEL"'),
        (GOOD.replace('id = "p:m"', 'id = "p:gpt 4"'), "may hold only letters"),
        (GOOD.replace('id = "p:m"', 'id = "p:gpt\\u0007"'), "may hold only letters"),
        (GOOD.replace('id = "p:m"', "id = 7"), "id must be a string"),
        (GOOD + "timeout_s = 1e300\n", "timeout_s must be at most 600 (10 minutes), got 1e+300"),
        (GOOD + "timeout_s = 600.5\n", "timeout_s must be at most 600"),
        (GOOD + "timeout_s = 0.0001\n", "timeout_s must be at least 0.1 (100 ms), got 0.0001"),
        (GOOD + "timeout_s = 1e-320\n", "timeout_s must be at least 0.1 (100 ms), got 1e-320"),
        (GOOD + "ttft_budget_ms = 9\n", "ttft_budget_ms must be at least 10, got 9"),
        (
            GOOD.replace("[settings]", "[settings]\nconnect_timeout_s = 0.01"),
            "[settings]: connect_timeout_s must be at least 0.1 (100 ms), got 0.01",
        ),
        (GOOD + "ttft_budget_ms = 600001\n", "ttft_budget_ms must be at most 600000"),
        (
            GOOD.replace("[settings]", "[settings]\nstale_after_s = 1e12"),
            "[settings]: stale_after_s must be at most 3153600000 (100 years)",
        ),
        (GOOD + "history_days = 36501\n", "history_days must be at most 36500 (100 years)"),
        (GOOD + "fail_after = 1001\n", "fail_after must be at most 1000, got 1001"),
        (GOOD + "recover_after = 9223372036854775807\n", "recover_after must be at most 1000"),
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


def test_settings_at_their_lower_bounds_are_accepted(cli):
    at_limits = GOOD.replace(
        "[settings]", "[settings]\ntimeout_s = 0.1\nttft_budget_ms = 10\nconnect_timeout_s = 0.1"
    )
    path = write_config(Path("limits.toml"), at_limits)
    result = cli("models", "--json", "--config", str(path))
    assert result.exit_code == 0, result.stderr
    [model] = result.json["models"]
    assert (model["timeoutMs"], model["ttftBudgetMs"]) == (100, 10)


@pytest.mark.parametrize("wait", ["nan", "inf", "-inf", "NaN"])
def test_a_lock_timeout_that_never_ends_is_refused(cli, config_file, db_file, wait):
    result = cli("probe", "--lock-timeout", wait)
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "--lock-timeout" in result.stderr, result.stderr
    assert not db_file.exists()


def test_settings_at_their_upper_bounds_are_accepted(cli):
    at_limits = GOOD.replace(
        "[settings]",
        "[settings]\ntimeout_s = 600\nttft_budget_ms = 600000\nstale_after_s = 3153600000\n"
        "fail_after = 1000\nrecover_after = 1000\nhistory_days = 36500",
    )
    path = write_config(Path("limits.toml"), at_limits)
    result = cli("models", "--json", "--config", str(path))
    assert result.exit_code == 0, result.stderr
    [model] = result.json["models"]
    assert (model["timeoutMs"], model["failAfter"]) == (600_000, 1000)


PASTED_KEYS = [
    "sk-proj-Abc123def456GHI789jkl012MNO345pqr",  # not a name at all
    "sk_live_abc123def456ghi789jkl012",  # fits [A-Za-z_][A-Za-z0-9_]*: a name in lower case
    "a1B2c3D4e5F6g7H8i9J0kLmNoPqRsTuV",  # a plain token
    "K" * 65,  # uppercase, but longer than any variable name
]


@pytest.mark.parametrize("pasted", PASTED_KEYS)
def test_a_key_pasted_as_api_key_env_is_refused_without_being_repeated(cli, db_file, pasted):
    text = GOOD.replace('type = "openai"', f'type = "openai"\napi_key_env = "{pasted}"')
    path = write_config(Path("pasted.toml"), text)
    for args in (("models", "--json"), ("probe", "--mode", "live"), ("health",)):
        result = cli(*args, "--config", str(path))
        assert result.exit_code == 2 and result.stdout == "", (args, result.stdout)
        assert result.stderr.count("\n") == 1, result.stderr
        assert "[providers.p]: api_key_env must be the NAME of an environment variable" in (
            result.stderr
        )
        assert "not the key itself" in result.stderr
        assert pasted[:12] not in result.stderr and pasted[-8:] not in result.stderr
    assert not db_file.exists()


@pytest.mark.parametrize("name", ["OPENAI_API_KEY", "_PRIVATE_KEY_2", "K" * 64])
def test_environment_variable_names_are_accepted(cli, name):
    text = GOOD.replace('type = "openai"', f'type = "openai"\napi_key_env = "{name}"')
    result = cli("models", "--json", "--config", str(write_config(Path("ok.toml"), text)))
    assert result.exit_code == 0 and result.json["models"][0]["apiKeyEnv"] == name


@pytest.mark.parametrize(
    "url",
    [
        "https://ada:s3cret-pass@gw.example/v1",
        "http://tok3n-only@gw.example",
        "ftp://u:s3cret-pass@x",
    ],
)
def test_a_base_url_with_credentials_is_refused_without_being_repeated(cli, db_file, url):
    text = GOOD.replace('type = "openai"', f'type = "openai"\nbase_url = "{url}"')
    path = write_config(Path("creds.toml"), text)
    result = cli("models", "--json", "--config", str(path))
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert "base_url must not carry credentials" in result.stderr
    assert "s3cret" not in result.stderr and "tok3n" not in result.stderr
    assert not db_file.exists()


def test_an_unknown_model_error_lists_a_few_registered_ids_not_all(cli):
    many = "[providers.p]\ntype = 'openai'\n" + "".join(
        f'[[models]]\nid = "p:model-{n:03d}"\n' for n in range(1, 301)
    )
    path = write_config(Path("many.toml"), many)
    result = cli("start", "--simulation-id", "s", "--primary", "p:nope", "--config", str(path))
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert "unknown model 'p:nope'" in result.stderr
    assert (
        "p:model-001, p:model-002" in result.stderr and "p:model-008 and 292 more" in result.stderr
    )
    assert "p:model-009" not in result.stderr and len(result.stderr) < 400


def test_fallbacks_reads_events_without_the_registry(cli, monkeypatch):
    """An operator reading what happened must not be stopped by a broken models.toml."""
    write_config(Path("models.toml"), "[settings\nbroken")
    assert cli("fallbacks", "--json").json["events"] == []


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


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://[::1", "base_url 'http://[::1' is not a valid URL"),
        ("http://127.0.0.1:99999/v1", "is not a valid URL (Port out of range"),
        ("http://gw.example:http/v1", "is not a valid URL"),
        ("http://127.0.0.1:0/v1", "port must be 1-65535"),
        ("https:///v1", "has no host"),
        ("http://:8080/v1", "has no host"),
        ("https://gw example/v1", "must not hold spaces"),
        ("gw.example/v1", "must be an http(s) URL"),
    ],
)
def test_a_malformed_base_url_is_refused_when_the_registry_loads(cli, db_file, url, message):
    text = GOOD.replace('type = "openai"', f'type = "openai"\nbase_url = "{url}"')
    path = write_config(Path("url.toml"), text)
    for args in (("models", "--json"), ("probe", "--mode", "live"), ("health",)):
        result = cli(*args, "--config", str(path))
        assert result.exit_code == 2 and result.stdout == "", (args, result.stderr)
        assert result.stderr.count("\n") == 1, result.stderr
        assert f"{path}: [providers.p]: base_url" in result.stderr and message in result.stderr
    assert not db_file.exists()


@pytest.mark.parametrize("url", ["http://[::1]:8080/v1", "https://gw.example:65535", "http://h"])
def test_well_formed_base_urls_are_accepted(cli, url):
    text = GOOD.replace('type = "openai"', f'type = "openai"\nbase_url = "{url}"')
    result = cli("models", "--json", "--config", str(write_config(Path("ok.toml"), text)))
    assert result.exit_code == 0 and result.json["models"][0]["baseUrl"] == url


@pytest.mark.parametrize("home", ["", "relative/home"])
def test_an_empty_or_relative_home_falls_back_to_the_accounts_home(home, monkeypatch):
    import pwd

    from voicefallback.environment import db_path, user_config_dir

    monkeypatch.setenv("HOME", home)
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.delenv("XDG_STATE_HOME")
    account = Path(pwd.getpwuid(os.getuid()).pw_dir)
    assert user_config_dir() == account / ".config" / "voicefallback"
    assert db_path(None) == account / ".local" / "state" / "voicefallback" / "state.db"


def test_relative_xdg_directories_are_ignored(isolated, monkeypatch):
    from voicefallback.environment import user_config_dir, user_state_dir

    monkeypatch.setenv("XDG_CONFIG_HOME", "cfg")
    monkeypatch.setenv("XDG_STATE_HOME", "")
    home = Path(os.environ["HOME"])
    assert user_config_dir() == home / ".config" / "voicefallback"
    assert user_state_dir() == home / ".local" / "state" / "voicefallback"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        # libpq's host-less form (the socket, or host= in the query) keeps its "//".
        (
            "postgresql:///vf?host=127.0.0.1&port=1&password=s3cret",
            "postgresql:///vf?host=127.0.0.1&port=1",
        ),
        (
            "postgresql://vf@/vf?host=/var/run/postgresql",
            "postgresql://vf@/vf?host=/var/run/postgresql",
        ),
        ("postgres://vf:s3cret@db.internal:5432/vf", "postgres://vf@db.internal:5432/vf"),
    ],
)
def test_a_state_url_is_shown_as_given_without_its_password(url, shown):
    from voicefallback.environment import display_location

    assert display_location(url) == shown
