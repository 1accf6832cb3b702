"""What the voice-framework bindings share about a turn: its order, its failures, its records.

Both `voicefallback.livekit` and `voicefallback.pipecat` run each turn as a `Race` of the
attempt rules (voicefallback/race.py); this module holds the bookkeeping around it, so the
two bindings order, classify and record alike. It imports no framework and no SDK.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from voicefallback.attempts import Attempt
from voicefallback.config import Model
from voicefallback.environment import secrets_from_env
from voicefallback.providers.classify import body_message, describe, one_line, status_failure
from voicefallback.records import ProbeResult, Status
from voicefallback.selection import turn_order

if TYPE_CHECKING:
    from voicefallback.router import AsyncSessionRouter

UNAVAILABLE: tuple[Status, ...] = ("unhealthy", "misconfigured")


@dataclass(frozen=True)
class TurnServed:
    """One turn's outcome: the model that answered it (None: none could) and every attempt's
    result as recorded (a hedge cut before its own budget passed is not evidence: absent)."""

    model: str | None
    results: tuple[ProbeResult, ...]


class TurnBook:
    """A binding's models, ordered for each turn by the router's in-memory view, and every
    attempt's result recorded in the background (redacted first, never waited for)."""

    def __init__(self, router: AsyncSessionRouter, model_ids: Sequence[str], where: str) -> None:
        if isinstance(model_ids, str):
            raise ValueError(f"{where}: a list of model ids, not one string")
        if not model_ids:
            raise ValueError(f"{where}: give at least one model")
        self.router = router
        self.models = {m: router.registry.require(m, where) for m in dict.fromkeys(model_ids)}
        self._secrets = secrets_from_env(router.registry.key_env_names())
        self._available = dict.fromkeys(self.models, True)

    def order(self) -> list[Model]:
        """This turn's candidates: no state read and no call, only the view held in memory."""
        ids = list(self.models)
        return [self.models[m] for m in turn_order(ids, self.router.statuses(ids))]

    def record(self, result: ProbeResult) -> bool | None:
        """Record one attempt's result; returns the model's new availability when this
        process's view of it flipped (unhealthy or misconfigured, or usable again)."""
        if result.message is not None:
            result = dataclasses.replace(result, message=one_line(result.message, self._secrets))
        self.router.record_soon([result])
        status = self.router.statuses([result.model]).get(result.model)
        available = status not in UNAVAILABLE
        if available == self._available[result.model]:
            return None
        self._available[result.model] = available
        return available


def failure(attempt: Attempt, exc: BaseException) -> ProbeResult:
    """A framework's or an SDK's exception as the attempt's failure, by its shape: an HTTP
    status (LiveKit's APIStatusError, the SDKs' own), a timeout, or a broken connection."""
    status = getattr(exc, "status_code", None)
    if isinstance(status, int) and status >= 400:
        headers = getattr(getattr(exc, "response", None), "headers", None)
        said = body_message(getattr(exc, "body", None), str(getattr(exc, "message", exc)))
        found = status_failure(status, headers, said)
        return attempt.failure(
            found.kind, found.message, http_status=status, retry_after_s=found.retry_after_s
        )
    if "Timeout" in type(exc).__name__:
        return attempt.failure("timeout", f"timed out: {describe(exc)}")
    # Broken before anything came back: the connection; after: a broken answer.
    broken = attempt.last_event is not None or attempt.chunks > 0
    return attempt.failure("bad_response" if broken else "connection", describe(exc))


def failures(results: Sequence[ProbeResult]) -> str:
    """What went wrong, in one phrase: "openai:gpt-4o-mini overloaded, ..."."""
    return ", ".join(f"{r.model} {r.error}" for r in results if not r.ok) or "nothing to try"
