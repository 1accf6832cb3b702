"""Status transitions, as pure functions with an injected clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from voicefallback.config import Thresholds
from voicefallback.health import apply_probe, is_news, status_of
from voicefallback.records import ProbeResult, Snapshot

T0 = datetime(2026, 1, 1, tzinfo=UTC)
LIMITS = Thresholds(ttft_budget_ms=1000, stale_after_s=300, fail_after=2, recover_after=2)


def ok(ttft: int | None = 200, latency: int = 400, at: datetime = T0) -> ProbeResult:
    return ProbeResult(model="p:m", ok=True, at=at, ttft_ms=ttft, latency_ms=latency)


def fail(error: str = "server_error", at: datetime = T0) -> ProbeResult:
    return ProbeResult(model="p:m", ok=False, at=at, error=error)


def replay(*results: ProbeResult, limits: Thresholds = LIMITS) -> Snapshot | None:
    snapshot = None
    for result in results:
        snapshot = apply_probe(snapshot, result, limits)
    return snapshot


def status(*results: ProbeResult, limits: Thresholds = LIMITS) -> str:
    return status_of(replay(*results, limits=limits), limits, T0)


def test_never_probed_is_unknown():
    assert status_of(None, LIMITS, T0) == "unknown"


def test_a_success_within_budget_is_healthy_and_over_budget_is_slow():
    assert status(ok(ttft=999)) == "healthy"
    assert status(ok(ttft=1001)) == "slow"


def test_slow_is_judged_on_the_latest_success():
    assert status(ok(ttft=2000), ok(ttft=100)) == "healthy"
    assert status(ok(ttft=100), ok(ttft=2000)) == "slow"


def test_no_visible_text_is_judged_on_total_time():
    assert status(ok(ttft=None, latency=800)) == "healthy"
    assert status(ok(ttft=None, latency=1800)) == "slow"


def test_failures_below_fail_after_keep_a_healthy_verdict():
    assert status(ok(), fail()) == "healthy"
    assert status(ok(), fail(), fail()) == "unhealthy"


def test_a_model_needs_one_success_to_be_usable():
    assert status(fail()) == "unhealthy"  # below fail_after, but never answered


def test_recovery_needs_recover_after_consecutive_successes():
    down = (ok(), fail(), fail())
    assert status(*down, ok()) == "unhealthy"
    assert status(*down, ok(), ok()) == "healthy"
    assert status(*down, ok(), fail(), ok()) == "unhealthy"  # the streak was broken


@pytest.mark.parametrize("kind", ["auth", "not_found", "bad_request", "missing_key"])
def test_a_config_failure_is_misconfigured_at_once_whatever_fail_after_says(kind):
    limits = Thresholds(fail_after=5)
    assert status(ok(), fail(kind), limits=limits) == "misconfigured"


@pytest.mark.parametrize("kind", ["auth", "not_found", "bad_request", "missing_key"])
def test_one_success_clears_misconfigured_a_fixed_configuration_is_not_flakiness(kind):
    limits = Thresholds(fail_after=1, recover_after=3)
    assert status(fail(kind), ok(), limits=limits) == "healthy"
    assert status(ok(), fail(kind), fail(kind), ok(), limits=limits) == "healthy"
    # ...but a transient failure after it is flakiness again: recover_after applies
    assert status(fail(kind), ok(), fail(), ok(), limits=limits) == "unhealthy"
    assert status(fail(), ok(), limits=limits) == "unhealthy"


def test_old_evidence_is_stale_whatever_it_said():
    snapshot = replay(ok())
    assert status_of(snapshot, LIMITS, T0 + timedelta(seconds=300)) == "healthy"
    assert status_of(snapshot, LIMITS, T0 + timedelta(seconds=301)) == "stale"


def test_counters_and_status_since():
    later = T0 + timedelta(seconds=10)
    snapshot = replay(ok(at=T0), ok(at=later), fail(at=later + timedelta(seconds=5)))
    assert snapshot is not None
    assert snapshot.consecutive_failures == 1 and snapshot.consecutive_successes == 0
    assert snapshot.last_error == "server_error"
    assert snapshot.status_since == T0  # still healthy (fail_after=2) since the first probe
    snapshot = apply_probe(snapshot, fail(at=later + timedelta(seconds=6)), LIMITS)
    assert snapshot.last_status == "unhealthy"
    assert snapshot.status_since == later + timedelta(seconds=6)


def test_what_is_news_for_cron():
    assert not is_news("healthy", "healthy")
    assert not is_news(None, "healthy")
    assert is_news(None, "unhealthy")
    assert is_news("healthy", "slow") and is_news("unhealthy", "healthy")
