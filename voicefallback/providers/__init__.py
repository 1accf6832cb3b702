"""The adapter contract: probe a model, or make a session's opening call, as coroutines.

Adapters are built per provider and reused for every model of that provider while a command
(or a library router, or `serve`) runs, so a live client and its connection pool are built
once. SDK modules are imported only inside the live adapter modules, and only when one is
built. Every call of one pool runs on the caller's event loop, at most `concurrency` at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any, Protocol

from voicefallback.config import DEFAULT_CONCURRENCY, Model, Provider
from voicefallback.records import Mode, ProbeResult
from voicefallback.redaction import redact, secrets_from_env


class Adapter(Protocol):
    async def prepare(self) -> None:
        """Build clients now, so one-time costs are never timed as provider latency."""
        ...

    async def probe(self, model: Model, *, first_token_s: float | None = None) -> ProbeResult:
        """A minimal call measuring time to first token and total time. Never raises.

        With `first_token_s`, a call with no first token by then is abandoned (`over_budget`).
        """
        ...

    async def open_session(
        self, model: Model, request: Mapping[str, Any], *, first_token_s: float | None = None
    ) -> ProbeResult:
        """The session's opening call (kind="start"), with the opening line in `text`."""
        ...

    async def aclose(self) -> None: ...


class Adapters:
    """One adapter per provider, for as long as the pool is open.

    Calls go through `probe` and `open_session` here, which redact the provider's message
    once, with every configured key (longest first, so no key's tail survives another's
    replacement), before it is cut to one line and anyone stores or prints it.
    """

    def __init__(
        self,
        mode: Mode,
        key_env_names: Iterable[str | None] = (),
        concurrency: int = DEFAULT_CONCURRENCY,
    ) -> None:
        self.mode = mode
        self._secrets = secrets_from_env(key_env_names)
        self._built: dict[str, Adapter] = {}
        self._slots = asyncio.Semaphore(concurrency)
        self._gate = asyncio.Lock()

    async def _turn(self) -> None:
        """Wait for this call's turn to start: one call starts per pass of the event loop.

        Starting a live call (the SDK building the request, the connection pool finding it a
        connection) is ~1 ms of CPU before its first wait; 50 calls made at once would all
        start in one pass, stalling everything else on the loop (a voice worker's audio) for
        tens of ms. Taken in turns, other tasks run between two starts, and the last call
        starts no later than it would have. Stub calls cost nothing to start: no turns.
        """
        if self.mode == "stub":
            return
        async with self._gate:
            await asyncio.sleep(0)

    async def probe(self, model: Model, *, first_token_s: float | None = None) -> ProbeResult:
        adapter = await self.for_model(model)
        async with self._slots:
            await self._turn()
            return self._redacted(await adapter.probe(model, first_token_s=first_token_s))

    async def open_session(
        self, model: Model, request: Mapping[str, Any], *, first_token_s: float | None = None
    ) -> ProbeResult:
        adapter = await self.for_model(model)
        async with self._slots:
            await self._turn()
            result = await adapter.open_session(model, request, first_token_s=first_token_s)
        return self._redacted(result)

    def _redacted(self, result: ProbeResult) -> ProbeResult:
        """The provider's message and opening text, both provider-supplied (a gateway may
        echo the key it was sent)."""
        if result.text is not None:
            result = replace(result, text=redact(result.text, self._secrets))
        if result.message is None:
            return result
        from voicefallback.providers.classify import one_line

        return replace(result, message=one_line(result.message, self._secrets))

    async def for_model(self, model: Model) -> Adapter:
        provider = model.provider
        if provider.name not in self._built:
            adapter = _build(provider, self.mode)
            self._built[provider.name] = adapter
            await adapter.prepare()
        return self._built[provider.name]

    async def prepare(self, models: Iterable[Model]) -> None:
        """Build adapters up front, so one-time costs are not timed as provider latency."""
        for model in models:
            await self.for_model(model)

    async def aclose(self) -> None:
        built, self._built = list(self._built.values()), {}
        for adapter in built:
            await adapter.aclose()

    async def __aenter__(self) -> Adapters:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _build(provider: Provider, mode: Mode) -> Adapter:
    if mode == "stub":
        from voicefallback.providers.stub import StubAdapter

        return StubAdapter()
    if provider.type == "anthropic":
        from voicefallback.providers.anthropic import AnthropicAdapter

        adapter: Adapter = AnthropicAdapter(provider)
        return adapter
    from voicefallback.providers.openai import OpenAIAdapter

    adapter = OpenAIAdapter(provider)
    return adapter
