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
import contextvars
import time
from collections.abc import Mapping
from typing import Any

from voicefallback.attempts import Attempt
from voicefallback.config import Model, Provider
from voicefallback.environment import api_key
from voicefallback.providers.classify import (
    Failure,
    Incomplete,
    StreamError,
    describe,
    status_failure,
)
from voicefallback.records import Opening, ProbeResult

PROBE_PROMPT = "Reply with the single word: ok"
PROBE_MAX_TOKENS = 16  # reasoning models refuse smaller limits
# Once the answer is complete, how long to wait for trailing usage and the end of the body.
TAIL_GRACE_S = 0.25
# The attempt whose request is being sent, for the HTTP client's hook (`stamp_send`).
_SENDING: contextvars.ContextVar[Attempt | None] = contextvars.ContextVar(
    "voicefallback_sending", default=None
)


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

    async def probe(self, model: Model, attempt: Attempt) -> ProbeResult:
        return await self._call(attempt, None, PROBE_PROMPT, PROBE_MAX_TOKENS)

    async def open_session(self, model: Model, opening: Opening, attempt: Attempt) -> ProbeResult:
        return await self._call(attempt, opening.system, opening.prompt, opening.max_tokens)

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

    async def _stream(self, call: Attempt, system: str | None, prompt: str, limit: int) -> None:
        """Make the streaming call and report what arrives to `call`; raise what goes wrong."""
        raise NotImplementedError

    def _errors(self) -> tuple[type[Exception], type[Exception], type[Exception]]:
        """The SDK's status-error, timeout-error and connection-error classes."""
        raise NotImplementedError

    def _status_message(self, exc: Any) -> str:
        """What the provider said in an error response."""
        raise NotImplementedError

    # -- one call -------------------------------------------------------------------------

    async def _call(
        self, call: Attempt, system: str | None, prompt: str, limit: int
    ) -> ProbeResult:
        """One call under the attempt's deadline; whatever happens becomes a result."""
        await self.prepare()
        if self._unusable is not None or self._client is None:
            failure = self._unusable or Failure("connection", "adapter is closed")
            return call.failure(failure.kind, failure.message, measured=False)
        sending = _SENDING.set(call)
        try:
            async with call.deadline():
                await self._stream(call, system, prompt, limit)
        except TimeoutError:
            if call.complete:
                return call.success()  # only the grace period for trailing bytes ran out
            return call.timed_out()
        except Exception as exc:  # nothing escapes as a traceback
            if call.complete and self._is_drop(exc):
                return call.success()  # the answer had ended properly; only the tail was lost
            failure = self._classify(exc, call)
            return call.failure(
                failure.kind,
                failure.message,  # redacted and cut to one line by the adapter pool
                http_status=failure.http_status,
                retry_after_s=failure.retry_after_s,
            )
        finally:
            _SENDING.reset(sending)
        return call.success()

    def _is_drop(self, exc: Exception) -> bool:
        """A network failure (not a timeout): the connection broke or could not be made."""
        import httpx2

        _, timeout_error, connection_error = self._errors()
        if isinstance(exc, (timeout_error, httpx2.TimeoutException, TimeoutError)):
            return False
        return isinstance(exc, (connection_error, httpx2.TransportError, OSError))

    def _classify(self, exc: Exception, call: Attempt) -> Failure:
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
            return Failure("timeout", f"the HTTP client gave up: {describe(exc)}")
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

    Times count from there, failures included, so connecting (DNS, a TLS handshake on a cold
    pool) and the SDK's own work are not counted against whichever model is called first.
    """
    attempt = _SENDING.get()
    if attempt is None:
        return

    async def trace(name: str, info: Mapping[str, Any]) -> None:
        if name.endswith("send_request_headers.started"):
            attempt.sent = time.perf_counter()

    request.extensions["trace"] = trace
