"""The HTTP connection's limits: time to send a request, size of its head, connections open."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any, cast

log = logging.getLogger("voicefallback.serve")

READ_TIMEOUT_S = 10.0  # default: a request's head and body, from its first byte
MAX_HEAD_BYTES = 64 * 1024  # request line and headers; nginx's default is 32 KiB
# Open files kept free for what serving needs besides client connections: the state file or
# database, provider connection pools, the listening socket, stdio.
RESERVED_FILES = 64
# A refused connection stays open until the client's first bytes have been read (closing
# with bytes unread resets the connection, and the 503 with it), this long at most; at most
# half the reserve is spent so.
REFUSED_LINGER_S = 1.0


@dataclass
class Limits:
    """What every connection of one server shares: its limits, and the current episode of
    refused connections (one log line when it begins, one when it ends, not one per accept)."""

    read_timeout_s: float = READ_TIMEOUT_S
    max_connections: int = 1 << 20
    refused: int = 0
    lingering: int = 0  # refused connections still open, see REFUSED_LINGER_S

    def refuse(self, open_now: int) -> None:
        if self.refused == 0:
            log.warning(
                "refusing new connections with 503: %d open, the most this process serves "
                "(its open-file limit less %d; see LimitNOFILE in the README)",
                open_now,
                RESERVED_FILES,
            )
        self.refused += 1

    def accept(self, open_now: int) -> None:
        # Below nine tenths of the limit again: an episode ends once, not at every accept
        # that happens to find one slot free.
        if self.refused and open_now < self.max_connections * 9 // 10:
            log.warning("accepting connections again; %d were refused", self.refused)
            self.refused = 0


def open_file_limit() -> int:
    """The soft open-file limit, raised to the hard one first (systemd's soft default, 1,024,
    is a few slow clients away; its hard default is 524,288)."""
    try:
        import resource
    except ImportError:  # not a POSIX system: no limit to read
        return 1 << 20
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard and hard != resource.RLIM_INFINITY:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def limits_for(read_timeout_s: float) -> Limits:
    files = open_file_limit()
    return Limits(read_timeout_s, max_connections=max(1, files - RESERVED_FILES))


def _answer(status: int, reason: str, message: str, extra: str = "") -> bytes:
    """A whole response written by the edge itself, before any route: `{"error": ...}`."""
    body = (json.dumps({"error": message}) + "\n").encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n{extra}connection: close\r\n\r\n"
    )
    return head.encode() + body


BUSY = _answer(503, "Service Unavailable", "too many connections", "retry-after: 1\r\n")
TOO_SLOW = _answer(408, "Request Timeout", "request not received in time")
HEAD_TOO_LARGE = _answer(
    431,
    "Request Header Fields Too Large",
    f"request line and headers larger than {MAX_HEAD_BYTES // 1024} KiB",
)


def protocol_class(limits: Limits) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol, bounded: a request's head and body must arrive within
    `limits.read_timeout_s` of its first byte (a connection's first byte, of its opening) and
    its head within MAX_HEAD_BYTES, and past `limits.max_connections` a connection is
    answered 503 and closed at once. What the edge answers never reaches the app, so it is
    checked before the bearer token."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class BoundedProtocol(HttpToolsProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._deadline: asyncio.TimerHandle | None = None
            self._in_head = False  # between a request's first byte and its last header
            self._head_bytes = 0
            self._answered = False  # by the edge: what the client still sends is dropped
            self._refused: asyncio.WriteTransport | None = None  # answered 503, closing
            self._lingering: asyncio.TimerHandle | None = None  # its close at the latest

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            open_now = len(self.connections)
            if open_now >= limits.max_connections:
                limits.refuse(open_now)
                self._answered = True
                writable = cast(asyncio.WriteTransport, transport)  # uvloop's is no subclass
                writable.write(BUSY)
                if limits.lingering >= RESERVED_FILES // 2:
                    writable.close()
                    return
                limits.lingering += 1
                self._refused = writable
                loop = asyncio.get_running_loop()
                self._lingering = loop.call_later(REFUSED_LINGER_S, writable.close)
                return
            limits.accept(open_now)
            super().connection_made(transport)  # type: ignore[arg-type]
            self._arm()  # a connection that never sends a byte is closed too

        def connection_lost(self, exc: Exception | None) -> None:
            if self._lingering is not None:
                self._lingering.cancel()
                self._lingering = None
                limits.lingering -= 1
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
            if self.transport is not None:  # None: refused before uvicorn saw it
                super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._refused is not None:  # its request is read: closing resets nothing
                self._refused.close()
                return
            if self._answered:
                return  # read and dropped until the client closes or the deadline passes
            super().data_received(data)
            if self._in_head and not self.transport.is_closing():
                self._head_bytes += len(data)
                if self._head_bytes > MAX_HEAD_BYTES:
                    self._answer(HEAD_TOO_LARGE, close=False)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._in_head, self._head_bytes = True, 0
            self._arm()

        def on_headers_complete(self) -> None:
            self._in_head = False
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
            super().on_message_complete()

        def _arm(self) -> None:
            if self._deadline is None:
                self._deadline = self.loop.call_later(limits.read_timeout_s, self._too_slow)

        def _too_slow(self) -> None:
            self._deadline = None
            started = self.cycle is not None and self.cycle.response_started
            if self._answered or started:
                self.transport.close()
            else:
                self._answer(TOO_SLOW, close=True)

        def _answer(self, response: bytes, *, close: bool) -> None:
            """Answer for the app and stop parsing. Closing at once would reset a client still
            sending (its unread bytes make the kernel send RST, which can destroy the answer
            in flight), so unless `close`, the rest is read and dropped until the client
            closes, or the deadline."""
            self._answered = True
            self.transport.write(response)
            if close:
                self.transport.close()
            else:
                self._arm()

    return BoundedProtocol
