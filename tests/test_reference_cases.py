"""The reference cases A, B, C (README "`start`") on the shipped models.toml, through the CLI."""

from __future__ import annotations

from tests.pg_server import rows

SONNET = "anthropic:claude-3-5-sonnet-latest"


def test_reference_cases_a_b_c_and_the_fallbacks_listing(cli, state):
    """On both backends: the SQLite file, and a PostgreSQL database."""
    a = cli("start", "--simulation-id", "sim-auto", "--primary", SONNET, "--json")
    assert a.exit_code == 0, a.stderr
    a_doc = a.json
    assert a_doc["usedFallback"] is True
    assert a_doc["fallbackSource"] == "auto"
    assert a_doc["reason"] == "primary_unhealthy"
    assert a_doc["chosen"] == "openai:gpt-4o-mini"  # first healthy in registry order
    assert a_doc["agent"]["ok"] is True and a_doc["agent"]["stub"] is True
    assert a_doc["agent"]["model"] == "openai:gpt-4o-mini"
    assert a_doc["agent"]["latencyMs"] == 180 and a_doc["agent"]["ttftMs"] == 180
    assert a_doc["agent"]["received_config"] == {"simulationId": "sim-auto", "primary": SONNET}

    b = cli(
        "start",
        "--simulation-id",
        "sim-caller",
        "--primary",
        SONNET,
        "--fallback",
        "openai:gpt-4o",
        "--fallback",
        "openai:gpt-4o-mini",
        "--json",
    )
    assert b.exit_code == 0, b.stderr
    assert b.json["chosen"] == "openai:gpt-4o"
    assert b.json["fallbackSource"] == "caller"
    assert b.json["agent"]["received_config"]["fallbacks"] == [
        "openai:gpt-4o",
        "openai:gpt-4o-mini",
    ]

    c = cli("start", "--simulation-id", "sim-healthy", "--primary", "openai:gpt-4o-mini", "--json")
    assert c.exit_code == 0, c.stderr
    assert c.json["usedFallback"] is False
    assert c.json["chosen"] == "openai:gpt-4o-mini"
    assert c.json["fallbackSource"] is None and c.json["reason"] is None

    listing = cli("fallbacks", "--json")
    assert listing.exit_code == 0
    events = listing.json["events"]
    assert [e["simulationId"] for e in events] == ["sim-caller", "sim-auto"]
    assert events[0]["id"] > events[1]["id"]
    assert events[1]["primary"] == SONNET and events[1]["chosen"] == "openai:gpt-4o-mini"
    assert events[1]["candidates"] == [
        {"model": SONNET, "status": "unhealthy", "error": "overloaded"}
    ]
    assert all(e["at"].endswith("Z") for e in events)

    # The state file holds exactly these two events, and every call made is in history.
    assert rows(state, "SELECT simulation_id, reason FROM events ORDER BY id") == [
        ("sim-auto", "primary_unhealthy"),
        ("sim-caller", "primary_unhealthy"),
    ]
    # Case A found every model unknown: the primary's opening call was its probe and failed,
    # then gpt-4o-mini's answered. No model further down the order was called.
    history = rows(state, "SELECT model, kind, ok FROM probes ORDER BY id")
    assert history[:2] == [(SONNET, "start", 0), ("openai:gpt-4o-mini", "start", 1)]


def test_json_output_is_exactly_one_object(cli):
    for args in (("probe", "--json"), ("health", "--json"), ("fallbacks", "--json")):
        result = cli(*args)
        assert result.exit_code == 0
        assert result.stdout.count("\n") == 1 and result.json


def test_probe_then_health_reports_each_model(cli):
    probe = cli("probe", "--json")
    assert probe.exit_code == 0
    doc = probe.json
    assert doc["mode"] == "stub" and doc["probedAt"].endswith("Z")
    by_model = {r["model"]: r for r in doc["results"]}
    assert by_model[SONNET]["status"] == "unhealthy" and by_model[SONNET]["error"] == "overloaded"
    assert by_model["openai:gpt-4o-mini"] == {
        "model": "openai:gpt-4o-mini",
        "provider": "openai",
        "ok": True,
        "status": "healthy",
        "latencyMs": 180,
        "ttftMs": 180,
        "error": None,
        "stub": True,
    }
    health = cli("health", "--json").json["models"]
    assert [m["model"] for m in health] == [r["model"] for r in doc["results"]]
    mini = next(m for m in health if m["model"] == "openai:gpt-4o-mini")
    assert (
        mini["ok"] is True
        and mini["consecutiveFailures"] == 0
        and mini["lastCheckedAt"].endswith("Z")
    )
    sonnet = next(m for m in health if m["model"] == SONNET)
    assert sonnet["consecutiveFailures"] == 1 and sonnet["lastError"] == "overloaded"


def test_check_exits_1_only_when_a_listed_model_is_not_healthy(cli):
    assert cli("probe", "--check", "openai:gpt-4o-mini").exit_code == 0
    assert cli("probe", "--check").exit_code == 1
    assert cli("health", "--check", "openai:gpt-4o-mini").exit_code == 0
    assert cli("health", "--check", SONNET).exit_code == 1


def test_health_on_a_missing_state_file_is_empty_and_creates_nothing(cli, db_file):
    result = cli("health", "--json")
    assert result.exit_code == 0
    assert {m["status"] for m in result.json["models"]} == {"unknown"}
    assert cli("fallbacks", "--json").json["events"] == []
    assert not db_file.exists() and not db_file.parent.exists()


def test_human_output_is_a_table(cli):
    result = cli("probe")
    assert result.exit_code == 0
    assert "openai:gpt-4o-mini" in result.stdout and "healthy" in result.stdout
    started = cli("start", "--simulation-id", "s1", "--primary", SONNET)
    assert "openai:gpt-4o-mini" in started.stdout and "primary_unhealthy" in started.stdout


def test_a_failed_check_names_what_blocked_it(cli):
    result = cli("probe", "--check")
    assert result.exit_code == 1
    assert "check failed: anthropic:claude-3-5-sonnet-latest is unhealthy" in result.stderr
    assert cli("health", "--check", "openai:gpt-4o-mini").stderr == ""
