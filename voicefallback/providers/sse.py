"""Server-sent events: the streaming body both live adapters read, parsed by the WHATWG rules."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any


async def sse_events(chunks: AsyncIterator[bytes]) -> AsyncIterator[tuple[str | None, str]]:
    """(event name, data) for each server-sent event in a byte stream (WHATWG rules).

    The adapters parse the SSE body themselves instead of through the SDKs' typed stream
    classes: building pydantic objects for every chunk costs CPU on the shared loop, which under
    concurrency is measured as provider latency (see benchmarks/live_probe_ttft.py).
    """
    buffer = b""
    event: str | None = None
    data: list[str] = []
    async for chunk in chunks:
        buffer += chunk
        if b"\r" in buffer:
            held = buffer.endswith(b"\r")  # may be the first half of a CRLF
            buffer = buffer[:-1] if held else buffer
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            buffer += b"\r" if held else b""
        *lines, buffer = buffer.split(b"\n")
        for raw in lines:
            line = raw.decode("utf-8")  # a UnicodeDecodeError is a malformed stream
            if not line:
                if data:
                    yield event, "\n".join(data)
                event, data = None, []
            elif not line.startswith(":"):
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if name == "event":
                    event = value
                elif name == "data":
                    data.append(value)


def json_object(data: str) -> dict[str, Any]:
    """One SSE data payload as a JSON object; ValueError when it is anything else."""
    value = json.loads(data)
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object, got {type(value).__name__}")
    return value
