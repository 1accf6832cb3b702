"""LiveKit Agents binding: an `llm.LLM` running every turn by the attempt rules over shared health.

Imported only by workers that use it (extra `voicefallback[livekit]`): importing it imports
livekit-agents and its OpenAI and Anthropic plugins, on the worker's main thread as LiveKit
requires, before the first caller.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from livekit.agents import APIConnectionError, APIError, llm
from livekit.agents.llm.fallback_adapter import AvailabilityChangedEvent
from livekit.agents.types import (
    DEFAULT_API_CONNECT_OPTIONS,
    NOT_GIVEN,
    APIConnectOptions,
    NotGivenOr,
)
from livekit.plugins import anthropic as lk_anthropic
from livekit.plugins import openai as lk_openai

from voicefallback.attempts import Attempt, Runner
from voicefallback.config import Model
from voicefallback.providers.live import read_key
from voicefallback.race import Contender, Race
from voicefallback.records import ErrorKind, ProbeResult
from voicefallback.turns import TurnBook, TurnServed, failure, failures

if TYPE_CHECKING:
    from voicefallback.router import AsyncSessionRouter

# Retries are the attempt rules' job (a hedge, the next candidate): a member never retries.
TURN_CONNECT_OPTIONS = APIConnectOptions(max_retry=0, timeout=DEFAULT_API_CONNECT_OPTIONS.timeout)
__all__ = ["HealthAwareLLM", "HealthAwareStream", "TurnServed"]


class HealthAwareLLM(llm.LLM[Literal["llm_availability_changed", "turn_served"]]):
    """An LLM for `AgentSession(llm=...)` whose every turn follows README "Every turn".

    Candidates are ordered by the router's in-memory view of the shared health; each
    attempt's first content token is bounded by its model's `ttft_budget_ms`, past which the
    next candidate starts beside it (a hedge); the first content token wins and the other
    stream is closed. Every attempt is recorded as a `session` row in the background.

    Events: `metrics_collected` (the members' own), `llm_availability_changed`
    (`AvailabilityChangedEvent`, as FallbackAdapter emits it, when a model becomes
    unhealthy or misconfigured in this process's view, or usable again), and `turn_served`
    (`TurnServed`).
    """

    def __init__(self, router: AsyncSessionRouter, llms: Mapping[str, llm.LLM[Any] | None]) -> None:
        """`llms`: registered model id -> the framework LLM that calls it, in the operator's
        order of preference (None: a model that cannot be called, such as a missing key)."""
        super().__init__()
        self._book = TurnBook(router, list(llms), "HealthAwareLLM")
        self._llms = dict(llms)
        self._unusable: dict[str, tuple[ErrorKind, str]] = {}
        self._owns_members = False  # built by from_registry: closed with this LLM
        self.served_by: str | None = None  # the model that answered the latest turn
        for member in self._members():
            member.on("metrics_collected", self._on_metrics_collected)

    @classmethod
    def from_registry(cls, router: AsyncSessionRouter, model_ids: Sequence[str]) -> HealthAwareLLM:
        """Each model's LiveKit plugin LLM built from models.toml: its model name, its
        provider's `base_url`, and the key from the provider's `api_key_env`.

        Build it before the first caller (in LiveKit's `prewarm`, or as the entrypoint
        starts): constructing the clients loads TLS certificates.
        """
        if isinstance(model_ids, str):
            raise ValueError("HealthAwareLLM: a list of model ids, not one string")
        members: dict[str, llm.LLM[Any] | None] = {}
        missing: dict[str, tuple[ErrorKind, str]] = {}
        for model_id in model_ids:
            model = router.registry.require(model_id, "HealthAwareLLM")
            key, unusable = read_key(model.provider)
            if key is None:
                members[model_id] = None
                if unusable is not None:
                    missing[model_id] = (unusable.kind, unusable.message)
                continue
            members[model_id] = _plugin_llm(model, key)
        built = cls(router, members)
        built._unusable.update(missing)
        built._owns_members = True
        return built

    @property
    def model(self) -> str:
        """The model of the latest turn's answer (before any turn: the first model given)."""
        return self.served_by or next(iter(self._book.models))

    @property
    def provider(self) -> str:
        return self._book.models[self.model].provider.name

    def chat(
        self,
        *,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool] | None = None,
        conn_options: APIConnectOptions = TURN_CONNECT_OPTIONS,
        parallel_tool_calls: NotGivenOr[bool] = NOT_GIVEN,
        tool_choice: NotGivenOr[llm.ToolChoice] = NOT_GIVEN,
        extra_kwargs: NotGivenOr[dict[str, Any]] = NOT_GIVEN,
    ) -> HealthAwareStream:
        return HealthAwareStream(
            self,
            chat_ctx=chat_ctx,
            tools=tools or [],
            conn_options=conn_options,
            request={
                "parallel_tool_calls": parallel_tool_calls,
                "tool_choice": tool_choice,
                "extra_kwargs": extra_kwargs,
            },
        )

    def prewarm(self, *, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Open a connection to every model's endpoint: any of them may be a turn's hedge."""
        for member in self._members():
            member.prewarm(loop=loop)

    async def aclose(self) -> None:
        for member in self._members():
            member.off("metrics_collected", self._on_metrics_collected)
            if self._owns_members:
                await member.aclose()
        await super().aclose()

    # -- inside ------------------------------------------------------------------------------

    def _members(self) -> list[llm.LLM[Any]]:
        return [member for member in self._llms.values() if member is not None]

    def _on_metrics_collected(self, *args: Any, **kwargs: Any) -> None:
        self.emit("metrics_collected", *args, **kwargs)

    def _recorded(self, result: ProbeResult) -> None:
        """One attempt's result: recorded in the background; `llm_availability_changed`
        when this process's view of its model flips."""
        available = self._book.record(result)
        member = self._llms[result.model]
        if available is not None and member is not None:
            self.emit("llm_availability_changed", AvailabilityChangedEvent(member, available))


class HealthAwareStream(llm.LLMStream):
    """One turn: the race between candidates, and the winner's chunks handed on."""

    # Each member's own stream traces its request; this one only delegates.
    _llm_request_span_name = "voicefallback_turn"
    _llm_attempt_span_name = None
    _genai_operation_name = None

    def __init__(
        self,
        health_llm: HealthAwareLLM,
        *,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool],
        conn_options: APIConnectOptions,
        request: dict[str, Any],
    ) -> None:
        super().__init__(health_llm, chat_ctx=chat_ctx, tools=tools, conn_options=conn_options)
        self._health = health_llm
        self._request = request
        self._retry_on_chunk_sent = False  # no repeated half-sentence
        self.served_by: str | None = None

    async def _run(self) -> None:
        health = self._health
        queues: dict[Model, asyncio.Queue[llm.ChatChunk | None]] = {}
        results: list[ProbeResult] = []

        def recorded(result: ProbeResult) -> None:
            results.append(result)
            health._recorded(result)

        contenders = []
        for model in health._book.order():
            queues[model] = asyncio.Queue()
            contenders.append(Contender(model, self._runner(model.id, queues[model])))
        race = Race(contenders, kind="session", on_result=recorded)
        forwarded = False
        try:
            while True:
                winner = await race.run()
                if winner is None:
                    raise APIConnectionError(
                        "no model could answer: " + failures(results), retryable=False
                    )
                self.served_by = health.served_by = winner.model.id
                queue = queues[winner.model]
                while (chunk := await queue.get()) is not None:
                    forwarded = forwarded or chunk.has_response()
                    self._event_ch.send_nowait(chunk)
                ended = await winner.result
                if ended is None or ended.ok:
                    return
                if forwarded:
                    # What FallbackAdapter does with retry_on_chunk_sent=False: the caller
                    # heard part of this answer, so another model must not start it again.
                    raise APIConnectionError(
                        f"{ended.model} failed mid-answer ({ended.error}): {ended.message}",
                        retryable=False,
                    )
        finally:
            await race.aclose()
            health.emit("turn_served", TurnServed(self.served_by, tuple(results)))

    def _runner(self, model_id: str, queue: asyncio.Queue[llm.ChatChunk | None]) -> Runner:
        health = self._health
        member = health._llms[model_id]

        async def run(attempt: Attempt) -> ProbeResult:
            try:
                if member is None:
                    kind, message = health._unusable.get(
                        model_id, ("missing_key", f"{model_id}: no API key")
                    )
                    return attempt.failure(kind, message, measured=False)
                return await self._attempt(member, attempt, queue)
            finally:
                queue.put_nowait(None)

        return run

    async def _metrics_monitor_task(self, event_aiter: AsyncIterable[llm.ChatChunk]) -> None:
        # The member that answered reports its own metrics (forwarded by HealthAwareLLM).
        async for _ in event_aiter:
            pass

    async def _attempt(
        self, member: llm.LLM[Any], attempt: Attempt, queue: asyncio.Queue[llm.ChatChunk | None]
    ) -> ProbeResult:
        options = dataclasses.replace(
            self._conn_options, max_retry=0, timeout=attempt.model.thresholds.timeout_s
        )
        request = self._request
        try:
            async with attempt.deadline():
                stream = member.chat(
                    chat_ctx=self._chat_ctx,
                    tools=self._tools,
                    conn_options=options,
                    parallel_tool_calls=request["parallel_tool_calls"],
                    tool_choice=request["tool_choice"],
                    extra_kwargs=request["extra_kwargs"],
                )
                async with stream:
                    async for chunk in stream:
                        _note(attempt, chunk)
                        queue.put_nowait(chunk)
                attempt.finished()
        except TimeoutError:
            return attempt.timed_out()
        except APIError as exc:
            return failure(attempt, exc)
        return attempt.success()


def _note(attempt: Attempt, chunk: llm.ChatChunk) -> None:
    """Tell the attempt what arrived; only text or a tool call is content."""
    delta = chunk.delta
    if delta is not None and delta.content:
        attempt.text(delta.content)
    elif delta is not None and delta.tool_calls:
        attempt.tool_call()
    else:
        attempt.event()
    if chunk.usage is not None:
        attempt.tokens(chunk.usage.prompt_tokens, chunk.usage.completion_tokens)


def _plugin_llm(model: Model, key: str) -> llm.LLM[Any]:
    provider = model.provider
    base_url = provider.base_url or NOT_GIVEN
    if provider.type == "anthropic":
        return lk_anthropic.LLM(model=model.name, api_key=key, base_url=base_url)
    return lk_openai.LLM(model=model.name, api_key=key, base_url=base_url)
