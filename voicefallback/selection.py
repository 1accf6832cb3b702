"""Which model a session starts on, and why: pure functions of verdicts and call outcomes."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from voicefallback.health import needs_probe
from voicefallback.records import Candidate, FallbackSource, Reason


@dataclass(frozen=True)
class Choice:
    chosen: str | None
    passed_over: list[Candidate] = field(default_factory=list)
    failed_at_start: frozenset[str] = frozenset()


def candidate_order(
    primary: str, fallbacks: Sequence[str], registry_order: Sequence[str]
) -> tuple[list[str], FallbackSource]:
    """The primary, then the caller's fallbacks ("caller") or every other model ("auto")."""
    source: FallbackSource = "caller" if fallbacks else "auto"
    rest = fallbacks if fallbacks else registry_order
    ordered = [primary]
    for model in rest:
        if model not in ordered:
            ordered.append(model)
    return ordered, source


def to_probe(
    order: Sequence[str], verdicts: Mapping[str, Candidate], ruled_out: Collection[str]
) -> list[str]:
    """The stale or unknown candidates the choice may need: those ahead of the first healthy
    one (all of them when none is healthy), never one behind it."""
    pending = []
    for model in order:
        if model in ruled_out:
            continue
        status = verdicts[model].status
        if status == "healthy":
            break
        if needs_probe(status):
            pending.append(model)
    return pending


def pick(
    order: Sequence[str], verdicts: Mapping[str, Candidate], ruled_out: Collection[str]
) -> str | None:
    """SPEC "Choosing a model": the first healthy candidate, else the first slow one.

    `ruled_out` holds candidates that failed during this start (a just-in-time probe or an
    opening call): they are not tried again, whatever their recorded status says.
    """
    for wanted in ("healthy", "slow"):
        for model in order:
            if model not in ruled_out and verdicts[model].status == wanted:
                return model
    return None


def could_still_serve(
    order: Sequence[str],
    verdicts: Mapping[str, Candidate],
    ruled_out: Collection[str],
    besides: str,
) -> bool:
    """Whether a candidate other than `besides` might still start the session: usable, or
    not yet judged. Only then may `besides` be cut at its first-token budget."""
    return any(
        model != besides
        and model not in ruled_out
        and verdicts[model].status in ("healthy", "slow", "stale", "unknown")
        for model in order
    )


def passed_over(
    order: Sequence[str], verdicts: Mapping[str, Candidate], chosen: str | None, healthy: bool
) -> list[Candidate]:
    """What the event says was passed over: the candidates ahead of a healthy choice, or every
    other candidate when the choice was slow or nothing could be started."""
    if chosen is not None and healthy:
        return [verdicts[m] for m in order[: order.index(chosen)]]
    return [verdicts[m] for m in order if m != chosen]


def fallback_reason(primary: str, choice: Choice) -> Reason | None:
    """Why the session is not on its primary (None when it is)."""
    if choice.chosen == primary:
        return None
    if primary in choice.failed_at_start:
        return "primary_failed_at_start"
    primary_verdict = next((c for c in choice.passed_over if c.model == primary), None)
    if primary_verdict is not None and primary_verdict.status == "slow":
        return "primary_slow"
    return "primary_unhealthy"
