"""A session start as asked: the opening call a request body makes."""

from __future__ import annotations

from voicefallback.sessions import opening_call


def test_the_opening_call_carries_the_request_but_not_its_routing() -> None:
    opening = opening_call(
        {"simulationId": "sim-9", "primary": "p:m", "fallbacks": ["q:n"], "persona": "strict"}
    )
    assert opening.system is not None
    assert "sim-9" in opening.system and "strict" in opening.system
    assert "p:m" not in opening.system and "q:n" not in opening.system
    assert "sim-9" in opening.stub_text
