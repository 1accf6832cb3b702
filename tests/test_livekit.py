"""HealthAwareLLM inside real LiveKit Agents: every turn by the attempt rules, on the fake provider.

Each test drives real `livekit-plugins-openai` / `-anthropic` LLMs (built from the registry)
turn by turn as `AgentSession` does: `llm.chat(chat_ctx=...)`, then iterate the stream.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest
from livekit.agents import APIError, llm

from tests.frameworks import TURN_PROMPT, Fleet
from voicefallback.livekit import HealthAwareLLM, TurnServed
from voicefallback.router import AsyncSessionRouter

pytest_plugins = ["tests.conftest_live", "tests.conftest_frameworks"]

ANSWER = "Hello, welcome to your interview."
OK = "fake-anthropic:ok"  # a healthy fallback


@dataclass
class Turn:
    text: str = ""
    tool_calls: list[llm.FunctionToolCall] = field(default_factory=list)
    served_by: str | None = None
    error: Exception | None = None


async def turn(model: HealthAwareLLM, tools: list[Any] | None = None) -> Turn:
    """One turn as AgentSession runs it: what the framework received."""
    ctx = llm.ChatContext.empty()
    ctx.add_message(role="user", content=TURN_PROMPT)
    got = Turn()
    stream = model.chat(chat_ctx=ctx, tools=tools)
    try:
        async with stream:
            async for chunk in stream:
                if chunk.delta is not None:
                    got.text += chunk.delta.content or ""
                    got.tool_calls += chunk.delta.tool_calls
    except APIError as exc:
        got.error = exc
    got.served_by = stream.served_by
    return got


async def session(fleet: Fleet, model_ids: list[str], *turns: int, **settings: Any) -> list[Turn]:
    """`turns[i]` turns at once, one batch after the other, on one worker's HealthAwareLLM."""
    config = fleet.config(model_ids, **settings)
    async with AsyncSessionRouter(config=config, db=fleet.db) as router:
        model = HealthAwareLLM.from_registry(router, model_ids)
        got: list[Turn] = []
        for count in turns or (1,):
            got += await asyncio.gather(*(turn(model) for _ in range(count)))
        await model.aclose()
    return got


@pytest.mark.parametrize(
    "primary",
    [
        "fake-openai:hang",
        "fake-anthropic:hang",
        "fake-openai:ttft-3000",
        "fake-openai:keepalive-4000",
        "fake-anthropic:keepalive-4000",
        "fake-openai:empty-4000",
        "fake-anthropic:empty-4000",
    ],
)
def test_a_primary_with_nothing_to_say_is_hedged_at_its_budget(fleet, primary):
    # Keep-alive comments, role-only or empty deltas and pings are not a first token: the
    # fallback starts at the primary's budget and answers; the primary is closed at once.
    [got] = asyncio.run(session(fleet, [primary, OK], timeout_s=5))
    assert (got.text, got.served_by, got.error) == (ANSWER, OK, None)
    assert sorted(fleet.rows()) == sorted(
        [(primary, "session", False, "over_budget"), (OK, "session", True, None)]
    )


def test_the_primarys_late_token_beats_a_slower_hedge(fleet):
    # First token at budget + 100 ms; the fallback would take 2x the budget. The hedge starts
    # at the budget, the primary answers first, the hedge is closed before its own budget
    # passed: no evidence about it, no row, but it was really asked.
    primary, fallback = "fake-openai:ttft-400", "fake-anthropic:ttft-600"
    [got] = asyncio.run(session(fleet, [primary, fallback]))
    assert (got.text, got.served_by) == (ANSWER, primary)
    assert fleet.rows() == [(primary, "session", True, None)]
    assert fleet.asked(fallback) == 1


@pytest.mark.parametrize(
    ("primary", "kind"),
    [
        ("fake-openai:status-503", "overloaded"),
        ("fake-anthropic:status-529", "overloaded"),
        ("fake-openai:status-429-retry-7", "rate_limited"),
        ("fake-anthropic:status-401", "auth"),
        ("fake-openai:reset-before-headers", "connection"),
    ],
)
def test_a_failing_primary_moves_on_at_once_and_says_why(fleet, primary, kind):
    [got] = asyncio.run(session(fleet, [primary, OK]))
    assert (got.text, got.served_by, got.error) == (ANSWER, OK, None)
    assert sorted(fleet.rows()) == sorted(
        [(primary, "session", False, kind), (OK, "session", True, None)]
    )


def test_a_model_found_down_is_not_asked_again_on_the_next_turn(fleet):
    # The view is updated at once by this process's own turns: turn two goes straight to
    # the fallback, with no second request to the model that just failed.
    primary = "fake-openai:status-503"
    first, second = asyncio.run(session(fleet, [primary, OK], 1, 1))
    assert first.served_by == second.served_by == OK
    assert fleet.asked(primary) == 1
    assert [row[0] for row in fleet.rows()] == [primary, OK, OK]


@pytest.mark.parametrize(
    "primary", ["fake-openai:stall-mid-stream", "fake-anthropic:cut-mid-stream"]
)
def test_a_failure_after_words_were_heard_is_an_error_not_a_second_answer(fleet, primary):
    # What FallbackAdapter does with retry_on_chunk_sent=False: no repeated half-sentence.
    [got] = asyncio.run(session(fleet, [primary, OK]))
    assert got.text == "Hello,"
    assert isinstance(got.error, APIError) and not got.error.retryable
    kind = "stalled" if "stall" in primary else "bad_response"
    assert fleet.rows() == [(primary, "session", False, kind)]
    assert fleet.asked(OK) == 0


def test_the_last_model_that_could_serve_keeps_timeout_s(fleet):
    # Alone, a model past its budget is waited for: a late answer beats no answer.
    only = "fake-openai:ttft-800"
    [got] = asyncio.run(session(fleet, [only]))
    assert (got.text, got.served_by) == (ANSWER, only)
    assert fleet.rows() == [(only, "session", True, None)]


def test_when_no_model_answers_the_framework_sees_one_error(fleet):
    models = ["fake-openai:status-500", "fake-anthropic:status-503"]
    [got] = asyncio.run(session(fleet, models))
    assert isinstance(got.error, APIError)
    assert "fake-openai:status-500 server_error" in str(got.error)
    assert [row[3] for row in fleet.rows()] == ["server_error", "overloaded"]


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_tool_calls_pass_through(fleet, kind):
    @llm.function_tool
    async def lookup_weather(city: str) -> str:
        """The weather in a city."""
        return "sunny"

    model_id = f"fake-{kind}:tool-call"
    config = fleet.config([model_id])

    async def run() -> Turn:
        async with AsyncSessionRouter(config=config, db=fleet.db) as router:
            return await turn(HealthAwareLLM.from_registry(router, [model_id]), [lookup_weather])

    got = asyncio.run(run())
    [call] = got.tool_calls
    assert (call.name, call.arguments) == ("lookup_weather", '{"city": "Paris"}')
    [request] = [r for r in fleet.fake.received("tool-call") if "tools" in r.body]
    assert "lookup_weather" in str(request.body["tools"])
    assert fleet.rows() == [(model_id, "session", True, None)]


def test_concurrent_turns_each_get_one_answer(fleet):
    primary = "fake-openai:hang"
    turns = asyncio.run(session(fleet, [primary, OK], 8))
    assert [(t.text, t.served_by) for t in turns] == [(ANSWER, OK)] * 8
    rows = fleet.rows()
    assert rows.count((OK, "session", True, None)) == 8
    assert rows.count((primary, "session", False, "over_budget")) == 8


def test_events_say_which_model_served_and_which_became_unavailable(fleet):
    primary = "fake-openai:status-503"
    config = fleet.config([primary, OK])
    served: list[TurnServed] = []
    changed: list[tuple[str, bool]] = []

    async def run() -> None:
        async with AsyncSessionRouter(config=config, db=fleet.db) as router:
            model = HealthAwareLLM.from_registry(router, [primary, OK])
            model.on("turn_served", served.append)
            model.on(
                "llm_availability_changed", lambda e: changed.append((e.llm.model, e.available))
            )
            await turn(model)

    asyncio.run(run())
    assert [s.model for s in served] == [OK]
    assert [(r.model, r.error) for r in served[0].results] == [(primary, "overloaded"), (OK, None)]
    assert changed == [("status-503", False)]


def test_a_state_that_cannot_be_written_never_fails_a_turn(fleet):
    # The state file's directory is a file: nothing can be recorded, every turn still answers.
    blocker = fleet.directory / "state"
    blocker.write_text("not a directory")
    turns = asyncio.run(session(fleet, ["fake-openai:status-503", OK], 2, 2))
    assert [(t.text, t.served_by) for t in turns] == [(ANSWER, OK)] * 4


def test_a_missing_key_is_recorded_and_the_next_model_answers(fleet, monkeypatch):
    monkeypatch.delenv("VF_TEST_OPENAI_KEY")
    primary = "fake-openai:ttft-5"
    [got] = asyncio.run(session(fleet, [primary, OK]))
    assert got.served_by == OK
    assert fleet.rows() == [(primary, "session", False, "missing_key"), (OK, "session", True, None)]
    assert fleet.asked(primary) == 0


def test_a_key_the_provider_repeats_never_reaches_the_state(fleet, monkeypatch):
    # A wrong key is refused with a message quoting it: the row keeps the kind, not the key.
    secret = "sk-wrong-0123456789abcdefghijklmnop"
    monkeypatch.setenv("VF_TEST_OPENAI_KEY", secret)
    primary = "fake-openai:ttft-5"
    [got] = asyncio.run(session(fleet, [primary, OK]))
    assert got.served_by == OK
    assert (primary, "session", False, "auth") in fleet.rows()
    assert all(secret not in message for message in fleet.messages())
    assert any("Incorrect API key" in message for message in fleet.messages())


def test_the_serving_models_metrics_reach_the_session(fleet):
    primary = "fake-openai:status-503"
    config = fleet.config([primary, OK])
    metrics: list[Any] = []

    async def run() -> None:
        async with AsyncSessionRouter(config=config, db=fleet.db) as router:
            model = HealthAwareLLM.from_registry(router, [primary, OK])
            model.on("metrics_collected", metrics.append)
            await turn(model)
            await model.aclose()

    asyncio.run(run())
    assert [m.metadata.model_name for m in metrics if m.ttft > 0] == ["ok"]


def test_a_model_another_worker_found_down_is_tried_last(fleet):
    # Two workers share one state: what one records reaches the other's view (refreshed in
    # the background), and the other's next turn goes straight to the fallback.
    primary = "fake-openai:ttft-5"
    config = fleet.config([primary, OK])

    async def run() -> Turn:
        async with (
            AsyncSessionRouter(config=config, db=fleet.db) as here,
            AsyncSessionRouter(config=config, db=fleet.db) as elsewhere,
        ):
            await here.report(primary, ttft_ms=50)
            assert here.statuses([primary]) == {primary: "healthy"}
            await elsewhere.report(primary, error="overloaded")
            async with asyncio.timeout(30):  # a guard against a hang, not a measurement
                while here.statuses([primary])[primary] != "unhealthy":
                    await asyncio.sleep(0.05)  # the view's next refresh from the state
            return await turn(HealthAwareLLM.from_registry(here, [primary, OK]))

    got = asyncio.run(run())
    assert got.served_by == OK
    assert fleet.asked(primary) == 0


def test_a_turn_the_caller_interrupts_is_no_evidence_against_its_model(fleet):
    """A barge-in: AgentSession closes the stream mid-answer. The model that was answering
    did nothing wrong: no failure is recorded against it, and it stays first."""
    models = ["fake-openai:ttft-100+tokens-40+gap-50", OK]

    async def scenario() -> dict[str, str]:
        config = fleet.config(models, budget_ms=300, timeout_s=5)
        async with AsyncSessionRouter(config=config, db=fleet.db) as router:
            model = HealthAwareLLM.from_registry(router, models)
            ctx = llm.ChatContext.empty()
            ctx.add_message(role="user", content=TURN_PROMPT)
            heard = ""
            async with model.chat(chat_ctx=ctx) as stream:
                async for chunk in stream:
                    heard += chunk.delta.content or "" if chunk.delta else ""
                    if len(heard) > 10:
                        break  # the caller speaks over the agent
            await model.aclose()
            return router.statuses(models)

    statuses = asyncio.run(scenario())
    assert [r for r in fleet.rows() if not r[2]] == []
    assert statuses[models[0]] != "unhealthy"
