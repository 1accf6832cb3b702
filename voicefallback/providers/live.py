"""What the live adapters share: key, client, event loop, whole-call deadline, timing, failures.

Only the live adapter modules import this module, so stub runs and read-only commands never load
it (nor the SDKs and httpx2 it works with).

Why an event loop: the SDKs' own timeouts apply per network read, so a stream that trickles or
stalls could outlast `timeout_s`, and a read blocked in a worker thread cannot be interrupted.
Every call of one adapter therefore runs as a task on one asyncio loop (in a daemon thread) under
`asyncio.timeout`, which cancels it at any point: connecting, waiting for headers, mid-stream.
Callers stay synchronous and may call from many threads at once; their calls overlap on the loop
instead of competing for the GIL, which keeps measured times honest under concurrency.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator, Coroutine, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

from voicefallback.config import Model, Provider, api_key
from voicefallback.records import ProbeResult, utcnow
from voicefallback.redaction import redact

T = TypeVar("T")

PROBE_PROMPT = "Reply with the single word: ok"
PROBE_MAX_TOKENS = 16  # reasoning models refuse smaller limits
START_MAX_TOKENS = 200
OPENING_CUE = "(The candidate has joined the call.)"
# Once the answer is complete, how long to wait for trailing usage and the end of the body.
TAIL_GRACE_S = 0.25
# How long past its deadline a caller waits for a stuck loop before reporting a timeout anyway.
GUARD_MARGIN_S = 2.0
BUILD_TIMEOUT_S = 60.0  # building a client makes no network call; this only guards a stuck loop
MESSAGE_LIMIT = 300
SENT_AT = "voicefallback.sent_at"
_ROUTING_KEYS = ("primary", "fallbacks", "fallback")


@dataclass(frozen=True)
class Failure:
    """A classified failure: one of records.ERROR_KINDS plus what the provider said."""

    kind: str
    message: str
    http_status: int | None = None
    retry_after_s: float | None = None


class StreamError(Exception):
    """The provider reported an error inside a 200 stream."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class Incomplete(Exception):
    """The body ended without the stream's proper end."""


# -- the adapter ----------------------------------------------------------------------------


class LiveAdapter:
    """Key, client, loop and deadline around a subclass's provider-specific stream.

    The SDK client (and its connection pool) is built once, in the constructor, and shared by
    every model of the provider, so its cost is never timed as provider latency.
    """

    sdk = ""  # name of the SDK, for messages
    proper_end = ""  # what a complete stream ends with, for messages

    def __init__(self, provider: Provider) -> None:
        self.provider = provider
        key, self._unusable = read_key(provider)
        self._secrets: tuple[str, ...] = (key,) if key else ()
        self._loop: EventLoop | None = None
        self._client: Any = None
        if key is None:
            return  # missing_key for every call, and no client that would fail
        self._loop = EventLoop(f"voicefallback-{provider.name}")
        try:
            self._client = self._loop.run(self._build(key), BUILD_TIMEOUT_S)
        except Exception as exc:
            self._unusable = Failure("bad_request", f"cannot build the {self.sdk} client: {exc}")

    def probe(self, model: Model) -> ProbeResult:
        return self._call(model, "probe", None, PROBE_PROMPT, PROBE_MAX_TOKENS)

    def open_session(self, model: Model, request: Mapping[str, Any]) -> ProbeResult:
        system = opening_prompt(request)
        return self._call(model, "start", system, OPENING_CUE, START_MAX_TOKENS)

    def close(self) -> None:
        if self._loop is None:
            return
        if self._client is not None:
            with contextlib.suppress(Exception):  # best effort; the command is ending anyway
                self._loop.run(self._client.close(), GUARD_MARGIN_S)
            self._client = None
        self._loop.close()
        self._loop = None

    # -- for subclasses -------------------------------------------------------------------

    async def _build(self, key: str) -> Any:
        """The SDK client, built on the loop, with `stamp_send` as its request hook."""
        raise NotImplementedError

    async def _stream(self, call: Call, system: str | None, prompt: str, limit: int) -> None:
        """Make the streaming call and feed `call` from it; raise what goes wrong."""
        raise NotImplementedError

    def _errors(self) -> tuple[type[Exception], type[Exception], type[Exception]]:
        """The SDK's status-error, timeout-error and connection-error classes."""
        raise NotImplementedError

    def _status_message(self, exc: Any) -> str:
        """What the provider said in an error response."""
        raise NotImplementedError

    # -- one call -------------------------------------------------------------------------

    def _call(
        self, model: Model, kind: str, system: str | None, prompt: str, limit: int
    ) -> ProbeResult:
        if self._unusable is not None or self._loop is None:
            failure = self._unusable or Failure("connection", "adapter is closed")
            call = Call(model, kind, self._secrets)
            return call.failure(failure, measured=False)
        call = Call(model, kind, self._secrets)
        work = self._run(call, self._stream(call, system, prompt, limit))
        try:
            return self._loop.run(work, call.timeout_s + GUARD_MARGIN_S)
        except TimeoutError:
            return call.failure(call.timed_out())
        except Exception as exc:  # e.g. the loop was closed under us
            return call.failure(Failure("connection", f"call not run: {describe(exc)}"))

    async def _run(self, call: Call, stream: Coroutine[Any, Any, None]) -> ProbeResult:
        """Run `stream` under the call's whole deadline; whatever happens becomes a result."""
        try:
            async with asyncio.timeout(call.timeout_s) as scope:
                call.scope = scope
                await stream
        except TimeoutError:
            if call.complete:
                return call.success()  # only the grace period for trailing bytes ran out
            return call.failure(call.timed_out())
        except Exception as exc:  # nothing escapes as a traceback
            if call.complete and self._is_drop(exc):
                return call.success()  # the answer had ended properly; only the tail was lost
            return call.failure(self._classify(exc, call))
        return call.success()

    def _is_drop(self, exc: Exception) -> bool:
        """A network failure (not a timeout): the connection broke or could not be made."""
        import httpx2

        _, timeout_error, connection_error = self._errors()
        if isinstance(exc, (timeout_error, httpx2.TimeoutException, TimeoutError)):
            return False
        return isinstance(exc, (connection_error, httpx2.TransportError, OSError))

    def _classify(self, exc: Exception, call: Call) -> Failure:
        import httpx2

        status_error, timeout_error, _ = self._errors()
        if isinstance(exc, Incomplete):
            return Failure("bad_response", f"stream ended without {self.proper_end} (truncated)")
        if isinstance(exc, StreamError):
            return Failure(exc.kind, f"error in stream: {exc}")
        if isinstance(exc, status_error):
            return status_failure(
                exc.status_code,  # type: ignore[attr-defined]
                exc.response.headers,  # type: ignore[attr-defined]
                self._status_message(exc),
            )
        if isinstance(exc, (timeout_error, httpx2.TimeoutException, TimeoutError)):
            return call.timed_out()
        if self._is_drop(exc):
            # Dropped before the response headers: the connection; after them: a broken answer.
            if call.headers:
                return Failure("bad_response", f"connection dropped mid-stream: {describe(exc)}")
            return Failure("connection", f"connection failed before a response: {describe(exc)}")
        if call.headers:  # JSON or UTF-8 decoding errors, chunks of the wrong shape
            return Failure("bad_response", f"unparseable stream: {describe(exc)}")
        return Failure("bad_request", f"request not made: {describe(exc)}")


class EventLoop:
    """An asyncio loop on a daemon thread, shared by every call of one adapter."""

    def __init__(self, name: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run `coro` on the loop and wait for it; raise TimeoutError after `timeout` seconds."""
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError from None

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self._loop.close()


def read_key(provider: Provider) -> tuple[str | None, Failure | None]:
    """The provider's API key from its environment variable, or why there is none.

    A provider with a `base_url` and no `api_key_env` is a keyless local server (Ollama, vLLM):
    it gets a placeholder, because the SDKs insist on some key.
    """
    if provider.api_key_env is None:
        if provider.base_url:
            return "no-key", None
        return None, Failure(
            "missing_key", f"provider {provider.name!r} has no api_key_env in models.toml"
        )
    value = api_key(provider.api_key_env)
    if value is None:
        return None, Failure(
            "missing_key",
            f"{provider.api_key_env} is not set (API key for provider {provider.name!r})",
        )
    return value, None


async def stamp_send(request: Any) -> None:
    """httpx2 request hook: note when the request is written on an open connection.

    Time to first token counts from there, so connecting (DNS, a TLS handshake on a cold pool)
    is not counted against whichever model happens to be probed first.
    """

    async def trace(name: str, info: Mapping[str, Any]) -> None:
        if name.endswith("send_request_headers.started"):
            request.extensions[SENT_AT] = time.perf_counter()

    request.extensions["trace"] = trace


# -- one call's measurements ----------------------------------------------------------------


class Call:
    """One live call in progress: what came back, and when."""

    def __init__(self, model: Model, kind: str, secrets: tuple[str, ...]) -> None:
        self.model = model
        self.kind = kind
        self.secrets = secrets
        self.began = time.perf_counter()
        self.sent: float | None = None
        self.first_token: float | None = None
        self.last_event: float | None = None
        self.headers = False  # response headers arrived
        self.complete = False  # the stream's proper end arrived
        self.events = 0
        self.parts: list[str] = []
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        self.scope: asyncio.Timeout | None = None

    @property
    def timeout_s(self) -> float:
        return self.model.thresholds.timeout_s

    def responded(self, response: Any) -> None:
        """The response headers arrived (`response` is the httpx2 response)."""
        self.headers = True
        sent = response.request.extensions.get(SENT_AT)
        self.sent = sent if isinstance(sent, float) else self.began

    def event(self) -> None:
        self.events += 1
        self.last_event = time.perf_counter()

    def text(self, piece: Any) -> None:
        """Visible text arrived; the first non-empty piece is the first token."""
        if not piece or not isinstance(piece, str):
            return
        if self.first_token is None:
            self.first_token = time.perf_counter()
        self.parts.append(piece)

    def tokens(self, input_tokens: Any, output_tokens: Any) -> None:
        if isinstance(input_tokens, int):
            self.input_tokens = input_tokens
        if isinstance(output_tokens, int):
            self.output_tokens = output_tokens

    def finished(self) -> None:
        """The proper end arrived: stop waiting for the rest soon, and never call it a timeout."""
        self.complete = True
        if self.scope is not None:
            when = self.scope.when()
            tail = asyncio.get_running_loop().time() + TAIL_GRACE_S
            self.scope.reschedule(tail if when is None else min(when, tail))

    def _ms(self, moment: float | None) -> int | None:
        if moment is None:
            return None
        return max(0, round((moment - (self.sent or self.began)) * 1000))

    def success(self) -> ProbeResult:
        text = "".join(self.parts)
        if self.kind == "start" and not text.strip():
            return self.failure(Failure("bad_response", "the model answered with no text"))
        return ProbeResult(
            model=self.model.id,
            ok=True,
            at=utcnow(),
            latency_ms=self._ms(self.last_event),
            ttft_ms=self._ms(self.first_token),
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            kind=self.kind,
            text=text if self.kind == "start" else None,
        )

    def failure(self, failure: Failure, measured: bool = True) -> ProbeResult:
        return ProbeResult(
            model=self.model.id,
            ok=False,
            at=utcnow(),
            latency_ms=self._ms(time.perf_counter()) if measured else None,
            ttft_ms=self._ms(self.first_token),
            error=failure.kind,
            message=one_line(failure.message, self.secrets),
            http_status=failure.http_status,
            retry_after_s=failure.retry_after_s,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            kind=self.kind,
        )

    def timed_out(self) -> Failure:
        if not self.headers:
            stage = "no response headers"
        elif self.first_token is None:
            stage = "no first token"
        else:
            stage = f"stream stalled after {len(self.parts)} text chunks"
        return Failure("timeout", f"no complete answer within {self.timeout_s:g} s ({stage})")


# -- the stream body ------------------------------------------------------------------------


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


# -- classification -------------------------------------------------------------------------


def status_kind(status: int) -> str:
    """SPEC's error kind for an HTTP error status."""
    if status == 429:
        return "rate_limited"
    if status in (503, 529):
        return "overloaded"
    if status >= 500:
        return "server_error"
    if status in (401, 403):
        return "auth"
    if status == 404:
        return "not_found"
    return "bad_request"


def status_failure(status: int, headers: Mapping[str, str] | None, message: str) -> Failure:
    return Failure(
        status_kind(status),
        f"HTTP {status}: {message}" if message else f"HTTP {status}",
        http_status=status,
        retry_after_s=retry_after(headers) if status in (429, 503, 529) else None,
    )


def retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait from `retry-after-ms` or `Retry-After` (seconds or an HTTP date)."""
    if not headers:
        return None
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value:
            try:
                return max(0.0, float(value) / scale)
            except ValueError:
                pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - datetime.now(UTC)).total_seconds())


def error_event_kind(kind: str, code: str = "") -> str:
    """The kind for an error reported inside a stream, from its type or code."""
    words = f"{kind} {code}".lower()
    if "overload" in words or "unavailable" in words:
        return "overloaded"
    if "rate_limit" in words or "quota" in words:
        return "rate_limited"
    if "authentication" in words or "permission" in words or "api_key" in words:
        return "auth"
    if "not_found" in words:
        return "not_found"
    if "timeout" in words:
        return "timeout"
    if "invalid_request" in words or "too_large" in words or "billing" in words:
        return "bad_request"
    return "server_error"


def describe(exc: BaseException) -> str:
    """The exception and the causes under it, as one readable phrase."""
    parts = [f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__]
    seen = {str(exc)}
    cause = _cause(exc)
    for _ in range(5):
        if cause is None:
            break
        text = str(cause)
        if text and text not in seen:
            seen.add(text)
            parts.append(f"{type(cause).__name__}: {text}")
        cause = _cause(cause)
    return "; ".join(parts)


def _cause(exc: BaseException) -> BaseException | None:
    if exc.__cause__ is not None or exc.__suppress_context__:
        return exc.__cause__
    return exc.__context__


def one_line(text: str, secrets: tuple[str, ...] = ()) -> str:
    """Redacted, on one line, and short enough for a table cell and a history row."""
    flat = " ".join(redact(text, secrets).split())
    return flat if len(flat) <= MESSAGE_LIMIT else flat[: MESSAGE_LIMIT - 1] + "…"


# -- prompts --------------------------------------------------------------------------------


def opening_prompt(request: Mapping[str, Any]) -> str:
    """The system prompt of a session's opening call, built from the request body."""
    simulation = request.get("simulationId")
    details = {k: v for k, v in request.items() if k not in _ROUTING_KEYS}
    details_json = json.dumps(details, ensure_ascii=False, default=str, sort_keys=True)
    if len(details_json) > 4000:
        details_json = details_json[:4000] + "…"
    named = f" (simulation {simulation})" if simulation else ""
    return (
        f"You are the interviewer in a live voice interview simulation{named}. "
        f"Session details as JSON: {details_json}\n"
        "The candidate has just joined the call. Say your opening line exactly as you would "
        "speak it: greet the candidate, say in one sentence what the interview is about, and "
        "ask your first question. At most three short sentences, plain text, no stage "
        "directions."
    )
