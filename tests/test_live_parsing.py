"""The pieces of live calls that need no server: SSE parsing, statuses, Retry-After."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from voicefallback.providers import live
from voicefallback.records import ERROR_KINDS


def events(*chunks: bytes) -> list[tuple[str | None, str]]:
    async def feed() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    async def collect() -> list[tuple[str | None, str]]:
        return [event async for event in live.sse_events(feed())]

    return asyncio.run(collect())


def test_sse_events_with_names_comments_and_multiline_data() -> None:
    body = b': keep-alive\n\nevent: message_start\ndata: {"a":\ndata: 1}\n\ndata: [DONE]\n\n'
    assert events(body) == [("message_start", '{"a":\n1}'), (None, "[DONE]")]


def test_sse_events_split_anywhere_and_any_line_ending() -> None:
    body = b"event: x\r\ndata: one\r\n\r\ndata:two\r\rdata: three\n\n"
    split = [body[i : i + 1] for i in range(len(body))]  # every byte its own chunk
    expected = [("x", "one"), (None, "two"), (None, "three")]
    assert events(body) == expected
    assert events(*split) == expected


def test_sse_event_cut_before_its_blank_line_is_not_delivered() -> None:
    assert events(b'data: {"complete": true}\n\ndata: {"cut') == [(None, '{"complete": true}')]


def test_invalid_utf8_in_a_stream_is_an_error() -> None:
    with pytest.raises(ValueError):
        events(b"data: \xff\xfe\n\n")


def test_json_object_refuses_other_json() -> None:
    assert live.json_object('{"a": 1}') == {"a": 1}
    for data in ("[1]", '"text"', "{not json"):
        with pytest.raises(ValueError):
            live.json_object(data)


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
    assert live.status_kind(status) == kind


def test_retry_after_in_seconds_milliseconds_and_dates() -> None:
    assert live.retry_after({"retry-after": "7"}) == 7.0
    assert live.retry_after({"retry-after": "1.5"}) == 1.5
    assert live.retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert live.retry_after({}) is None
    assert live.retry_after({"retry-after": "soon"}) is None
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    seconds = live.retry_after({"retry-after": later})
    assert seconds is not None and 25 <= seconds <= 31
    past = format_datetime(datetime.now(UTC) - timedelta(seconds=30), usegmt=True)
    assert live.retry_after({"retry-after": past}) == 0.0


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
    assert live.error_event_kind(kind, code) == expected
    assert expected in ERROR_KINDS


def test_messages_are_one_redacted_bounded_line() -> None:
    secret = "sk-proj-abcdefghijklmnopqrstuvwxyz"
    text = f"HTTP 401:\n  Incorrect API key provided: {secret}\n" + "x" * 1000
    line = live.one_line(text, (secret,))
    assert "\n" not in line and secret not in line and "[REDACTED]" in line
    assert len(line) <= live.MESSAGE_LIMIT


def test_opening_prompt_keeps_request_keys_but_not_routing() -> None:
    prompt = live.opening_prompt(
        {"simulationId": "sim-9", "primary": "p:m", "fallbacks": ["q:n"], "persona": "strict"}
    )
    assert "sim-9" in prompt and "strict" in prompt
    assert "p:m" not in prompt and "q:n" not in prompt
