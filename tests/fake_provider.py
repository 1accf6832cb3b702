"""A fake OpenAI + Anthropic HTTP server on 127.0.0.1, for offline tests of the live adapters.

It speaks the real wire formats (JSON errors, SSE streams, chunked HTTP/1.1 with keep-alive), so
the official SDKs can be pointed at it through `base_url`. What a model does is chosen by its
name: directives joined by "+", for example "ttft-200", "status-429-retry-7" or
"ttft-100+no-done". Every request is recorded (path, headers, body) for tests to assert on.

Directives:
  ok                    a short healthy answer (also what any unknown directive means)
  ttft-N                first content token N ms after the request (headers are sent at once)
  headers-N             response headers N ms after the request
  tokens-N / gap-N      N content tokens / N ms between tokens
  status-C[-retry-S]    HTTP status C with the provider's JSON error body [and Retry-After: S]
  status-C-html         HTTP status C with an HTML body, as a gateway would send
  status-C-detail       HTTP status C with {"detail": "Not Found"}, as FastAPI servers send
  hang                  read the request, never answer
  reset-before-headers  read the request, then reset the connection
  cut-mid-stream        send two tokens, then reset the connection
  stall-mid-stream      send two tokens, then go silent (connection kept open)
  trickle-mid-stream    send two tokens, then only SSE comments every 100 ms, forever
  malformed-chunk       send two tokens, then a chunk that is not JSON
  no-done               complete OpenAI stream without "data: [DONE]", body ended properly
  no-done-hold          complete OpenAI stream without [DONE] and the body never ends
  no-finish             stream body ends without finish_reason / message_stop
  think-only            reasoning only, no visible text, proper end
  error-mid-stream      two tokens, then an error inside the stream (Anthropic: overloaded)
  reject-P              answer 400 "Unsupported parameter: 'P'" to a request that has P
  groq-usage            usage in the last chunk's x_groq object, as Groq sends it
  cut-after-end         a complete stream, then a reset instead of the end of the body
  echo-key              the answer's text repeats the key the request presented
  keepalive-N           SSE comments ": keep-alive" every 100 ms until N ms, then the answer
  empty-N               until N ms, every 100 ms a frame with nothing to hear (OpenAI: an
                        empty-content delta; Anthropic: a ping event), then the answer
  tool-call             the answer is a call of the request's first tool (else "lookup") with
                        arguments {"city": "Paris"} sent in pieces (OpenAI delta.tool_calls,
                        finish_reason "tool_calls"; Anthropic tool_use + input_json_delta,
                        stop_reason "tool_use")

Framework plugins (LiveKit's, Pipecat's) send their own parameters (tools, tool_choice,
stream_options, temperature, ...): every one is accepted and recorded. GET /v1/models answers
an empty list, as LiveKit's OpenAI plugin asks it when it prewarms.

Run as a script (`python tests/fake_provider.py`) it serves until killed and prints its URL.
The end of this module has the helpers tests use to point real adapters at it; the fixtures are
in tests/conftest_live.py.
"""

from __future__ import annotations

import asyncio
import json
import select
import socket
import struct
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from voicefallback.config import Model, Provider, Thresholds

if TYPE_CHECKING:
    from voicefallback.records import ProbeResult

OPENAI_KEY = "sk-fake-openai-0123456789abcdefghij"
ANTHROPIC_KEY = "sk-ant-fake-0123456789abcdefghij"
DEFAULT_TEXT = ["Hello", ",", " welcome", " to", " your", " interview", "."]


@dataclass(frozen=True)
class Received:
    """One request as the fake saw it."""

    path: str
    headers: dict[str, str]  # lower-case names
    body: Any
    at: float  # time.perf_counter() when the body had been read

    @property
    def model(self) -> str | None:
        return self.body.get("model") if isinstance(self.body, dict) else None


@dataclass
class Plan:
    """What one model does, parsed from its name."""

    ttft_ms: int = 0
    headers_ms: int = 0
    tokens: int | None = None
    gap_ms: int = 0
    status: int | None = None
    retry_after: str | None = None
    html: bool = False
    detail: bool = False  # a FastAPI-style {"detail": ...} body (vLLM, proxies)
    mode: str = "ok"
    flags: set[str] = field(default_factory=set)
    rejects: set[str] = field(default_factory=set)
    echo: str | None = None  # echo-key: the key presented, to repeat in the text
    keepalive_ms: int = 0
    empty_ms: int = 0

    @classmethod
    def parse(cls, name: str) -> Plan:
        plan = cls()
        for part in name.split("+"):
            pieces = part.split("-")
            head = pieces[0]
            if head in ("keepalive", "empty") and len(pieces) == 2:
                if head == "keepalive":
                    plan.keepalive_ms = int(pieces[1])
                else:
                    plan.empty_ms = int(pieces[1])
            elif head in ("ttft", "headers", "tokens", "gap") and len(pieces) == 2:
                value = int(pieces[1])
                if head == "ttft":
                    plan.ttft_ms = value
                elif head == "headers":
                    plan.headers_ms = value
                elif head == "tokens":
                    plan.tokens = value
                else:
                    plan.gap_ms = value
            elif head == "status" and len(pieces) >= 2:
                plan.status = int(pieces[1])
                if len(pieces) >= 4 and pieces[2] == "retry":
                    plan.retry_after = pieces[3]
                plan.html = "html" in pieces[2:]
                plan.detail = "detail" in pieces[2:]
            elif part in (
                "hang",
                "reset-before-headers",
                "cut-mid-stream",
                "stall-mid-stream",
                "trickle-mid-stream",
                "malformed-chunk",
                "no-finish",
                "think-only",
                "error-mid-stream",
            ):
                plan.mode = part
            elif part in (
                "no-done",
                "no-done-hold",
                "groq-usage",
                "cut-after-end",
                "tool-call",
                "echo-key",
            ):
                plan.flags.add(part)
            elif head == "reject" and len(pieces) == 2:
                plan.rejects.add(pieces[1])
        return plan


class FakeProvider:
    """The server, its recorded requests, and the keys it accepts."""

    def __init__(self, keys: tuple[str, ...] = (OPENAI_KEY, ANTHROPIC_KEY)) -> None:
        self.keys = set(keys)
        self._lock = threading.Lock()
        self._received: list[Received] = []
        self.first_token_ms: list[
            float
        ] = []  # when each first token really left, after the request
        self.stopping = threading.Event()
        self.server = _Server(("127.0.0.1", 0), _Handler)
        self.server.fake = self
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def start(self) -> FakeProvider:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> FakeProvider:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def record(self, received: Received) -> None:
        with self._lock:
            self._received.append(received)

    def received(self, model: str | None = None) -> list[Received]:
        with self._lock:
            return [r for r in self._received if model is None or r.model == model]

    def clear(self) -> None:
        with self._lock:
            self._received.clear()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 256  # dozens of clients connect at once
    fake: FakeProvider

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], OSError):  # clients dropping connections is normal
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Small SSE writes must leave at once, as from a real server (no Nagle delay).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # -- request ---------------------------------------------------------------

    def do_GET(self) -> None:
        if self.path == "/_first_token_ms":
            with self.server.fake._lock:
                self._json(200, list(self.server.fake.first_token_ms))
        elif self.path == "/v1/models":
            self._json(200, {"object": "list", "data": []})
        else:
            self._json(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self) -> None:
        fake = self.server.fake
        began = time.perf_counter()
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = raw.decode("utf-8", "replace")
        headers = {name.lower(): value for name, value in self.headers.items()}
        fake.record(Received(self.path, headers, body, time.perf_counter()))

        route = self.path.split("?", 1)[0]  # Pipecat's Anthropic service asks ?beta=true
        if route == "/v1/chat/completions":
            dialect: _Dialect = _OpenAI(self)
        elif route == "/v1/messages":
            dialect = _Anthropic()
        else:
            self._json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
            return
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            self._json(400, dialect.error_body(400, "request body must be JSON with a model"))
            return
        key = _presented_key(headers)
        if key not in fake.keys:
            message = f"Incorrect API key provided: {key}" if key else "No API key provided"
            self._json(401, dialect.error_body(401, message))
            return

        plan = Plan.parse(body["model"])
        if "echo-key" in plan.flags:
            plan.echo = key
        refused = sorted(plan.rejects & set(body))
        if refused:
            message = f"Unsupported parameter: '{refused[0]}' is not supported with this model."
            if refused[0] == "max_tokens":
                message += " Use 'max_completion_tokens' instead."  # as OpenAI says it
            self._json(400, dialect.error_body(400, message))
            return
        if plan.mode == "hang":
            self._hold()
            return
        if plan.mode == "reset-before-headers":
            self._reset()
            return
        self._sleep_until(began, plan.headers_ms)
        if plan.status is not None:
            self._error(dialect, plan)
            return
        if not body.get("stream"):
            self._json(200, dialect.complete(body, _text(plan)))
            return
        self._stream(dialect, body, plan, began)

    # -- responses -------------------------------------------------------------

    def _error(self, dialect: _Dialect, plan: Plan) -> None:
        assert plan.status is not None
        extra = {"retry-after": plan.retry_after} if plan.retry_after else {}
        if plan.html:
            page = f"<html><body><h1>{plan.status} Bad Gateway</h1></body></html>".encode()
            self._send(plan.status, "text/html", page, extra)
            return
        if plan.detail:
            self._json(plan.status, {"detail": "Not Found"}, extra)
            return
        self._json(plan.status, dialect.error_body(plan.status, None), extra)

    def _stream(self, dialect: _Dialect, body: dict[str, Any], plan: Plan, began: float) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for event in dialect.stream_head(body):
                self._chunk(event)
            self._idle(began, plan.keepalive_ms, lambda: b": keep-alive\n\n")
            self._idle(began, plan.empty_ms, dialect.empty)
            self._sleep_until(began, plan.ttft_ms)
            if "tool-call" in plan.flags:
                self._tool_call(dialect, body, began)
                return
            pieces = _text(plan)
            if plan.mode in (
                "cut-mid-stream",
                "stall-mid-stream",
                "trickle-mid-stream",
                "malformed-chunk",
                "error-mid-stream",
            ):
                pieces = pieces[:2]
            if plan.mode == "think-only":
                for event in dialect.thinking(4):
                    self._chunk(event)
                pieces = []
            for index, piece in enumerate(pieces):
                if index and plan.gap_ms:
                    time.sleep(plan.gap_ms / 1000)
                self._chunk(dialect.token(piece, first=index == 0))
                if index == 0:
                    with self.server.fake._lock:
                        self.server.fake.first_token_ms.append((time.perf_counter() - began) * 1000)
            if plan.mode == "cut-mid-stream":
                self._reset()
                return
            if plan.mode == "stall-mid-stream":
                self._hold()
                return
            if plan.mode == "trickle-mid-stream":
                while not self.server.fake.stopping.is_set():
                    self._chunk(b": keep-alive\n\n")
                    time.sleep(0.1)
                return
            if plan.mode == "malformed-chunk":
                self._chunk(dialect.malformed())
                self._end()
                return
            if plan.mode == "error-mid-stream":
                self._chunk(dialect.stream_error())
                self._end()
                return
            if plan.mode != "no-finish":
                for event in dialect.stream_tail(body, len(pieces), plan):
                    self._chunk(event)
            if "no-done-hold" in plan.flags:
                self._hold()
                return
            if "cut-after-end" in plan.flags:
                self._reset()
                return
            self._end()
        except OSError:
            self.close_connection = True  # the client went away

    def _tool_call(self, dialect: _Dialect, body: dict[str, Any], began: float) -> None:
        for index, event in enumerate(dialect.tool_call(_first_tool(body), TOOL_ARGUMENTS)):
            self._chunk(event)
            if index == 0:
                with self.server.fake._lock:
                    self.server.fake.first_token_ms.append((time.perf_counter() - began) * 1000)
        self._end()

    def _idle(self, began: float, until_ms: int, frame: Any) -> None:
        """Frames with nothing to hear every 100 ms, until `until_ms` after the request."""
        end = began + until_ms / 1000
        while time.perf_counter() < end and not self.server.fake.stopping.is_set():
            self._chunk(frame())
            time.sleep(max(0.0, min(0.1, end - time.perf_counter())))

    # -- plumbing --------------------------------------------------------------

    def _json(self, status: int, payload: Any, extra: dict[str, str] | None = None) -> None:
        self._send(status, "application/json", json.dumps(payload).encode(), extra or {})

    def _send(self, status: int, kind: str, data: bytes, extra: dict[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        for name, value in extra.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _end(self) -> None:
        self.wfile.write(b"0\r\n\r\n")

    def _sleep_until(self, began: float, delay_ms: int) -> None:
        remaining = began + delay_ms / 1000 - time.perf_counter()
        if remaining > 0:
            time.sleep(remaining)

    def _hold(self) -> None:
        """Keep the connection open and silent until the client leaves or the server stops."""
        self.close_connection = True
        while not self.server.fake.stopping.is_set():
            readable, _, _ = select.select([self.connection], [], [], 0.05)
            if readable:
                try:
                    if not self.connection.recv(1024):
                        return
                except OSError:
                    return

    def _reset(self) -> None:
        """Close with a TCP reset, as a crashing proxy would."""
        self.close_connection = True
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()


def _presented_key(headers: dict[str, str]) -> str | None:
    if "x-api-key" in headers:
        return headers["x-api-key"]
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return None


TOOL_ARGUMENTS = ['{"city"', ': "Par', 'is"}']  # {"city": "Paris"}, in pieces


def _first_tool(body: dict[str, Any]) -> str:
    """The name of the first tool the request offers (OpenAI or Anthropic shape)."""
    for tool in body.get("tools") or ():
        if isinstance(tool, dict):
            name = (tool.get("function") or {}).get("name") or tool.get("name")
            if isinstance(name, str):
                return name
    return "lookup"


def _text(plan: Plan) -> list[str]:
    if plan.echo is not None:
        return ["Your key is ", plan.echo, "."]
    if plan.tokens is None:
        return list(DEFAULT_TEXT)
    return [f" tok{index}" for index in range(plan.tokens)]


def _sse(data: Any, event: str | None = None) -> bytes:
    line = f"data: {json.dumps(data, separators=(',', ':'))}\n\n"
    return (f"event: {event}\n{line}" if event else line).encode()


class _Dialect(Protocol):
    """One provider's wire format."""

    def error_body(self, status: int, message: str | None) -> Any: ...
    def complete(self, body: dict[str, Any], pieces: list[str]) -> Any: ...
    def stream_head(self, body: dict[str, Any]) -> Iterator[bytes]: ...
    def token(self, text: str, first: bool) -> bytes: ...
    def thinking(self, count: int) -> Iterator[bytes]: ...
    def empty(self) -> bytes: ...
    def tool_call(self, name: str, arguments: list[str]) -> Iterator[bytes]: ...
    def stream_tail(self, body: dict[str, Any], count: int, plan: Plan) -> Iterator[bytes]: ...
    def stream_error(self) -> bytes: ...
    def malformed(self) -> bytes: ...


_OPENAI_ERRORS = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Forbidden."),
    404: (
        "invalid_request_error",
        "model_not_found",
        "The model does not exist or you do not have access to it.",
    ),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests."),
    500: ("server_error", None, "The server had an error while processing your request."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
}


class _OpenAI:
    def __init__(self, handler: _Handler) -> None:
        self.id = f"chatcmpl-{id(handler):x}"
        self.model = ""

    def _chunk(self, model: str, choices: list[Any], usage: Any = None) -> bytes:
        return _sse(
            {
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": 1700000000,
                "model": model,
                "system_fingerprint": "fp_fake",
                "choices": choices,
                "usage": usage,
            }
        )

    def error_body(self, status: int, message: str | None) -> Any:
        kind, code, default = _OPENAI_ERRORS.get(status, ("server_error", None, f"Error {status}."))
        return {"error": {"message": message or default, "type": kind, "param": None, "code": code}}

    def complete(self, body: dict[str, Any], pieces: list[str]) -> Any:
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": 1700000000,
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "logprobs": None,
                    "message": {"role": "assistant", "content": "".join(pieces)},
                }
            ],
            "usage": {
                "prompt_tokens": 12,
                "completion_tokens": len(pieces),
                "total_tokens": 12 + len(pieces),
            },
        }

    def stream_head(self, body: dict[str, Any]) -> Iterator[bytes]:
        self.model = body["model"]
        yield self._chunk(
            self.model,
            [
                {
                    "index": 0,
                    "delta": {"role": "assistant", "content": "", "refusal": None},
                    "logprobs": None,
                    "finish_reason": None,
                }
            ],
        )

    def token(self, text: str, first: bool) -> bytes:
        return self._chunk(
            self.model,
            [{"index": 0, "delta": {"content": text}, "logprobs": None, "finish_reason": None}],
        )

    def empty(self) -> bytes:
        return self._chunk(
            self.model,
            [{"index": 0, "delta": {"content": ""}, "logprobs": None, "finish_reason": None}],
        )

    def tool_call(self, name: str, arguments: list[str]) -> Iterator[bytes]:
        def delta(call: dict[str, Any]) -> bytes:
            choice = {"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": None}
            return self._chunk(self.model, [{**choice, "logprobs": None}])

        yield delta(
            {
                "index": 0,
                "id": "call_fake",
                "type": "function",
                "function": {"name": name, "arguments": ""},
            }
        )
        for piece in arguments:
            yield delta({"index": 0, "function": {"arguments": piece}})
        last = {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "tool_calls"}
        yield self._chunk(self.model, [last])
        usage = {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21}
        yield self._chunk(self.model, [], usage)
        yield b"data: [DONE]\n\n"

    def thinking(self, count: int) -> Iterator[bytes]:
        for _ in range(count):
            yield self._chunk(
                self.model,
                [
                    {
                        "index": 0,
                        "delta": {"content": None, "reasoning_content": "hmm"},
                        "logprobs": None,
                        "finish_reason": None,
                    }
                ],
            )

    def stream_tail(self, body: dict[str, Any], count: int, plan: Plan) -> Iterator[bytes]:
        reason = "length" if plan.mode == "think-only" else "stop"
        last = {"index": 0, "delta": {}, "logprobs": None, "finish_reason": reason}
        if "groq-usage" in plan.flags:
            usage = {"prompt_tokens": 12, "completion_tokens": count, "total_tokens": 12 + count}
            yield _sse(
                {
                    "id": self.id,
                    "object": "chat.completion.chunk",
                    "model": self.model,
                    "choices": [last],
                    "x_groq": {"id": "req_fake", "usage": usage},
                }
            )
        else:
            yield self._chunk(self.model, [last])
        if (body.get("stream_options") or {}).get(
            "include_usage"
        ) and "groq-usage" not in plan.flags:
            completion = 16 if plan.mode == "think-only" else count
            yield self._chunk(
                self.model,
                [],
                {
                    "prompt_tokens": 12,
                    "completion_tokens": completion,
                    "total_tokens": 12 + completion,
                },
            )
        if not plan.flags & {"no-done", "no-done-hold"}:
            yield b"data: [DONE]\n\n"

    def malformed(self) -> bytes:
        return b'data: {"id": "chatcmpl-x", "choices": [{"delta": \n\n'

    def stream_error(self) -> bytes:
        return _sse(
            {
                "error": {
                    "message": "The server had an error processing your request.",
                    "type": "server_error",
                    "param": None,
                    "code": None,
                }
            }
        )


_ANTHROPIC_ERRORS = {
    400: ("invalid_request_error", "Invalid request."),
    401: ("authentication_error", "invalid x-api-key"),
    403: ("permission_error", "Your API key does not have permission to use this resource."),
    404: ("not_found_error", "model: not found"),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of request tokens has exceeded your rate limit."),
    500: ("api_error", "Internal server error"),
    503: ("api_error", "Service unavailable"),
    529: ("overloaded_error", "Overloaded"),
}


class _Anthropic:
    block = 0

    def error_body(self, status: int, message: str | None) -> Any:
        kind, default = _ANTHROPIC_ERRORS.get(status, ("api_error", f"Error {status}."))
        return {
            "type": "error",
            "error": {"type": kind, "message": message or default},
            "request_id": "req_fake",
        }

    def complete(self, body: dict[str, Any], pieces: list[str]) -> Any:
        return {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": [{"type": "text", "text": "".join(pieces)}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 12, "output_tokens": len(pieces)},
        }

    def stream_head(self, body: dict[str, Any]) -> Iterator[bytes]:
        self.block = 0
        yield _sse(
            {
                "type": "message_start",
                "message": {
                    "id": "msg_fake",
                    "type": "message",
                    "role": "assistant",
                    "content": [],
                    "model": body["model"],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": 12, "output_tokens": 1},
                },
            },
            "message_start",
        )
        yield _sse({"type": "ping"}, "ping")

    def token(self, text: str, first: bool) -> bytes:
        delta = _sse(
            {
                "type": "content_block_delta",
                "index": self.block,
                "delta": {"type": "text_delta", "text": text},
            },
            "content_block_delta",
        )
        if not first:
            return delta
        start = _sse(
            {
                "type": "content_block_start",
                "index": self.block,
                "content_block": {"type": "text", "text": ""},
            },
            "content_block_start",
        )
        return start + delta

    def empty(self) -> bytes:
        return _sse({"type": "ping"}, "ping")

    def tool_call(self, name: str, arguments: list[str]) -> Iterator[bytes]:
        block = {"type": "tool_use", "id": "toolu_fake", "name": name, "input": {}}
        yield _sse(
            {"type": "content_block_start", "index": 0, "content_block": block},
            "content_block_start",
        )
        for piece in arguments:
            delta = {"type": "input_json_delta", "partial_json": piece}
            yield _sse(
                {"type": "content_block_delta", "index": 0, "delta": delta}, "content_block_delta"
            )
        yield _sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
        yield _sse(
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                "usage": {"output_tokens": 9},
            },
            "message_delta",
        )
        yield _sse({"type": "message_stop"}, "message_stop")

    def thinking(self, count: int) -> Iterator[bytes]:
        yield _sse(
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "thinking", "thinking": "", "signature": ""},
            },
            "content_block_start",
        )
        for _ in range(count):
            yield _sse(
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "thinking_delta", "thinking": "hmm"},
                },
                "content_block_delta",
            )
        yield _sse({"type": "content_block_stop", "index": 0}, "content_block_stop")

    def stream_tail(self, body: dict[str, Any], count: int, plan: Plan) -> Iterator[bytes]:
        if count:
            yield _sse({"type": "content_block_stop", "index": self.block}, "content_block_stop")
        reason = "max_tokens" if plan.mode == "think-only" else "end_turn"
        output = 16 if plan.mode == "think-only" else count
        yield _sse(
            {
                "type": "message_delta",
                "delta": {"stop_reason": reason, "stop_sequence": None},
                "usage": {"output_tokens": output},
            },
            "message_delta",
        )
        yield _sse({"type": "message_stop"}, "message_stop")

    def malformed(self) -> bytes:
        return b'event: content_block_delta\ndata: {"type": "content_blo\n\n'

    def stream_error(self) -> bytes:
        return _sse(
            {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
            "error",
        )


# -- pointing real adapters at the fake -------------------------------------------------------

KINDS = ("openai", "anthropic")
KEY_ENV = {"openai": "VF_TEST_OPENAI_KEY", "anthropic": "VF_TEST_ANTHROPIC_KEY"}
KEYS = {"openai": OPENAI_KEY, "anthropic": ANTHROPIC_KEY}
SHORT_TIMEOUT_S = 0.5
# How far past timeout_s a call may end: generous, this is a bound on behaviour, not a benchmark.
TIMEOUT_MARGIN_S = 1.0


def provider_for(fake: FakeProvider, kind: str, key_env: str | None = None) -> Provider:
    """A provider of `kind` whose SDK talks to the fake (the SDKs add /v1/... themselves)."""
    base_url = f"{fake.url}/v1" if kind == "openai" else fake.url
    return Provider(
        name=f"fake-{kind}", type=kind, api_key_env=key_env or KEY_ENV[kind], base_url=base_url
    )


class BlockingAdapter:
    """Real live adapters (through the pool that redacts and bounds them) driven from
    synchronous test code, on one event loop of their own that lives as long as they do
    (a client's connections belong to the loop it was built on)."""

    def __init__(self, adapter: Any) -> None:
        self.adapter = adapter
        self._loop = asyncio.Runner()

    def probe(self, model: Model) -> ProbeResult:
        return self._loop.run(self.adapter.probe(model))

    def open_session(self, model: Model, request: Any) -> ProbeResult:
        """The opening call a start with this request body makes."""
        from voicefallback.sessions import opening_call

        return self._loop.run(self.adapter.open_session(model, opening_call(request)))

    def run(self, coro: Any) -> Any:
        return self._loop.run(coro)

    def close(self) -> None:
        self._loop.run(self.adapter.aclose())
        self._loop.close()


def make_adapter(provider: Provider) -> BlockingAdapter:
    """The real live adapter for `provider`, in an adapter pool of its own (imported here:
    the server alone needs no SDK)."""
    from voicefallback.providers import Adapters

    return BlockingAdapter(Adapters("live", [provider.api_key_env]))


def model_for(provider: Provider, name: str, timeout_s: float = 5.0) -> Model:
    return Model(
        id=f"{provider.name}:{name}",
        provider=provider,
        name=name,
        thresholds=replace(Thresholds(), timeout_s=timeout_s),
    )


@dataclass
class Rig:
    fake: FakeProvider
    providers: dict[str, Provider]
    adapters: dict[str, BlockingAdapter]

    def model(self, kind: str, name: str, timeout_s: float = 5.0) -> Model:
        return model_for(self.providers[kind], name, timeout_s)

    def probe(self, kind: str, name: str, timeout_s: float = 5.0) -> tuple[ProbeResult, float]:
        """The probe's result and how long the call took, in seconds."""
        began = time.perf_counter()
        result = self.adapters[kind].probe(self.model(kind, name, timeout_s))
        return result, time.perf_counter() - began


def fake_registry_file(
    path: Path,
    fake: FakeProvider,
    names: Sequence[str],
    *,
    budget_ms: int,
    stubs: Mapping[str, str] | None = None,
) -> Path:
    """A live-mode models.toml whose models `fake:<name>` are this fake's directives (an
    OpenAI-compatible provider keyed by KEY_ENV["openai"]); `stubs`: a model's stub table."""
    models = ""
    for name in names:
        stub = f"\nstub = {{ {stubs[name]} }}" if stubs and name in stubs else ""
        models += f'[[models]]\nid = "fake:{name}"{stub}\n'
    path.write_text(
        f"""
[settings]
mode = "live"
timeout_s = 10
ttft_budget_ms = {budget_ms}
[providers.fake]
type = "openai"
base_url = "{fake.url}/v1"
api_key_env = "{KEY_ENV["openai"]}"
{models}""",
        encoding="utf-8",
    )
    return path


def call_history(db: Path) -> list[tuple[str, str, str | None]]:
    """Every call in a SQLite state, oldest first: (directive, kind, error)."""
    import sqlite3

    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT model, kind, error FROM probes ORDER BY id").fetchall()
    return [(model.removeprefix("fake:"), kind, error) for model, kind, error in rows]


if __name__ == "__main__":
    with FakeProvider() as fake:
        print(fake.url, flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            sys.exit(0)
