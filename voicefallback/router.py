"""The library entry points: the same choice `start` makes, without a process per session.

`AsyncSessionRouter` is for voice workers (LiveKit Agents, Pipecat: asyncio programs). It
never blocks their loop: provider calls are coroutines on it, and state work that could wait
(a locked SQLite file, a database server) runs on one worker thread of the router's own (see
store/owner.py). `SessionRouter` is its synchronous twin.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from voicefallback.config import (
    DEFAULT_CONCURRENCY,
    Model,
    Registry,
    Thresholds,
    load_registry,
    resolve_mode,
)
from voicefallback.environment import config_path, db_path, secrets_from_env
from voicefallback.errors import InputError, VoicefallbackError
from voicefallback.evidence import SessionReport, record_session, session_result
from voicefallback.health import apply_probe, judge, status_of
from voicefallback.probing import ProbedModel, probe_round
from voicefallback.providers import Adapters
from voicefallback.records import FallbackEvent, ProbeResult, Snapshot, Status, utcnow
from voicefallback.redaction import refuse_secret
from voicefallback.routing import SharedProbes, route_session
from voicefallback.sessions import (
    PYTHON_NAMES,
    StartOutcome,
    build_request,
    check_body,
    validate_request,
)
from voicefallback.store import Store
from voicefallback.store.owner import StateOwner

log = logging.getLogger("voicefallback")
T = TypeVar("T")


class AsyncSessionRouter:
    """Keeps the registry, the state and warm provider clients for a voice worker.

    >>> async with AsyncSessionRouter(config="models.toml") as router:
    ...     outcome = await router.choose("sim-1", "anthropic:claude-3-5-sonnet-latest")
    >>> outcome.chosen, outcome.reason
    ('openai:gpt-4o-mini', 'primary_unhealthy')

    Paths and mode resolve as on the command line (argument, then environment, then
    default). Concurrent `choose` calls that find the same stale model share one probe.
    The router holds each model's latest snapshot in memory (`statuses`): read with every
    choice, refreshed in the background while a voice-framework binding asks for it, updated
    at once by this process's own calls, and what a choice decides from when the state is out
    of reach (its age counts as usual).
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
        self._owner = StateOwner(
            self.db,
            update=apply_probe,
            threaded=True,
            connect_timeout_s=self.registry.connect_timeout_s,
        )
        self._state = _HeldState(self, self._owner)
        self._adapters = Adapters(self.mode, self.registry.key_env_names(), concurrency)
        self._secrets = secrets_from_env(self.registry.key_env_names())
        self._shared = SharedProbes(lambda result: self.record_soon([result]))
        self._refresher: asyncio.Task[None] | None = None

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
        decision still probes stale candidates, within their first-token budgets, and decides
        on the first content token). With `opening_call=True` this is exactly `voicefallback
        start`. Bad input raises `InputError` before anything is called or written.
        """
        if isinstance(fallbacks, str):  # a str is a Sequence[str] too: one id per character
            raise InputError("fallbacks: a list of model ids, not one string")
        checked = check_body(body) if body else {}
        request = build_request(
            checked, simulation_id, primary, list(fallbacks) or None, PYTHON_NAMES
        )
        registry = self.registry
        validate_request(registry, request, PYTHON_NAMES)
        # A simulation id is stored and shown as given: one that is a key is refused.
        refuse_secret(request.simulation_id, "simulation_id", self._secrets)
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
        (the README's kinds, `over_budget` or `stalled`). Returns the model's status after it."""
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
            mode=self.mode,
        )
        if simulation_id is not None:
            refuse_secret(simulation_id, "simulation_id", self._secrets)
        self._state.remember([result])
        return await self._state.write(
            lambda store: record_session(store, registry, result), abandon=True
        )

    def statuses(self, model_ids: Sequence[str]) -> dict[str, Status]:
        """Each model's status from the evidence held in memory: no state read, no call.

        A stale model counts by its last evidence, and is probed again in the background;
        the view is refreshed from the state (other processes and hosts) about once a second
        while someone asks.
        """
        if self._refresher is None or self._refresher.done():
            self._refresher = asyncio.get_running_loop().create_task(self._refresh())
        now = utcnow()
        found: dict[str, Status] = {}
        for model_id in model_ids:
            model = self.registry.require(model_id, "model_ids")
            snapshot = self._state.held.get(model_id)
            status = status_of(snapshot, model.thresholds, now, self.mode)
            if status == "stale":
                assert snapshot is not None
                self._probe_soon(model)
                status = judge(snapshot, model.thresholds)
            elif status == "unknown":
                self._probe_soon(model)
            found[model_id] = status
        return found

    def record_soon(self, results: Sequence[ProbeResult]) -> None:
        """Record calls in the background: the view takes them at once, the state as soon as
        it can. Never raises and never waits (a state that is down or busy included)."""
        self._state.record_soon(results)

    async def warm(self, model_ids: Sequence[str] | None = None) -> None:
        """Import the SDKs and build the clients of these models (default: all) now, off the
        loop, so that no session pays for them. Entering the router warms every model."""
        registry = self.registry
        models = [registry.require(m, "model_ids") for m in model_ids] if model_ids else None
        await self._adapters.prepare(models if models is not None else registry.models)

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
        probed = await probe_round(
            registry,
            selected,
            self._adapters,
            self._state.write,
            lock_wait_s=lock_wait_s,
            on_result=lambda result: self._state.remember([result]),
        )
        return probed

    def reload(self, registry: Registry) -> None:
        """Use a newly loaded registry from now on (`serve` reloads models.toml this way).
        Calls in flight finish on the clients they started with, which are then closed."""
        self._adapters.retire()
        self.registry = registry
        self._adapters = Adapters(self.mode, registry.key_env_names(), self._concurrency)
        self._secrets = secrets_from_env(registry.key_env_names())
        self._state.spawn(self.warm())  # the new pool's clients, before a session needs them

    @property
    def owner(self) -> StateOwner:
        """The process's one way into the state: `serve`'s reads and /readyz use it too."""
        return self._owner

    async def aclose(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        await self._owner.stop_waiting()  # writes still queued below end within a second
        await self._shared.drain(CLOSE_GRACE_S)
        await self._state.drain(CLOSE_GRACE_S)
        await self._adapters.aclose()
        await self._owner.aclose()

    async def __aenter__(self) -> AsyncSessionRouter:
        await self.warm()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- the view ------------------------------------------------------------------------------

    async def _refresh(self) -> None:
        """Keep the view up to date with the state, about once a second."""
        while True:
            await asyncio.sleep(REFRESH_S)
            with contextlib.suppress(Exception):  # an unreadable state keeps the last view
                await self._state.refresh()

    def _probe_soon(self, model: Model) -> None:
        """A model with no fresh evidence is probed in the background, by the probe round
        cron's `probe` runs (one at a time per model; skipped while another probe holds the
        lock: its results reach the view through the state)."""
        if model.id in self._state.probing:
            return
        self._state.probing.add(model.id)

        async def probe() -> None:
            try:
                await self.probe([model.id])
            except VoicefallbackError as exc:
                log.debug("background probe of %s skipped: %s", model.id, exc)
            finally:
                self._state.probing.discard(model.id)

        self._state.spawn(probe())


REFRESH_S = 1.0  # how old the view of the state may grow while a binding asks for it
# Closing: how long background probes may go on to be recorded before they are cut.
CLOSE_GRACE_S = 2.0


class _HeldState:
    """The router's state as a choice sees it: the snapshots last read (from the state, with
    this process's own calls applied at once), and the writes, written in the order made.

    A choice reads the state only when the view is older than REFRESH_S (concurrent choices
    share that one read): under load, the state's thread serves writes, not a read per start.
    A start's own record is awaited in place; background writes (`record_soon`) are handed
    over as tasks, and whatever is written after one of them waits for it first, so the
    state's one thread takes them in the order they were made.
    """

    def __init__(self, router: AsyncSessionRouter, owner: StateOwner) -> None:
        self._router = router
        self.owner = owner
        self.held: dict[str, Snapshot] = {}
        self.probing: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._read_at = -REFRESH_S  # monotonic time of the last full read
        self._reading: asyncio.Future[str | None] | None = None
        self._writing: asyncio.Future[Any] | None = None  # the latest write handed over

    def _limits(self) -> dict[str, Thresholds]:
        return {m.id: m.thresholds for m in self._router.registry.models}

    async def snapshots(self, model_ids: Sequence[str]) -> tuple[dict[str, Snapshot], str | None]:
        degraded = None
        if time.monotonic() - self._read_at >= REFRESH_S:
            degraded = await self.refresh()
        return {m: self.held[m] for m in model_ids if m in self.held}, degraded

    async def refresh(self) -> str | None:
        """Read every registered model's snapshot once (shared by concurrent callers). With
        the state out of reach the view keeps what it last read, its age counting as usual."""
        if self._reading is None:
            self._reading = asyncio.ensure_future(self._read())
        reading = self._reading
        try:
            return await asyncio.shield(reading)
        finally:
            if reading.done() and self._reading is reading:
                self._reading = None

    async def _read(self) -> str | None:
        ids = [m.id for m in self._router.registry.models]
        found, degraded = await self.owner.snapshots(ids)
        if not degraded:
            for model_id, snapshot in found.items():
                held = self.held.get(model_id)
                # This process's own calls since the read began are newer: they stay.
                if held is None or snapshot.last_checked_at >= held.last_checked_at:
                    self.held[model_id] = snapshot
            self._read_at = time.monotonic()
        return degraded

    def remember(self, calls: Sequence[ProbeResult]) -> None:
        limits = self._limits()
        for call in calls:
            if call.model in limits:
                previous = self.held.get(call.model)
                self.held[call.model] = apply_probe(previous, call, limits[call.model])

    async def record(self, calls: Sequence[ProbeResult], event: FallbackEvent | None) -> str | None:
        # Awaited in place (no task between): the owner hands it to its thread at once, in
        # order, and every pass of a busy loop saved is a start's wait shortened.
        self.remember(calls)
        await self.flush()  # a background write handed over before this one goes first
        return await self.owner.record(list(calls), self._limits(), event)

    def record_soon(self, calls: Sequence[ProbeResult]) -> None:
        self.remember(calls)
        written = self._hand_over(list(calls), None)

        def said(done: asyncio.Future[str | None]) -> None:
            lost = None if done.cancelled() else done.result()
            if lost:
                log.warning("%s", lost)  # the line says what was not recorded, and where

        written.add_done_callback(said)

    def _hand_over(
        self, calls: list[ProbeResult], event: FallbackEvent | None
    ) -> asyncio.Future[str | None]:
        """Start the write now: the owner hands it to its thread in the order asked."""
        task = asyncio.ensure_future(self.owner.record(calls, self._limits(), event))
        self._writing = task
        return task

    async def write(self, work: Callable[[Store], T], *, abandon: bool = False) -> T:
        """Other store work, after the writes handed over before it."""
        await self.flush()
        return await self.owner.run(work, abandon=abandon)

    async def flush(self) -> None:
        """Wait until every write handed over so far is written (or given up on)."""
        writing = self._writing
        if writing is not None and not writing.done():
            await asyncio.wait([writing])

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self, grace_s: float) -> None:
        """Let background probes end for up to `grace_s` (what they finish is recorded), cut
        the rest, then let the writes end."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=grace_s)
        for task in list(self._tasks):
            task.cancel()  # a probe round cut short still records what finished
        while self._tasks:
            await asyncio.wait(list(self._tasks))
        await self.flush()


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
        self._loop.run(self._router.warm())
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
