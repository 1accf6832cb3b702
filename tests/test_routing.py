"""`start --mode live` through the CLI against the fake provider: first-token budgets at work.

Budgets here are 300 ms and timeout_s 10 s, so a decision that waited out a hanging model
instead of abandoning it would show up as `timeout` rows (and a very slow test), not as the
`over_budget` rows asserted below.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fake_provider import KEY_ENV, KEYS, FakeProvider, fake_registry_file
from tests.fake_provider import call_history as history

pytest_plugins = ["tests.conftest_live"]

BUDGET_MS = 300


@pytest.fixture
def fake_registry(
    fake_provider: FakeProvider, config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """The registry, made of fake-provider models (their names are the fake's directives)."""
    monkeypatch.setenv(KEY_ENV["openai"], KEYS["openai"])
    monkeypatch.setenv("VOICEFALLBACK_MODE", "live")
    yield config_file


def registry(path: Path, fake: FakeProvider, *names: str, budget_ms: int = BUDGET_MS) -> None:
    fake_registry_file(path, fake, names, budget_ms=budget_ms)


def known_healthy(cli, *models: str) -> None:
    """Evidence from real sessions that each model answered in 100 ms."""
    for model in models:
        assert cli("report", model, "--ttft-ms", "100").exit_code == 0


def known_then_stale(cli, config: Path, *models: str) -> None:
    """Each model known healthy, and that evidence expired since (stale_after_s = 0.1)."""
    config.write_text(config.read_text().replace("[settings]", "[settings]\nstale_after_s = 0.1"))
    known_healthy(cli, *models)
    time.sleep(0.2)  # every snapshot is now stale


def test_hanging_unknown_candidates_are_hedged_at_their_budget_and_cut_when_one_answers(
    cli, fake_registry, fake_provider, db_file
):
    registry(fake_registry, fake_provider, "hang+a", "hang+b", "ttft-50")
    result = cli("start", "--simulation-id", "s", "--primary", "fake:hang+a", "--json")

    assert result.exit_code == 0, result.stderr
    assert result.json["chosen"] == "fake:ttft-50" and result.json["reason"] == "primary_unhealthy"
    # Each candidate's opening call is its probe: one call each. Each hanging one got its
    # budget before the next was started beside it, and was cut when ttft-50 answered.
    assert history(db_file) == [
        ("hang+a", "start", "over_budget"),
        ("hang+b", "start", "over_budget"),
        ("ttft-50", "start", None),
    ]
    assert [r.model for r in fake_provider.received()] == ["hang+a", "hang+b", "ttft-50"]
    events = cli("fallbacks", "--json").json["events"]
    assert [(c["model"], c["error"]) for c in events[0]["candidates"]] == [
        ("fake:hang+a", "over_budget"),
        ("fake:hang+b", "over_budget"),
    ]
    # A model cut past its budget is a transient failure, never a success nor misconfigured.
    health = {m["model"]: m for m in cli("health", "--json").json["models"]}
    assert health["fake:hang+a"]["status"] == "unhealthy"
    assert health["fake:hang+a"]["lastError"] == "over_budget"


def test_a_slow_never_probed_fallback_costs_one_call(cli, fake_registry, fake_provider, db_file):
    """Its opening call is the probe: the session waits for its first token once, not twice."""
    registry(fake_registry, fake_provider, "status-401", "ttft-600")
    result = cli(
        "start", "--simulation-id", "s", "--primary", "fake:status-401",
        "--fallback", "fake:ttft-600", "--json",
    )  # fmt: skip

    assert result.exit_code == 0, result.stderr
    assert result.json["chosen"] == "fake:ttft-600"
    assert result.json["agent"]["ttftMs"] >= 600
    assert [r.model for r in fake_provider.received()] == ["status-401", "ttft-600"]
    assert history(db_file) == [("status-401", "start", "auth"), ("ttft-600", "start", None)]


def test_a_slow_primary_keeps_its_call_once_its_only_fallback_is_known_dead(
    cli, fake_registry, fake_provider, db_file
):
    """The 503 is known long before the primary's budget: from then on the primary is the last
    candidate that could serve, so it is not cut at its budget and the session starts."""
    registry(fake_registry, fake_provider, "ttft-600", "status-503")
    result = cli(
        "start", "--simulation-id", "s", "--primary", "fake:ttft-600",
        "--fallback", "fake:status-503", "--json",
    )  # fmt: skip

    assert result.exit_code == 0, result.stderr
    assert result.json["chosen"] == "fake:ttft-600" and result.json["usedFallback"] is False
    assert result.json["agent"]["ttftMs"] >= 600
    assert sorted(history(db_file)) == [
        ("status-503", "start", "overloaded"),
        ("ttft-600", "start", None),
    ]
    # Judged slow on that answer, but not failed: the next start may still use it.
    health = {m["model"]: m["status"] for m in cli("health", "--json").json["models"]}
    assert health["fake:ttft-600"] == "slow"


def test_the_late_answer_of_a_hedged_primary_beats_a_slower_fallback(
    cli, fake_registry, fake_provider, db_file
):
    """Hedged, not abandoned: the primary keeps going beside the fallback, and its first token
    (just past the budget) arrives before the fallback's."""
    registry(fake_registry, fake_provider, "ttft-450", "ttft-900")
    known_healthy(cli, "fake:ttft-450", "fake:ttft-900")
    result = cli("start", "--simulation-id", "s", "--primary", "fake:ttft-450", "--json")

    assert result.exit_code == 0, result.stderr
    assert result.json["chosen"] == "fake:ttft-450" and result.json["reason"] is None
    assert [r.model for r in fake_provider.received()] == ["ttft-450", "ttft-900"]
    # The fallback was cut before its own budget passed: no evidence against it.
    assert history(db_file)[2:] == [("ttft-450", "start", None)]
    # Every candidate judged is listed, the one behind the chosen one included.
    assert [c["model"] for c in result.json["candidates"]] == ["fake:ttft-900"]


def test_a_stream_that_stalls_mid_answer_is_given_up_on_after_the_budget(
    cli, fake_registry, fake_provider, db_file
):
    """Not after timeout_s (10 s here): another candidate could still serve."""
    registry(fake_registry, fake_provider, "stall-mid-stream", "ttft-50")
    known_healthy(cli, "fake:stall-mid-stream", "fake:ttft-50")
    result = cli("start", "--simulation-id", "s", "--primary", "fake:stall-mid-stream", "--json")

    assert result.exit_code == 0, result.stderr
    assert result.json["chosen"] == "fake:ttft-50"
    assert result.json["reason"] == "primary_failed_at_start"
    assert history(db_file)[2:] == [
        ("stall-mid-stream", "start", "stalled"),
        ("ttft-50", "start", None),
    ]


def test_an_opening_call_with_no_first_token_in_budget_is_hedged_by_the_next_candidate(
    cli, fake_registry, fake_provider, db_file
):
    """Both are known healthy from real sessions; the primary's opening call is too slow."""
    registry(fake_registry, fake_provider, "ttft-900", "ttft-50")
    known_healthy(cli, "fake:ttft-900", "fake:ttft-50")
    result = cli("start", "--simulation-id", "s", "--primary", "fake:ttft-900", "--json")

    assert result.exit_code == 0, result.stderr
    assert result.json["chosen"] == "fake:ttft-50"
    assert result.json["reason"] == "primary_failed_at_start"
    assert sorted(history(db_file)[2:]) == [
        ("ttft-50", "start", None),
        ("ttft-900", "start", "over_budget"),
    ]
    event = cli("fallbacks", "--json").json["events"][0]
    assert event["candidates"] == [
        {"model": "fake:ttft-900", "status": "unhealthy", "error": "over_budget"}
    ]
    # No probe was sent: fresh evidence was enough.
    assert [r.model for r in fake_provider.received()] == ["ttft-900", "ttft-50"]


def test_the_only_candidate_keeps_timeout_s_for_its_opening_call(
    cli, fake_registry, fake_provider, db_file
):
    registry(fake_registry, fake_provider, "ttft-600")
    known_healthy(cli, "fake:ttft-600")
    model = "fake:ttft-600"
    result = cli("start", "--simulation-id", "s", "--primary", model, "--fallback", model, "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json["chosen"] == model and result.json["usedFallback"] is False
    assert result.json["agent"]["ttftMs"] >= 600


def test_live_probe_through_the_cli(cli, fake_registry, fake_provider, db_file):
    registry(fake_registry, fake_provider, "ttft-50", "status-503", "status-401")
    result = cli("probe", "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json["mode"] == "live"
    assert [(r["model"], r["status"], r["error"]) for r in result.json["results"]] == [
        ("fake:ttft-50", "healthy", None),
        ("fake:status-503", "unhealthy", "overloaded"),
        ("fake:status-401", "misconfigured", "auth"),
    ]
    # A probe has no budget to cut it: it measures.
    assert {r.model for r in fake_provider.received()} == {"ttft-50", "status-503", "status-401"}


def test_ctrl_c_during_a_live_probe_exits_130_at_once_and_keeps_what_finished(
    fake_registry, fake_provider, db_file
):
    registry(fake_registry, fake_provider, "ttft-50", "hang")
    env = os.environ | {"VOICEFALLBACK_CONFIG": str(fake_registry)}
    process = subprocess.Popen(
        [sys.executable, "-m", "voicefallback", "probe", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.monotonic() + 30
    while len(fake_provider.received()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # ttft-50 has answered; "hang" never will
    process.send_signal(signal.SIGINT)
    # Waiting out the hanging call would take timeout_s (10 s): it must not.
    out, err = process.communicate(timeout=5)

    assert process.returncode == 130, err
    assert out == "" and err.strip().endswith("interrupted") and "Traceback" not in err
    assert history(db_file) == [("ttft-50", "probe", None)]


def test_stale_candidates_ahead_are_rechecked_together_not_one_budget_after_another(
    cli, fake_registry, fake_provider, db_file
):
    """Known once, their evidence expired: calling them one after another would cost the
    caller a budget each. Budgets here are 5 s: all three calls leave well within the first."""
    registry(fake_registry, fake_provider, "hang+a", "hang+b", "ttft-50", budget_ms=5000)
    known_then_stale(cli, fake_registry, "fake:hang+a", "fake:hang+b", "fake:ttft-50")
    result = cli("start", "--simulation-id", "s", "--primary", "fake:hang+a", "--json")

    assert result.exit_code == 0, result.stderr
    assert result.json["chosen"] == "fake:ttft-50"
    received = {r.model: r.at for r in fake_provider.received()}
    assert set(received) == {"hang+a", "hang+b", "ttft-50"}
    assert max(received.values()) - min(received.values()) < 5.0  # before any budget passed


def test_a_stale_fallback_that_answered_in_time_is_not_blamed_when_the_primary_wins(
    cli, fake_registry, fake_provider, db_file
):
    """Both stale, so both are called at once; the primary answers second, within its
    budget, and wins by order. The fallback answered in time: nothing is held against it."""
    registry(fake_registry, fake_provider, "ttft-200", "ttft-20+tokens-20+gap-50", budget_ms=1000)
    known_then_stale(cli, fake_registry, "fake:ttft-200", "fake:ttft-20+tokens-20+gap-50")
    result = cli(
        "start", "--simulation-id", "s", "--primary", "fake:ttft-200",
        "--fallback", "fake:ttft-20+tokens-20+gap-50", "--json",
    )  # fmt: skip

    assert result.exit_code == 0, result.stderr
    assert result.json["chosen"] == "fake:ttft-200"
    assert len(fake_provider.received()) == 2  # called together
    assert history(db_file)[2:] == [("ttft-200", "start", None)]  # nothing against the other
    health = {m["model"]: m["status"] for m in cli("health", "--json").json["models"]}
    assert health["fake:ttft-20+tokens-20+gap-50"] != "unhealthy"


def test_importing_the_sdk_is_never_charged_to_a_model_called_meanwhile(
    cli, fake_registry, fake_provider, db_file
):
    """Two stale models on one provider, called together by a fresh `start`: the second call
    waits for the client the first is building, and its budget runs only from its request."""
    registry(fake_registry, fake_provider, "ttft-100", "ttft-200")
    known_then_stale(cli, fake_registry, "fake:ttft-100", "fake:ttft-200")
    result = cli(
        "start", "--simulation-id", "s", "--primary", "fake:ttft-100",
        "--fallback", "fake:ttft-200", "--json",
    )  # fmt: skip

    assert result.exit_code == 0, result.stderr
    assert [row for row in history(db_file) if row[2] is not None] == []
