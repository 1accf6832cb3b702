"""What the live adapters share: key, client, first-token and whole-call deadlines, timing.

Only the live adapter modules import this module, so stub runs and read-only commands never load
it (nor the SDKs and httpx2 it works with).

Every call is a coroutine on the caller's event loop under `asyncio.timeout`: the SDKs' own
timeouts apply per network read, so a stream that trickles or stalls could outlast `timeout_s`;
a timeout scope cancels the call at any point (connecting, waiting for headers, mid-stream).
The same scope enforces the first-token budget of the start path: it is set to the budget
first and moved out to `timeout_s` when the first token arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Coroutine, Mapping
from typing import Any

from voicefallback.config import Model, Provider, api_key
from voicefallback.providers.classify import (
    Failure,
    Incomplete,
    StreamError,
    describe,
    status_failure,
)
from voicefallback.records import CallKind, ProbeResult, utcnow

PROBE_PROMPT = "Reply with the single word: ok"
PROBE_MAX_TOKENS = 16  # reasoning models refuse smaller limits
START_MAX_TOKENS = 200
OPENING_CUE = "(The candidate has joined the call.)"
# Once the answer is complete, how long to wait for trailing usage and the end of the body.
TAIL_GRACE_S = 0.25
SENT_AT = "voicefallback.sent_at"
_ROUTING_KEYS = ("primary", "fallbacks", "fallback")


# -- the adapter ----------------------------------------------------------------------------


class LiveAdapter:
    """Key, client and deadlines around a subclass's provider-specific stream.

    The SDK client (and its connection pool) is built once, by `prepare`, and shared by every
    model of the provider, so its cost is never timed as provider latency.
    """

    sdk = ""  # name of the SDK, for messages
    proper_end = ""  # what a complete stream ends with, for messages

    def __init__(self, provider: Provider) -> None:
        self.provider = provider
        self._key, self._unusable = read_key(provider)
        self._client: Any = None
        self._building = asyncio.Lock()

    async def prepare(self) -> None:
        """Build the SDK client once, however many calls ask at the same time.

        The SDK is imported and the client built on a worker thread: importing is a second of
        CPU, and building loads TLS certificates (tens of ms); on the caller's event loop
        either would stall a voice worker's audio and be timed as provider latency.
        """
        async with self._building:
            if self._client is not None or self._key is None or self._unusable is not None:
                return
            try:
                self._client = await asyncio.to_thread(self._build, self._key)
            except Exception as exc:
                failure = Failure("bad_request", f"cannot build the {self.sdk} client: {exc}")
                self._unusable = failure

    async def probe(self, model: Model, *, first_token_s: float | None = None) -> ProbeResult:
        return await self._call(model, "probe", None, PROBE_PROMPT, PROBE_MAX_TOKENS, first_token_s)

    async def open_session(
        self, model: Model, request: Mapping[str, Any], *, first_token_s: float | None = None
    ) -> ProbeResult:
        system = opening_prompt(request)
        return await self._call(
            model, "start", system, OPENING_CUE, START_MAX_TOKENS, first_token_s
        )

    async def aclose(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):  # best effort; the command is ending anyway
                await self._client.close()
            self._client = None
        self._unusable = self._unusable or Failure("connection", "adapter is closed")

    # -- for subclasses -------------------------------------------------------------------

    def _build(self, key: str) -> Any:
        """The SDK client, with `stamp_send` as its request hook (on a worker thread: it
        must not touch the event loop)."""
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

    async def _call(
        self,
        model: Model,
        kind: CallKind,
        system: str | None,
        prompt: str,
        limit: int,
        first_token_s: float | None,
    ) -> ProbeResult:
        await self.prepare()
        call = Call(model, kind, first_token_s)
        if self._unusable is not None or self._client is None:
            failure = self._unusable or Failure("connection", "adapter is closed")
            return call.failure(failure, measured=False)
        return await self._run(call, self._stream(call, system, prompt, limit))

    async def _run(self, call: Call, stream: Coroutine[Any, Any, None]) -> ProbeResult:
        """Run `stream` under the call's deadlines; whatever happens becomes a result."""
        try:
            async with asyncio.timeout_at(call.first_deadline()) as scope:
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

    def __init__(self, model: Model, kind: CallKind, first_token_s: float | None = None) -> None:
        self.model = model
        self.kind = kind
        # A first-token budget shorter than the whole call's limit: no first token by then
        # means the call is abandoned (`over_budget`) instead of waited for.
        timeout_s = model.thresholds.timeout_s
        self.first_token_s = first_token_s if first_token_s and first_token_s < timeout_s else None
        self.began = time.perf_counter()
        self.began_loop = asyncio.get_running_loop().time()
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

    def first_deadline(self) -> float:
        """When the call is cut if nothing changes: the first-token budget, else timeout_s."""
        return self.began_loop + (self.first_token_s or self.timeout_s)

    def text(self, piece: Any) -> None:
        """Visible text arrived; the first non-empty piece is the first token."""
        if not piece or not isinstance(piece, str):
            return
        if self.first_token is None:
            self.first_token = time.perf_counter()
            if self.first_token_s is not None and self.scope is not None and not self.complete:
                self.scope.reschedule(self.began_loop + self.timeout_s)  # the budget is met
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
            message=failure.message,  # redacted and cut to one line by the adapter pool
            http_status=failure.http_status,
            retry_after_s=failure.retry_after_s,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            kind=self.kind,
        )

    def timed_out(self) -> Failure:
        if self.first_token is None and self.first_token_s is not None:
            waited = round((time.perf_counter() - self.began) * 1000)
            return Failure(
                "over_budget",
                f"no first token within the {round(self.first_token_s * 1000)} ms budget "
                f"(abandoned after {waited} ms)",
            )
        if not self.headers:
            stage = "no response headers"
        elif self.first_token is None:
            stage = "no first token"
        else:
            stage = f"stream stalled after {len(self.parts)} text chunks"
        return Failure("timeout", f"no complete answer within {self.timeout_s:g} s ({stage})")


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
