"""Deterministic fake calls driven by each model's `stub` table: no network, no SDK."""

from __future__ import annotations

from voicefallback.attempts import Attempt
from voicefallback.config import Model
from voicefallback.records import ErrorKind, Opening, ProbeResult, utcnow

_MESSAGES: dict[ErrorKind, str] = {
    "timeout": "stub: no answer within timeout",
    "connection": "stub: connection refused",
    "rate_limited": "stub: HTTP 429 rate limited",
    "overloaded": "stub: HTTP 529 overloaded",
    "server_error": "stub: HTTP 500 internal error",
    "auth": "stub: HTTP 401 invalid API key",
    "not_found": "stub: HTTP 404 model not found",
    "bad_request": "stub: HTTP 400 bad request",
    "bad_response": "stub: stream ended early",
    "missing_key": "stub: API key variable is not set",
    "over_budget": "stub: no first token within the budget (cut)",
    "stalled": "stub: the stream stopped mid-answer",
}
_STATUS: dict[ErrorKind, int] = {
    "rate_limited": 429,
    "overloaded": 529,
    "server_error": 500,
    "auth": 401,
    "not_found": 404,
    "bad_request": 400,
}


class StubAdapter:
    """Reports the configured figures without sleeping, so stub runs are instant.

    In a race an answer known to come after its budget lets the race start the next candidate
    at once, and answers only when no other candidate could answer first, as a live call would.
    """

    async def prepare(self) -> None:
        pass

    async def probe(self, model: Model, attempt: Attempt) -> ProbeResult:
        return await self._call(model, attempt, None)

    async def open_session(self, model: Model, opening: Opening, attempt: Attempt) -> ProbeResult:
        return await self._call(model, attempt, opening.stub_text)

    async def aclose(self) -> None:
        pass

    async def _call(self, model: Model, attempt: Attempt, text: str | None) -> ProbeResult:
        stub = model.stub
        ttft = stub.ttft_ms if stub.ttft_ms is not None else stub.latency_ms
        latency = max(stub.latency_ms, ttft)
        limit_ms = round(model.thresholds.timeout_s * 1000)
        budget_ms = model.thresholds.ttft_budget_ms
        kind = attempt.kind
        if not stub.error and ttft > budget_ms and ttft <= limit_ms:
            attempt.declare_past_budget()
            if not await attempt.my_turn(ttft):
                return ProbeResult(
                    model=model.id,
                    ok=False,
                    at=utcnow(),
                    latency_ms=budget_ms,
                    error="over_budget",
                    message=f"stub: no first token within the {budget_ms} ms budget (cut)",
                    stub=True,
                    kind=kind,
                )
        if not stub.error and latency > limit_ms:
            # As a live call would: `timeout_s` bounds the whole call.
            return ProbeResult(
                model=model.id,
                ok=False,
                at=utcnow(),
                latency_ms=limit_ms,
                ttft_ms=ttft if ttft <= limit_ms else None,
                error="timeout",
                message=f"stub: no complete answer within {model.thresholds.timeout_s:g} s",
                stub=True,
                kind=kind,
            )
        if stub.error:
            return ProbeResult(
                model=model.id,
                ok=False,
                at=utcnow(),
                latency_ms=latency,
                error=stub.error,
                message=_MESSAGES[stub.error],
                http_status=_STATUS.get(stub.error),
                stub=True,
                kind=kind,
            )
        attempt.content()
        return ProbeResult(
            model=model.id,
            ok=True,
            at=utcnow(),
            latency_ms=latency,
            ttft_ms=ttft,
            stub=True,
            kind=kind,
            text=text,
        )
