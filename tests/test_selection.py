"""Which model a session starts on, as pure functions."""

from __future__ import annotations

from voicefallback.records import Candidate
from voicefallback.selection import (
    Choice,
    candidate_order,
    could_still_serve,
    fallback_reason,
    passed_over,
    pick,
    to_probe,
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


def test_first_healthy_wins_over_an_earlier_slow_one():
    v = verdicts(p="unhealthy", x="slow", y="healthy", z="healthy")
    assert pick(list(v), v, set()) == "y"
    assert passed_over(list(v), v, "y", healthy=True) == [v["p"], v["x"]]


def test_slow_only_when_nothing_is_healthy():
    v = verdicts(p="unhealthy", x="slow", y="misconfigured", z="slow")
    assert pick(list(v), v, set()) == "x"
    assert {c.model for c in passed_over(list(v), v, "x", healthy=False)} == {"p", "y", "z"}


def test_a_candidate_that_failed_during_this_start_is_not_picked_again():
    v = verdicts(p="healthy", x="healthy")
    assert pick(list(v), v, {"p"}) == "x"
    assert pick(list(v), v, {"p", "x"}) is None


def test_only_stale_or_unknown_candidates_ahead_of_the_first_healthy_are_probed():
    v = verdicts(p="stale", x="unhealthy", y="unknown", z="healthy", w="stale")
    assert to_probe(list(v), v, set()) == ["p", "y"]
    # Nothing healthy: every candidate the choice may need, to the end.
    v = verdicts(p="stale", x="slow", y="unknown")
    assert to_probe(list(v), v, set()) == ["p", "y"]
    # A healthy candidate that failed at start no longer stops the look-ahead.
    v = verdicts(p="healthy", x="stale")
    assert to_probe(list(v), v, {"p"}) == ["x"]


def test_a_candidate_may_be_cut_at_its_budget_only_while_another_could_serve():
    v = verdicts(p="healthy", x="unhealthy", y="misconfigured")
    assert not could_still_serve(list(v), v, set(), besides="p")
    v = verdicts(p="healthy", x="unhealthy", y="stale")
    assert could_still_serve(list(v), v, set(), besides="p")
    assert not could_still_serve(list(v), v, {"y"}, besides="p")


def test_reasons():
    assert fallback_reason("p", Choice("p")) is None
    slow = Choice("x", [Candidate("p", "slow")])
    assert fallback_reason("p", slow) == "primary_slow"
    failed = Choice("x", [Candidate("p", "unhealthy", "server_error")], frozenset({"p"}))
    assert fallback_reason("p", failed) == "primary_failed_at_start"
    assert fallback_reason("p", Choice(None, [Candidate("p", "misconfigured")])) == (
        "primary_unhealthy"
    )
