"""The library entry point makes the same choice as `start`, and records the same event."""

from __future__ import annotations

import pytest

from voicefallback import SessionRouter, VoicefallbackError

SONNET = "anthropic:claude-3-5-sonnet-latest"


def test_router_choice_matches_start(cli, config_file, db_file):
    with SessionRouter(config=config_file, db=db_file) as router:
        outcome = router.choose("sim-lib", SONNET)
        assert outcome.chosen == "openai:gpt-4o-mini"
        assert outcome.reason == "primary_unhealthy" and outcome.fallback_source == "auto"
        assert outcome.agent is None  # the worker makes its own opening call
        caller = router.choose("sim-lib-2", SONNET, ["openai:gpt-4o"])
        assert caller.chosen == "openai:gpt-4o" and caller.fallback_source == "caller"
        quiet = router.choose("sim-lib-3", SONNET, record_event=False)
        assert quiet.chosen == "openai:gpt-4o-mini" and quiet.event is None
        healthy = router.choose("sim-lib-4", "openai:gpt-4o-mini", opening_call=True)
        assert healthy.used_fallback is False and healthy.agent is not None
    cli_doc = cli("start", "--simulation-id", "sim-cli", "--primary", SONNET, "--json").json
    assert cli_doc["chosen"] == outcome.chosen
    events = cli("fallbacks", "--json").json["events"]
    assert [e["simulationId"] for e in events] == ["sim-cli", "sim-lib-2", "sim-lib"]


def test_router_refuses_unknown_models_like_start(config_file, db_file):
    with (
        SessionRouter(config=config_file, db=db_file) as router,
        pytest.raises(VoicefallbackError, match="unknown model 'openai:nope'"),
    ):
        router.choose("sim", "openai:nope")
