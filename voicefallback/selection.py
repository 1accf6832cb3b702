"""Which model a session starts on, and why: pure functions of verdicts and call outcomes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from voicefallback.records import Candidate, FallbackSource, Reason, Status


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


def attempt_order(order: Sequence[str], verdicts: Mapping[str, Candidate]) -> list[str]:
    """The order `start` tries candidates in (README "Choosing a model"): healthy ones and
    those it must probe (stale, unknown) in the caller's order, then the slow ones; never an
    unhealthy or misconfigured one."""
    first = [m for m in order if verdicts[m].status in ("healthy", "stale", "unknown")]
    return first + [m for m in order if verdicts[m].status == "slow"]


def turn_order(models: Sequence[str], statuses: Mapping[str, Status]) -> list[str]:
    """The order a session's turn tries its models in (README "Every turn"): healthy first
    (in the given order), then slow, then never checked, and unhealthy or misconfigured ones
    last, as a last resort. A stale model counts by its last evidence (`statuses` gives it)."""
    rank = {"healthy": 0, "slow": 1, "unknown": 2, "stale": 2, "unhealthy": 3, "misconfigured": 3}
    return sorted(models, key=lambda m: rank.get(statuses.get(m, "unknown"), 2))


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
