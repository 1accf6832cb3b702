"""Which model a session starts on, as pure functions."""

from __future__ import annotations

from voicefallback.records import Candidate
from voicefallback.selection import candidate_order, choose_model, fallback_reason


def run(statuses: dict[str, str], failing_calls: set[str] = frozenset(), order=None):
    judged: list[str] = []
    called: list[str] = []

    def judge(model: str) -> Candidate:
        judged.append(model)
        return Candidate(model, statuses[model])

    def open_call(model: str) -> Candidate | None:
        called.append(model)
        return Candidate(model, "unhealthy", "server_error") if model in failing_calls else None

    choice = choose_model(order or list(statuses), judge, open_call)
    return choice, judged, called


def test_auto_order_is_registry_order_after_the_primary():
    assert candidate_order("b", [], ["a", "b", "c"]) == (["b", "a", "c"], "auto")


def test_caller_order_is_honoured_and_duplicates_dropped():
    assert candidate_order("b", ["c", "b", "a", "c"], ["a", "b", "c"]) == (
        ["b", "c", "a"],
        "caller",
    )


def test_first_healthy_wins_and_later_candidates_are_not_judged():
    choice, judged, called = run({"p": "unhealthy", "x": "slow", "y": "healthy", "z": "healthy"})
    assert choice.chosen == "y"
    assert judged == ["p", "x", "y"] and called == ["y"]
    assert [(c.model, c.status) for c in choice.passed_over] == [("p", "unhealthy"), ("x", "slow")]
    assert fallback_reason("p", choice) == "primary_unhealthy"


def test_slow_only_when_nothing_is_healthy():
    choice, _, called = run({"p": "unhealthy", "x": "slow", "y": "misconfigured", "z": "slow"})
    assert choice.chosen == "x" and called == ["x"]
    assert {c.model for c in choice.passed_over} == {"p", "y", "z"}


def test_slow_primary_gives_way_to_a_healthy_fallback():
    choice, _, _ = run({"p": "slow", "x": "healthy"})
    assert choice.chosen == "x" and fallback_reason("p", choice) == "primary_slow"


def test_slow_primary_is_kept_when_nothing_is_healthy():
    choice, _, _ = run({"p": "slow", "x": "unhealthy"})
    assert choice.chosen == "p" and fallback_reason("p", choice) is None


def test_a_failed_opening_call_moves_to_the_next_candidate():
    choice, _, called = run({"p": "healthy", "x": "healthy"}, failing_calls={"p"})
    assert choice.chosen == "x" and called == ["p", "x"]
    assert fallback_reason("p", choice) == "primary_failed_at_start"
    assert choice.passed_over == [Candidate("p", "unhealthy", "server_error")]


def test_nothing_startable():
    choice, _, called = run(
        {"p": "healthy", "x": "slow", "y": "unhealthy"}, failing_calls={"p", "x"}
    )
    assert choice.chosen is None and called == ["p", "x"]
    assert [c.model for c in choice.passed_over] == ["p", "x", "y"]
    assert fallback_reason("p", choice) == "primary_failed_at_start"
    choice, _, _ = run({"p": "unhealthy", "x": "misconfigured"})
    assert choice.chosen is None and fallback_reason("p", choice) == "primary_unhealthy"
