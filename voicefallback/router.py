"""The library entry points: the same choice `start` makes, without a process per session.

`AsyncSessionRouter` is for voice workers (LiveKit Agents, Pipecat: asyncio programs). It
never blocks their loop: provider calls are coroutines on it, and state work that could wait
(a locked SQLite file, a database server) runs on one worker thread of the router's own (see
store/worker.py). `SessionRouter` is its synchronous twin.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from voicefallback.config import (
    DEFAULT_CONCURRENCY,
    Registry,
    config_path,
    db_path,
    load_registry,
    resolve_mode,
)
from voicefallback.errors import InputError
from voicefallback.evidence import SessionReport, record_session, session_result
from voicefallback.health import apply_probe
from voicefallback.probing import ProbedModel, run_probes
from voicefallback.providers import Adapters
from voicefallback.records import utcnow
from voicefallback.retention import prune_after_probe
from voicefallback.routing import SharedProbes, route_session
from voicefallback.sessions import (
    PYTHON_NAMES,
    StartOutcome,
    build_request,
    check_body,
    validate_request,
)
from voicefallback.store.worker import StoreWorker


class AsyncSessionRouter:
    """Keeps the registry, the state and warm provider clients for a voice worker.

    >>> async with AsyncSessionRouter(config="models.toml") as router:
    ...     outcome = await router.choose("sim-1", "anthropic:claude-3-5-sonnet-latest")
    >>> outcome.chosen, outcome.reason
    ('openai:gpt-4o-mini', 'primary_unhealthy')

    Paths and mode resolve as on the command line (argument, then environment, then
    default). Concurrent `choose` calls that find the same stale model share one probe.
    """

    def __init__(
        self,
        config: str | Path | None = None,
        db: str | Path | None = None,
        mode: str | None = None,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
    ) -> None:
        self.registry = load_registry(config_path(Path(config) if config else None))
        self.mode = resolve_mode(mode, self.registry, "mode")
        self.db = db_path(db or None)
        self._concurrency = concurrency
        self._state = StoreWorker(
            self.db, threaded=True, connect_timeout_s=self.registry.connect_timeout_s
        )
        self._adapters = Adapters(self.mode, self.registry.key_env_names(), concurrency)
        self._retired: list[Adapters] = []
        self._shared = SharedProbes()

    async def choose(
        self,
        simulation_id: str,
        primary: str,
        fallbacks: Sequence[str] = (),
        *,
        body: Mapping[str, Any] | None = None,
        opening_call: bool = False,
        record_event: bool = True,
    ) -> StartOutcome:
        """Pick the model a session should start on and record why, like `start`.

        By default no opening call is made: the worker calls `outcome.chosen` itself (the
        decision still probes stale candidates, within their first-token budgets). With
        `opening_call=True` this is exactly `voicefallback start`. Bad input raises
        `InputError` before anything is called or written.
        """
        if isinstance(fallbacks, str):  # a str is a Sequence[str] too: one id per character
            raise InputError("fallbacks: a list of model ids, not one string")
        checked = check_body(body) if body else {}
        request = build_request(
            checked, simulation_id, primary, list(fallbacks) or None, PYTHON_NAMES
        )
        registry = self.registry
        validate_request(registry, request, PYTHON_NAMES)
        return await route_session(
            registry,
            self._state,
            self._adapters,
            request,
            opening_call=opening_call,
            record_event=record_event,
            shared=self._shared,
        )

    async def report(
        self,
        model: str,
        *,
        ttft_ms: int | None = None,
        latency_ms: int | None = None,
        error: str | None = None,
        simulation_id: str | None = None,
    ) -> SessionReport:
        """A real session's turn as evidence: its first-token time, or its error kind
        (SPEC's kinds, `over_budget` or `stalled`). Returns the model's status after it."""
        registry = self.registry
        result = session_result(
            registry,
            model,
            ttft_ms=ttft_ms,
            latency_ms=latency_ms,
            error=error,
            simulation_id=simulation_id,
            now=utcnow(),
            names=PYTHON_NAMES,
        )
        return await self._state.run(
            lambda store: record_session(store, registry, result), abandon=True
        )

    async def probe(
        self, models: Sequence[str] | None = None, *, lock_wait_s: float = 0.0
    ) -> list[ProbedModel]:
        """Probe `models` (default: all) now and record them, under the probe lock shared
        with cron's `probe`. By default a held lock is not waited for: `ProbeBusy` (exit 75)
        says another probe is measuring the same models right now."""
        registry = self.registry
        selected = (
            [registry.require(m, "models") for m in dict.fromkeys(models)]
            if models
            else list(registry.models)
        )
        limits = {m.id: m.thresholds for m in selected}
        lock: AbstractContextManager[None] = await self._state.run(
            lambda store: _entered(store.probe_lock(lock_wait_s))
        )
        try:
            before = await self._state.run(lambda s: s.snapshots(m.id for m in selected))
            results = await run_probes(selected, self._adapters)

            def record(store: Any) -> list[Any]:
                recorded = store.record(results, limits, update=apply_probe)
                prune_after_probe(store, registry)
                return list(recorded)

            recorded = await self._state.run(record)
        finally:
            await self._state.run(lambda _: lock.__exit__(None, None, None))
        return [ProbedModel(r, before.get(r.model), after) for r, after in recorded]

    def reload(self, registry: Registry) -> None:
        """Use a newly loaded registry from now on (`serve` reloads models.toml this way).
        Calls in flight finish on the clients they started with."""
        self._retired.append(self._adapters)
        self.registry = registry
        self._adapters = Adapters(self.mode, registry.key_env_names(), self._concurrency)

    async def aclose(self) -> None:
        for adapters in (*self._retired, self._adapters):
            await adapters.aclose()
        self._retired.clear()
        await self._state.aclose()

    async def __aenter__(self) -> AsyncSessionRouter:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class SessionRouter:
    """`AsyncSessionRouter` for synchronous programs, on an event loop of its own.

    >>> router = SessionRouter(config="models.toml")
    >>> outcome = router.choose("sim-1", "anthropic:claude-3-5-sonnet-latest")
    >>> outcome.chosen, outcome.reason
    ('openai:gpt-4o-mini', 'primary_unhealthy')

    Not for code already running an event loop (use `AsyncSessionRouter` there), and not
    thread-safe: use one router per thread.
    """

    def __init__(
        self,
        config: str | Path | None = None,
        db: str | Path | None = None,
        mode: str | None = None,
    ) -> None:
        self._router = AsyncSessionRouter(config, db, mode)
        self._loop = asyncio.Runner()
        self.registry = self._router.registry
        self.mode = self._router.mode

    def choose(
        self,
        simulation_id: str,
        primary: str,
        fallbacks: Sequence[str] = (),
        *,
        body: Mapping[str, Any] | None = None,
        opening_call: bool = False,
        record_event: bool = True,
    ) -> StartOutcome:
        """See `AsyncSessionRouter.choose`."""
        return self._loop.run(
            self._router.choose(
                simulation_id,
                primary,
                fallbacks,
                body=body,
                opening_call=opening_call,
                record_event=record_event,
            )
        )

    def report(
        self,
        model: str,
        *,
        ttft_ms: int | None = None,
        latency_ms: int | None = None,
        error: str | None = None,
        simulation_id: str | None = None,
    ) -> SessionReport:
        """See `AsyncSessionRouter.report`."""
        return self._loop.run(
            self._router.report(
                model,
                ttft_ms=ttft_ms,
                latency_ms=latency_ms,
                error=error,
                simulation_id=simulation_id,
            )
        )

    def close(self) -> None:
        self._loop.run(self._router.aclose())
        self._loop.close()

    def __enter__(self) -> SessionRouter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _entered(lock: AbstractContextManager[None]) -> AbstractContextManager[None]:
    lock.__enter__()
    return lock
