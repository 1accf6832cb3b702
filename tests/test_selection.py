"""Which model a session starts on, as pure functions."""

from __future__ import annotations

from voicefallback.records import Candidate
from voicefallback.selection import (
    Choice,
    attempt_order,
    candidate_order,
    fallback_reason,
    passed_over,
    turn_order,
)


def verdicts(**statuses: str) -> dict[str, Candidate]:
    return {model: Candidate(model, status) for model, status in statuses.items()}  # type: ignore[arg-type]


def test_auto_order_is_registry_order_after_the_primary():
    assert candidate_order("b", [], ["a", "b", "c"]) == (["b", "a", "c"], "auto")


def test_caller_order_is_honoured_and_duplicates_dropped():
    assert candidate_order("b", ["c", "b", "a", "c"], ["a", "b", "c"]) == (
        ["b", "c", "a"],
        "caller",
    )


def test_start_tries_healthy_and_unjudged_candidates_in_order_then_slow_ones():
    v = verdicts(p="unhealthy", x="slow", y="healthy", u="unknown", s="stale", z="slow")
    assert attempt_order(list(v), v) == ["y", "u", "s", "x", "z"]


def test_start_never_tries_an_unhealthy_or_misconfigured_candidate():
    v = verdicts(p="unhealthy", y="misconfigured")
    assert attempt_order(list(v), v) == []


def test_what_the_event_says_was_passed_over():
    v = verdicts(p="unhealthy", x="slow", y="healthy", z="healthy")
    assert passed_over(list(v), v, "y", healthy=True) == [v["p"], v["x"]]
    v = verdicts(p="unhealthy", x="slow", y="misconfigured", z="slow")
    assert {c.model for c in passed_over(list(v), v, "x", healthy=False)} == {"p", "y", "z"}


def test_a_turn_tries_healthy_then_slow_then_unchecked_and_the_broken_last():
    statuses = {"a": "unhealthy", "b": "slow", "c": "healthy", "d": "unknown", "e": "healthy"}
    assert turn_order(list(statuses), statuses) == ["c", "e", "b", "d", "a"]  # type: ignore[arg-type]
    # A model with no evidence at all counts as never checked.
    assert turn_order(["x", "c"], {"c": "misconfigured"}) == ["x", "c"]


def test_reasons():
    assert fallback_reason("p", Choice("p")) is None
    slow = Choice("x", [Candidate("p", "slow")])
    assert fallback_reason("p", slow) == "primary_slow"
    failed = Choice("x", [Candidate("p", "unhealthy", "server_error")], frozenset({"p"}))
    assert fallback_reason("p", failed) == "primary_failed_at_start"
    assert fallback_reason("p", Choice(None, [Candidate("p", "misconfigured")])) == (
        "primary_unhealthy"
    )
