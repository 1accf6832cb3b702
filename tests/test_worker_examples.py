"""The README's worker examples, run as written (LiveKit Agents, Pipecat) on the fake provider.

Each example is the README's code block itself, executed: if the README drifts from the
library, this fails. Its model ids are the shipped registry's; here their providers point at
the fake, where any model name not a directive gives the standard answer.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest

from tests.frameworks import Fleet, registry_text
from voicefallback import AsyncSessionRouter

pytest_plugins = ["tests.conftest_live", "tests.conftest_frameworks"]

README = Path(__file__).resolve().parent.parent / "README.md"
ANSWER = "Hello, welcome to your interview."


def example(name: str) -> dict[str, Any]:
    """Run the README's code block whose docstring starts with `name:`; its namespace."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    [code] = [b for b in blocks if b.startswith(f'"""{name}:')]
    namespace: dict[str, Any] = {"__name__": name.removesuffix(".py")}
    exec(compile(code, f"README.md ({name})", "exec"), namespace)
    return namespace


@pytest.fixture
def registry(fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> Fleet:
    """The examples' model ids, with providers named as in the shipped registry."""
    ids = ["openai:gpt-4o-mini", "anthropic:claude-3-5-haiku-latest"]
    path = fleet.directory / "models.toml"
    path.write_text(registry_text(fleet.fake.url, ids, prefix=""))
    monkeypatch.setenv("VOICEFALLBACK_CONFIG", str(path))
    monkeypatch.setenv("VOICEFALLBACK_DB", str(fleet.db))
    return fleet


def test_the_livekit_worker_example_answers_a_turn(registry):
    worker = example("worker.py")
    worker["STT"] = worker["TTS"] = None  # text only: a test has no audio

    async def run() -> list[str]:
        from livekit.agents import ChatMessage

        router = worker["AsyncSessionRouter"]()
        await router.warm(worker["MODELS"])
        try:
            async with worker["new_session"](router) as session:
                await session.start(worker["Interviewer"]())
                result = await session.run(user_input="Hello?")
        finally:
            await router.aclose()
        return [e.item.text_content for e in result.events if isinstance(e.item, ChatMessage)]

    assert asyncio.run(run()) == [ANSWER]
    assert registry.rows() == [("openai:gpt-4o-mini", "session", True, None)]


def test_the_pipecat_bot_example_answers_a_turn(registry):
    from pipecat.frames.frames import EndWorkerFrame, Frame, LLMFullResponseEndFrame, LLMTextFrame
    from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

    class Passthrough(FrameProcessor):
        """Where speech-to-text and text-to-speech go in a real bot."""

        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            await super().process_frame(frame, direction)
            await self.push_frame(frame, direction)

    class Speaker(Passthrough):
        """A transport's output: what the caller would hear; the call ends after one answer."""

        heard = ""

        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            await super().process_frame(frame, direction)
            if isinstance(frame, LLMTextFrame):
                Speaker.heard += frame.text
            if isinstance(frame, LLMFullResponseEndFrame):
                await self.push_frame(EndWorkerFrame())

    class Transport:
        def input(self) -> FrameProcessor:
            return Passthrough()

        def output(self) -> FrameProcessor:
            return Speaker()

    bot = example("bot.py")
    asyncio.run(bot["main"](Transport(), Passthrough(), Passthrough()))
    assert Speaker.heard == ANSWER
    asked = registry.fake.received("gpt-4o-mini")
    assert any("You are a friendly interviewer" in str(r.body["messages"]) for r in asked)
    assert registry.rows() == [("openai:gpt-4o-mini", "session", True, None)]


def test_the_examples_use_the_router_the_library_exports():
    assert example("bot.py")["AsyncSessionRouter"] is AsyncSessionRouter
