"""HealthAwareLLMSwitcher inside real Pipecat pipelines: every turn by the attempt rules.

Each test runs a real Pipecat pipeline (pipecat.tests.utils.run_test: a source, the switcher,
a sink) whose members are Pipecat's own OpenAI and Anthropic services, built from the registry
and pointed at the fake provider; it asserts the frames the rest of the pipeline received and
the rows in the state file.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
from pipecat.frames.frames import (
    ErrorFrame,
    Frame,
    FunctionCallResultFrame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
)
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.tests.utils import run_test

from tests.frameworks import TURN_PROMPT, Fleet
from voicefallback.pipecat import HealthAwareLLMSwitcher, TurnServed
from voicefallback.router import AsyncSessionRouter

pytest_plugins = ["tests.conftest_live", "tests.conftest_frameworks"]

ANSWER = "Hello, welcome to your interview."
OK = "fake-anthropic:ok"


@dataclass
class Turn:
    down: Sequence[Frame]
    up: Sequence[Frame]
    served_by: str | None

    @property
    def text(self) -> str:
        return "".join(f.text for f in self.down if isinstance(f, LLMTextFrame))

    @property
    def errors(self) -> list[str]:
        return [f.error for f in self.up if isinstance(f, ErrorFrame)]

    def kinds(self, *wanted: type[Frame]) -> list[str]:
        return [type(f).__name__ for f in self.down if isinstance(f, wanted)]


def context(tools: Any = None) -> LLMContext:
    messages: Any = [{"role": "user", "content": TURN_PROMPT}]
    return LLMContext(messages=messages, tools=tools) if tools else LLMContext(messages=messages)


async def turns(switcher: HealthAwareLLMSwitcher, count: int = 1, tools: Any = None) -> list[Turn]:
    """`count` turns, one after the other, through one pipeline holding the switcher."""
    frames = [LLMContextFrame(context(tools)) for _ in range(count)]
    down, up = await run_test(switcher, frames_to_send=frames)
    return [Turn(down, up, switcher.served_by)]


def session(fleet: Fleet, model_ids: list[str], **settings: Any) -> Turn:
    config = fleet.config(model_ids, **settings)

    async def run() -> Turn:
        async with AsyncSessionRouter(config=config, db=fleet.db) as router:
            [got] = await turns(HealthAwareLLMSwitcher.from_registry(router, model_ids))
            return got

    return asyncio.run(run())


@pytest.mark.parametrize(
    "primary",
    [
        "fake-openai:hang",
        "fake-anthropic:ttft-3000",
        "fake-openai:keepalive-4000",
        "fake-anthropic:empty-4000",
        "fake-openai:empty-4000",
    ],
)
def test_a_primary_with_nothing_to_say_is_hedged_at_its_budget(fleet, primary):
    got = session(fleet, [primary, OK], timeout_s=5)
    assert (got.text, got.served_by, got.errors) == (ANSWER, OK, [])
    # One response reaches the pipeline: the cut member's frames go no further.
    ends = got.kinds(LLMFullResponseStartFrame, LLMFullResponseEndFrame)
    assert ends == ["LLMFullResponseStartFrame", "LLMFullResponseEndFrame"]
    assert sorted(fleet.rows()) == sorted(
        [(primary, "session", False, "over_budget"), (OK, "session", True, None)]
    )


def test_the_primarys_late_token_beats_a_slower_hedge(fleet):
    primary, fallback = "fake-openai:ttft-400", "fake-anthropic:ttft-600"
    got = session(fleet, [primary, fallback])
    assert (got.text, got.served_by) == (ANSWER, primary)
    assert fleet.rows() == [(primary, "session", True, None)]
    assert fleet.asked(fallback) == 1


@pytest.mark.parametrize(
    ("primary", "kind"),
    [
        ("fake-openai:status-503", "overloaded"),
        ("fake-anthropic:status-429-retry-7", "rate_limited"),
        ("fake-anthropic:status-529", "overloaded"),
        ("fake-openai:reset-before-headers", "connection"),
    ],
)
def test_a_failing_primary_moves_on_at_once_and_says_why(fleet, primary, kind):
    got = session(fleet, [primary, OK])
    assert (got.text, got.served_by, got.errors) == (ANSWER, OK, [])
    ends = got.kinds(LLMFullResponseStartFrame, LLMFullResponseEndFrame)
    assert ends == ["LLMFullResponseStartFrame", "LLMFullResponseEndFrame"]
    assert sorted(fleet.rows()) == sorted(
        [(primary, "session", False, kind), (OK, "session", True, None)]
    )
    assert fleet.asked(primary) == 1  # no retries by the SDK: the attempt rules decide


@pytest.mark.parametrize(
    "primary", ["fake-openai:stall-mid-stream", "fake-anthropic:cut-mid-stream"]
)
def test_a_failure_after_words_were_heard_is_an_error_not_a_second_answer(fleet, primary):
    got = session(fleet, [primary, OK])
    assert got.text == "Hello,"
    ends = got.kinds(LLMFullResponseStartFrame, LLMFullResponseEndFrame)
    assert ends == ["LLMFullResponseStartFrame", "LLMFullResponseEndFrame"]
    assert len(got.errors) == 1 and primary in got.errors[0]
    kind = "stalled" if "stall" in primary else "bad_response"
    assert fleet.rows() == [(primary, "session", False, kind)]
    assert fleet.asked(OK) == 0


def test_when_no_model_answers_the_pipeline_sees_one_error(fleet):
    got = session(fleet, ["fake-openai:status-500", "fake-anthropic:status-503"])
    assert got.text == ""
    [error] = got.errors
    assert "fake-openai:status-500 server_error" in error
    assert [row[3] for row in fleet.rows()] == ["server_error", "overloaded"]


def test_the_next_turn_starts_on_the_model_that_is_up(fleet):
    primary = "fake-openai:status-503"
    config = fleet.config([primary, OK])
    served: list[TurnServed] = []

    async def run() -> list[Turn]:
        async with AsyncSessionRouter(config=config, db=fleet.db) as router:
            switcher = HealthAwareLLMSwitcher.from_registry(router, [primary, OK])

            @switcher.event_handler("on_turn_served")
            async def on_turn_served(_: Any, turn: TurnServed) -> None:
                served.append(turn)

            return await turns(switcher, count=2)

    [got] = asyncio.run(run())
    assert got.text == ANSWER * 2
    assert [t.model for t in served] == [OK, OK]
    assert [r.model for r in served[1].results] == [OK]  # the 503 model was not asked again
    assert fleet.asked(primary) == 1


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_tool_calls_reach_the_registered_function(fleet, kind):
    model_id = f"fake-{kind}:tool-call"
    config = fleet.config([model_id])
    weather = FunctionSchema(
        name="lookup_weather",
        description="The weather in a city.",
        properties={"city": {"type": "string"}},
        required=["city"],
    )
    calls: list[dict[str, Any]] = []

    async def lookup_weather(params: Any) -> None:
        calls.append(dict(params.arguments))
        await params.result_callback({"weather": "sunny"})

    async def run() -> Turn:
        async with AsyncSessionRouter(config=config, db=fleet.db) as router:
            switcher = HealthAwareLLMSwitcher.from_registry(router, [model_id])
            switcher.register_function("lookup_weather", lookup_weather)
            [got] = await turns(switcher, tools=ToolsSchema(standard_tools=[weather]))
            return got

    got = asyncio.run(run())
    assert calls == [{"city": "Paris"}]
    assert any(isinstance(f, FunctionCallResultFrame) for f in got.down)
    assert fleet.rows() == [(model_id, "session", True, None)]


def test_sessions_in_one_process_share_one_router(fleet):
    primary = "fake-openai:hang"
    config = fleet.config([primary, OK])

    async def run() -> list[list[Turn]]:
        async with AsyncSessionRouter(config=config, db=fleet.db) as router:
            pipelines = [
                turns(HealthAwareLLMSwitcher.from_registry(router, [primary, OK])) for _ in range(4)
            ]
            return list(await asyncio.gather(*pipelines))

    sessions = asyncio.run(run())
    assert [(s.text, s.served_by) for [s] in sessions] == [(ANSWER, OK)] * 4
    assert fleet.rows().count((OK, "session", True, None)) == 4


def test_a_state_that_cannot_be_written_never_fails_a_turn(fleet):
    (fleet.directory / "state").write_text("not a directory")
    got = session(fleet, ["fake-openai:status-503", OK])
    assert (got.text, got.served_by, got.errors) == (ANSWER, OK, [])


def test_a_key_the_provider_repeats_never_reaches_the_state(fleet, monkeypatch):
    secret = "sk-wrong-0123456789abcdefghijklmnop"
    monkeypatch.setenv("VF_TEST_OPENAI_KEY", secret)
    primary = "fake-openai:ttft-5"
    got = session(fleet, [primary, OK])
    assert (got.text, got.served_by) == (ANSWER, OK)
    assert (primary, "session", False, "auth") in fleet.rows()
    assert all(secret not in message for message in fleet.messages())
