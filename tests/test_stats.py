"""Pure pieces behind `health`: percentiles, recent figures, durations, what counts as news."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from voicefallback.config import Thresholds
from voicefallback.durations import format_age, parse_duration, parse_since
from voicefallback.errors import InputError
from voicefallback.health import apply_probe, is_news
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


@pytest.mark.parametrize(
    "text, seconds",
    [("90", 90), ("90s", 90), ("15m", 900), ("1.5h", 5400), ("7d", 604800), (" 2H ", 7200)],
)
def test_durations(text, seconds):
    assert parse_duration(text, "--span") == seconds


@pytest.mark.parametrize(
    "text",
    ["", "0", "-5m", "5 minutes", "1w", "nan", "36501d", "9" * 400],  # 400 digits: inf
)
def test_bad_durations_name_the_option(text):
    with pytest.raises(InputError, match="--span"):
        parse_duration(text, "--span")


def test_since_takes_a_time_or_a_span_back_from_now():
    assert parse_since("2h", T0) == T0 - timedelta(hours=2)
    assert parse_since("2026-01-01T00:00:00Z", T0) == T0
    with pytest.raises(InputError, match="--since"):
        parse_since("last tuesday", T0)
    assert parse_since("36500d", T0) == T0 - timedelta(days=36500)  # the longest span there is


def test_ages_read_like_a_person_would_say_them():
    assert [format_age(s) for s in (0, 59, 61, 3600, 3720, 86400 * 2 + 3600 * 5)] == [
        "0s",
        "59s",
        "1m",
        "1h",
        "1h 2m",
        "2d 5h",
    ]


def test_what_is_news_for_cron():
    assert not is_news("healthy", "healthy")
    assert not is_news(None, "healthy")
    assert is_news(None, "unhealthy")
    assert is_news("healthy", "slow") and is_news("unhealthy", "healthy")


def test_status_since_is_honest():
    limits = Thresholds(stale_after_s=300)
    snapshot = apply_probe(None, call(True, 100), limits)
    assert status_since(snapshot, "healthy", limits) == T0
    assert status_since(snapshot, "stale", limits) == T0 + timedelta(seconds=300)
    assert status_since(snapshot, "slow", limits) is None  # limits changed since the verdict
    assert status_since(None, "unknown", limits) is None
