"""The adapter contract: probe a model, or make a session's opening call, as coroutines.

Adapters are built per provider and reused for every model of that provider while a command
(or a library router, or `serve`) runs, so a live client and its connection pool are built
once. SDK modules are imported only inside the live adapter modules, and only when one is
built. Every call of one pool runs on the caller's event loop, at most `concurrency` at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import replace
from typing import Protocol

from voicefallback.attempts import Attempt, Runner
from voicefallback.config import DEFAULT_CONCURRENCY, Model, Provider
from voicefallback.environment import secrets_from_env
from voicefallback.records import CallKind, Mode, Opening, ProbeResult
from voicefallback.redaction import redact


class Adapter(Protocol):
    async def prepare(self) -> None:
        """Build clients now, so one-time costs are never timed as provider latency."""
        ...

    async def probe(self, model: Model, attempt: Attempt) -> ProbeResult:
        """A minimal call measuring time to first token and total time, under `attempt`'s
        deadline and rules (attempts.py). Never raises."""
        ...

    async def open_session(self, model: Model, opening: Opening, attempt: Attempt) -> ProbeResult:
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
        self._in_flight = 0
        self._retired = False
        self._closed: asyncio.Event | None = None

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

    def attempt(self, model: Model, kind: CallKind) -> Attempt:
        """An attempt outside any race: no hedge, no stall cut, `timeout_s` only."""
        return Attempt(model, kind, stub=self.mode == "stub")

    def runner(self, model: Model, opening: Opening | None = None) -> Runner:
        """How a race calls `model`: its opening call, or a probe when there is no opening."""
        if opening is None:
            return lambda attempt: self.probe(model, attempt)
        return lambda attempt: self.open_session(model, opening, attempt)

    async def probe(self, model: Model, attempt: Attempt | None = None) -> ProbeResult:
        call = attempt or self.attempt(model, "probe")
        async with self._calling(model, call) as adapter:
            return self._redacted(await adapter.probe(model, call))

    async def open_session(
        self, model: Model, opening: Opening, attempt: Attempt | None = None
    ) -> ProbeResult:
        call = attempt or self.attempt(model, "start")
        async with self._calling(model, call) as adapter:
            return self._redacted(await adapter.open_session(model, opening, call))

    @contextlib.asynccontextmanager
    async def _calling(self, model: Model, attempt: Attempt) -> AsyncIterator[Adapter]:
        self._in_flight += 1
        attempt.preparing()
        try:
            adapter = await self.for_model(model)
            await adapter.prepare()  # built by another call that asked first: wait for it here
            async with self._slots:
                await self._turn()
                attempt.start_clock()  # building the client and waiting a turn are not its time
                yield adapter
        finally:
            self._in_flight -= 1
            if self._retired and self._in_flight == 0:
                asyncio.get_running_loop().create_task(self.aclose())

    def _redacted(self, result: ProbeResult) -> ProbeResult:
        """Whatever the provider said, its error message and the opening line (a gateway may
        echo the key), without secrets."""
        if result.message is None and result.text is None:
            return result
        from voicefallback.providers.classify import one_line

        message = None if result.message is None else one_line(result.message, self._secrets)
        text = None if result.text is None else redact(result.text, self._secrets)
        return replace(result, message=message, text=text)

    async def for_model(self, model: Model) -> Adapter:
        provider = model.provider
        if provider.name not in self._built:
            adapter = _build(provider, self.mode)
            self._built[provider.name] = adapter
            await adapter.prepare()
        return self._built[provider.name]

    async def prepare(self, models: Iterable[Model]) -> None:
        """Build adapters up front (SDK imports and clients, off the loop), so one-time
        costs are neither timed as provider latency nor paid on a session's path."""
        for model in models:
            await self.for_model(model)

    def retire(self) -> None:
        """No new calls will come (a reloaded registry has its own pool): close once the
        calls in flight have ended."""
        self._retired = True
        if self._in_flight == 0:
            asyncio.get_running_loop().create_task(self.aclose())

    @property
    def closed(self) -> bool:
        return self._closed is not None and self._closed.is_set()

    async def aclose(self) -> None:
        if self._closed is None:
            self._closed = asyncio.Event()
        built, self._built = list(self._built.values()), {}
        for adapter in built:
            await adapter.aclose()
        self._closed.set()

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
