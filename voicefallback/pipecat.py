"""Pipecat binding: an `LLMSwitcher` whose every turn follows the attempt rules over shared health.

Imported only by pipelines that use it (extra `voicefallback[pipecat]`).

`HealthAwareLLMSwitcher` is an `LLMSwitcher`: its member services sit in the pipeline (set up,
started and stopped by Pipecat, functions registered on all of them), each between two gates
of its own. Instead of sending each context to one active service and switching on an error
frame, the switcher hands every `LLMContextFrame` to the attempt rules: the members are asked
in the order of the shared health, the next one as a hedge when a member's first-token budget
passes, and only the winner's frames leave the switcher. A member that is cut is interrupted
(its request is closed at once).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    ErrorFrame,
    Frame,
    FunctionCallInProgressFrame,
    FunctionCallsStartedFrame,
    InterruptionFrame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    StartFrame,
)
from pipecat.pipeline.llm_switcher import LLMSwitcher
from pipecat.pipeline.service_switcher import ServiceSwitcherStrategy
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.llm_service import LLMService

from voicefallback.attempts import Attempt, Runner
from voicefallback.config import Model
from voicefallback.providers.live import read_key
from voicefallback.race import Contender, Race
from voicefallback.records import ProbeResult
from voicefallback.turns import TurnBook, TurnServed, failure, failures

if TYPE_CHECKING:
    from voicefallback.router import AsyncSessionRouter

__all__ = ["HealthAwareLLMSwitcher", "TurnServed"]

_LIFECYCLE = (StartFrame, EndFrame, CancelFrame)


class HealthAwareLLMSwitcher(LLMSwitcher[ServiceSwitcherStrategy]):
    """Every turn by README "Every turn", in a Pipecat pipeline where the LLM goes.

    Events: `on_turn_served(switcher, TurnServed)` after each turn, and
    `on_availability_changed(switcher, model_id, available)` when this process's view of a
    model flips (unhealthy or misconfigured, or usable again).
    """

    def __init__(self, router: AsyncSessionRouter, llms: Mapping[str, LLMService[Any]]) -> None:
        """`llms`: registered model id -> the Pipecat LLM service that calls it, in the
        operator's order of preference."""
        self._book = TurnBook(router, list(llms), "HealthAwareLLMSwitcher")
        self._members = dict(llms)
        self._gates = {model_id: _Gates(self) for model_id in llms}
        self._by_service = {id(s): model_id for model_id, s in llms.items()}
        super().__init__(list(llms.values()), ServiceSwitcherStrategy)
        self.served_by: str | None = None  # the model that answered the latest turn
        # Frames outside a turn (settings updates, ...) go to the member that answered last.
        self._active = next(iter(llms))
        self._recording: set[asyncio.Task[None]] = set()
        self._register_event_handler("on_turn_served")
        self._register_event_handler("on_availability_changed")

    @classmethod
    def from_registry(
        cls,
        router: AsyncSessionRouter,
        model_ids: Sequence[str],
        *,
        system_instruction: str | None = None,
    ) -> HealthAwareLLMSwitcher:
        """Each model's Pipecat service built from models.toml: its model name, its
        provider's `base_url`, and the key from the provider's `api_key_env` (a model whose
        key is missing is left out, with a warning); every one gets `system_instruction`."""
        if isinstance(model_ids, str):
            raise ValueError("HealthAwareLLMSwitcher: a list of model ids, not one string")
        services: dict[str, LLMService[Any]] = {}
        for model_id in model_ids:
            model = router.registry.require(model_id, "HealthAwareLLMSwitcher")
            key, unusable = read_key(model.provider)
            if key is None:
                from loguru import logger

                logger.warning(f"{model_id} left out: {unusable.message if unusable else ''}")
                continue
            services[model_id] = _service(model, key, system_instruction)
        return cls(router, services)

    # -- the pipeline around each member ------------------------------------------------

    def _make_pipeline_definitions(  # type: ignore[override]
        self, services: list[FrameProcessor], strategy: ServiceSwitcherStrategy
    ) -> list[Any]:
        branches = []
        for service in services:
            gates = self._gates[self._by_service[id(service)]]
            branches.append([gates.inlet, service, gates.outlet])
        return branches

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, LLMContextFrame) and direction == FrameDirection.DOWNSTREAM:
            await FrameProcessor.process_frame(self, frame, direction)
            self._sync_registered_tool_handlers(frame.context.tools)
            await self._turn(frame)
            return
        await super().process_frame(frame, direction)

    # -- a turn --------------------------------------------------------------------------

    async def _turn(self, frame: LLMContextFrame) -> None:
        results: list[ProbeResult] = []
        handoffs: dict[str, asyncio.Queue[Frame | None]] = {}

        def recorded(result: ProbeResult) -> None:
            results.append(result)
            available = self._book.record(result)
            if available is not None:
                changed = self._call_event_handler(
                    "on_availability_changed", result.model, available
                )
                self._spawn(changed)  # handlers are coroutines; a result arrives in a callback

        contenders = []
        for model in self._book.order():
            if model.id in self._members:
                handoffs[model.id] = asyncio.Queue()
                contenders.append(Contender(model, self._runner(model, frame, handoffs[model.id])))
        race = Race(contenders, kind="session", on_result=recorded)
        forwarded = False
        served: str | None = None
        try:
            while True:
                winner = await race.run()
                if winner is None:
                    # As a Pipecat LLM service says a failed completion: an error between
                    # the response's start and end.
                    await self.push_frame(LLMFullResponseStartFrame())
                    await self.push_error(f"no model could answer: {failures(results)}")
                    await self.push_frame(LLMFullResponseEndFrame())
                    return
                served = self.served_by = self._active = winner.model.id
                handoff = handoffs[served]
                while (out := await handoff.get()) is not None:
                    forwarded = forwarded or isinstance(out, LLMTextFrame)
                    await self.push_frame(out)
                ended = await winner.result
                if ended is None or ended.ok:
                    return
                if forwarded:
                    # The caller heard part of this answer: another model must not start it
                    # again (no repeated half-sentence). The pipeline sees an error.
                    await self.push_error(f"{served} failed mid-answer ({ended.error})")
                    await self.push_frame(LLMFullResponseEndFrame())
                    return
        finally:
            await race.aclose()
            await self._call_event_handler("on_turn_served", TurnServed(served, tuple(results)))

    def _runner(
        self, model: Model, frame: LLMContextFrame, handoff: asyncio.Queue[Frame | None]
    ) -> Runner:
        service = self._members[model.id]
        gates = self._gates[model.id]

        async def run(attempt: Attempt) -> ProbeResult:
            seen: asyncio.Queue[Frame] = asyncio.Queue()
            gates.attempt = seen
            try:
                async with attempt.deadline():
                    await service.queue_frame(LLMContextFrame(frame.context))
                    while not isinstance(got := await seen.get(), LLMFullResponseEndFrame):
                        if isinstance(got, ErrorFrame):
                            gates.draining = True  # its response's end is on its way
                            exc = got.exception or RuntimeError(got.error)
                            return failure(attempt, exc)
                        _note(attempt, got)
                        handoff.put_nowait(got)
                    handoff.put_nowait(got)
                    attempt.finished()
            except TimeoutError:
                await gates.interrupt(service)
                return attempt.timed_out()
            finally:
                gates.attempt = None
                handoff.put_nowait(None)
            return attempt.success()

        return run

    def _is_active(self, gates: _Gates) -> bool:
        return self._gates[self._active] is gates

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._recording.add(task)
        task.add_done_callback(self._recording.discard)


class _Gates:
    """The two gates around one member: what reaches it, and where what it says goes."""

    def __init__(self, switcher: HealthAwareLLMSwitcher) -> None:
        self.switcher = switcher
        self.attempt: asyncio.Queue[Frame] | None = None  # the attempt now running, if any
        self.interruptions: set[int] = set()  # ids of the interruptions this gate sent
        self.draining = False  # a failed or cut member's last frames are on their way: dropped
        self.inlet = _Gate(self._inward)
        self.outlet = _Gate(self._outward)

    async def interrupt(self, service: FrameProcessor) -> None:
        """Stop what the member is doing (its request is closed); its echo goes no further."""
        stop = InterruptionFrame()
        self.interruptions.add(stop.id)
        self.draining = True
        await service.queue_frame(stop)

    async def _inward(self, gate: _Gate, frame: Frame, direction: FrameDirection) -> None:
        if direction == FrameDirection.UPSTREAM:
            if isinstance(frame, ErrorFrame) and self.attempt is not None:
                self.attempt.put_nowait(frame)  # the attempt's failure, not the pipeline's
                return
            await gate.push_frame(frame, direction)
            return
        # Contexts reach members only through a turn's attempts (the switcher sends them).
        if isinstance(frame, LLMContextFrame):
            return
        if isinstance(frame, (*_LIFECYCLE, InterruptionFrame)) or self.switcher._is_active(self):
            await gate.push_frame(frame, direction)

    async def _outward(self, gate: _Gate, frame: Frame, direction: FrameDirection) -> None:
        if direction == FrameDirection.UPSTREAM:
            await gate.push_frame(frame, direction)
            return
        if isinstance(frame, _LIFECYCLE):
            await gate.push_frame(frame, direction)
        elif isinstance(frame, InterruptionFrame) and frame.id in self.interruptions:
            # The member has stopped: what it pushes from now on is new.
            self.interruptions.discard(frame.id)
            self.draining = False
        elif self.draining:
            self.draining = not isinstance(frame, LLMFullResponseEndFrame)
        elif self.attempt is not None:
            self.attempt.put_nowait(frame)  # the switcher hands it on if this member wins
        elif self.switcher._is_active(self):
            await gate.push_frame(frame, direction)


class _Gate(FrameProcessor):
    """A pass-through processor whose routing is a function (direct mode: no task of its
    own, so frames keep the order the member pushed them in)."""

    def __init__(self, route: Any) -> None:
        super().__init__(enable_direct_mode=True)
        self._route = route

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        await self._route(self, frame, direction)


def _note(attempt: Attempt, frame: Frame) -> None:
    """Only words or a tool call are content; the frames around them are not."""
    if isinstance(frame, LLMTextFrame):
        attempt.text(frame.text)
    elif isinstance(frame, (FunctionCallsStartedFrame, FunctionCallInProgressFrame)):
        attempt.tool_call()


def _service(model: Model, key: str, system_instruction: str | None) -> LLMService[Any]:
    provider = model.provider
    if provider.type == "anthropic":
        from anthropic import AsyncAnthropic
        from pipecat.services.anthropic.llm import AnthropicLLMService

        # Retries are the attempt rules' job: the client never retries on its own.
        client = AsyncAnthropic(api_key=key, base_url=provider.base_url, max_retries=0)
        settings = AnthropicLLMService.Settings(
            model=model.name, system_instruction=system_instruction
        )
        return AnthropicLLMService(api_key=key, client=client, settings=settings)
    from pipecat.services.openai.llm import OpenAILLMService

    service = OpenAILLMService(
        api_key=key,
        base_url=provider.base_url,
        settings=OpenAILLMService.Settings(model=model.name, system_instruction=system_instruction),
    )
    # Pipecat builds the client with the SDK's default retries (two, with back-off): the
    # attempt rules decide what happens after a failure instead.
    service._client = service._client.with_options(max_retries=0)
    return service
