"""Recent figures behind `health`: percentiles, success rates, how long a status has held."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from voicefallback.config import Thresholds
from voicefallback.health import apply_probe
from voicefallback.records import ProbeResult
from voicefallback.stats import percentile, recent_stats, status_since

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def call(ok: bool, ttft: int | None = None, latency: int | None = 500) -> ProbeResult:
    return ProbeResult(model="p:m", ok=ok, at=T0, ttft_ms=ttft, latency_ms=latency)


def test_percentiles_are_nearest_rank():
    values = list(range(1, 101))
    assert percentile(values, 0.5) == 50 and percentile(values, 0.95) == 95
    assert percentile([7], 0.95) == 7
    assert percentile([300, 100, 200], 0.5) == 200
    assert percentile([], 0.5) is None


def test_recent_stats_judge_successes_like_the_verdict_does():
    stats = recent_stats([call(True, 100), call(False), call(True, None, 900), call(True, 300)])
    assert (stats.calls, stats.successes, stats.success_rate) == (4, 3, 0.75)
    # A success without visible text counts with its total time, as `slow` does.
    assert (stats.ttft_p50_ms, stats.ttft_p95_ms) == (300, 900)
    assert recent_stats([]).success_rate is None


def test_status_since_is_honest():
    limits = Thresholds(stale_after_s=300)
    snapshot = apply_probe(None, call(True, 100), limits)
    assert status_since(snapshot, "healthy", limits) == T0
    assert status_since(snapshot, "stale", limits) == T0 + timedelta(seconds=300)
    assert status_since(snapshot, "slow", limits) is None  # limits changed since the verdict
    assert status_since(None, "unknown", limits) is None
