"""Failures classified into the error kinds (README "Health"); messages cut to one redacted line."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from voicefallback.providers import classify
from voicefallback.records import ERROR_KINDS


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "bad_request"),
        (401, "auth"),
        (403, "auth"),
        (404, "not_found"),
        (408, "bad_request"),
        (413, "bad_request"),
        (422, "bad_request"),
        (429, "rate_limited"),
        (500, "server_error"),
        (502, "server_error"),
        (503, "overloaded"),
        (504, "server_error"),
        (529, "overloaded"),
    ],
)
def test_status_kinds_follow_the_spec(status: int, kind: str) -> None:
    assert classify.status_kind(status) == kind


def test_retry_after_in_seconds_milliseconds_and_dates() -> None:
    assert classify.retry_after({"retry-after": "7"}) == 7.0
    assert classify.retry_after({"retry-after": "1.5"}) == 1.5
    assert classify.retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert classify.retry_after({}) is None
    assert classify.retry_after({"retry-after": "soon"}) is None
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    seconds = classify.retry_after({"retry-after": later})
    assert seconds is not None and 25 <= seconds <= 31
    past = format_datetime(datetime.now(UTC) - timedelta(seconds=30), usegmt=True)
    assert classify.retry_after({"retry-after": past}) == 0.0


@pytest.mark.parametrize(
    ("kind", "code", "expected"),
    [
        ("overloaded_error", "", "overloaded"),
        ("rate_limit_error", "", "rate_limited"),
        ("requests", "rate_limit_exceeded", "rate_limited"),
        ("insufficient_quota", "", "rate_limited"),
        ("authentication_error", "", "auth"),
        ("not_found_error", "", "not_found"),
        ("invalid_request_error", "", "bad_request"),
        ("api_error", "", "server_error"),
        ("", "", "server_error"),
    ],
)
def test_errors_inside_streams_map_to_spec_kinds(kind: str, code: str, expected: str) -> None:
    assert classify.error_event_kind(kind, code) == expected
    assert expected in ERROR_KINDS


def test_messages_are_one_redacted_bounded_line() -> None:
    secret = "sk-proj-abcdefghijklmnopqrstuvwxyz"
    text = f"HTTP 401:\n  Incorrect API key provided: {secret}\n" + "x" * 1000
    line = classify.one_line(text, (secret,))
    assert "\n" not in line and secret not in line and "[REDACTED]" in line
    assert len(line) <= classify.MESSAGE_LIMIT
