"""Which model a session starts on, and why: pure functions of verdicts and call outcomes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from voicefallback.records import Candidate


@dataclass(frozen=True)
class Choice:
    chosen: str | None
    passed_over: list[Candidate] = field(default_factory=list)
    failed_at_start: frozenset[str] = frozenset()


def candidate_order(
    primary: str, fallbacks: Sequence[str], registry_order: Sequence[str]
) -> tuple[list[str], str]:
    """The primary, then the caller's fallbacks ("caller") or every other model ("auto")."""
    source = "caller" if fallbacks else "auto"
    rest = fallbacks if fallbacks else registry_order
    ordered = [primary]
    for model in rest:
        if model not in ordered:
            ordered.append(model)
    return ordered, source


def choose_model(
    candidates: Sequence[str],
    judge: Callable[[str], Candidate],
    open_call: Callable[[str], Candidate | None],
) -> Choice:
    """SPEC "Choosing a model": the first healthy candidate, else the first slow one.

    `judge` gives a candidate's status (probing a stale or unknown one first); it is
    called lazily, in order, only as far as needed. `open_call` makes the opening call and
    returns None on success, or the candidate's new verdict when the call failed, in which
    case the next candidate is tried.
    """
    judged: list[Candidate] = []
    failed: set[str] = set()
    for model in candidates:
        verdict = judge(model)
        if verdict.status == "healthy":
            failure = open_call(model)
            if failure is None:
                return Choice(model, judged, frozenset(failed))
            failed.add(model)
            verdict = failure
        judged.append(verdict)
    for index, verdict in enumerate(judged):
        if verdict.status == "slow" and verdict.model not in failed:
            failure = open_call(verdict.model)
            if failure is None:
                passed = [c for c in judged if c.model != verdict.model]
                return Choice(verdict.model, passed, frozenset(failed))
            failed.add(verdict.model)
            judged[index] = failure
    return Choice(None, judged, frozenset(failed))


def fallback_reason(primary: str, choice: Choice) -> str | None:
    """Why the session is not on its primary (None when it is)."""
    if choice.chosen == primary:
        return None
    if primary in choice.failed_at_start:
        return "primary_failed_at_start"
    primary_verdict = next((c for c in choice.passed_over if c.model == primary), None)
    if primary_verdict is not None and primary_verdict.status == "slow":
        return "primary_slow"
    return "primary_unhealthy"
