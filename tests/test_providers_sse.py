"""Server-sent events as the live adapters read them (WHATWG rules)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from voicefallback.providers import sse


def events(*chunks: bytes) -> list[tuple[str | None, str]]:
    async def feed() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    async def collect() -> list[tuple[str | None, str]]:
        return [event async for event in sse.sse_events(feed())]

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
    assert sse.json_object('{"a": 1}') == {"a": 1}
    for data in ("[1]", '"text"', "{not json"):
        with pytest.raises(ValueError):
            sse.json_object(data)
