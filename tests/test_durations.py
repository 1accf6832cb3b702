"""Spans and times as people type them (`--span`, `--since`) and ages as people say them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from voicefallback.durations import format_age, parse_duration, parse_since
from voicefallback.errors import InputError

T0 = datetime(2026, 1, 1, tzinfo=UTC)


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
