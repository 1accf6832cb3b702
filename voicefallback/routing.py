"""`start`'s decision within first-token budgets: judge, probe just in time, open, record why.

The decision that prevents dead air must not cause it. Stale or unknown candidates ahead of
the first healthy one are probed at once, each abandoned at its model's `ttft_budget_ms`
(`over_budget`); so is the opening call while another candidate could still serve. The last
candidate that could serve keeps `timeout_s`: a late answer beats no answer.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Coroutine
from datetime import datetime
from pathlib import Path
from typing import Any

from voicefallback.config import Model, Registry, is_database_url
from voicefallback.health import apply_probe, status_of
from voicefallback.providers import Adapters
from voicefallback.records import Candidate, FallbackEvent, Mode, ProbeResult, Snapshot, utcnow
from voicefallback.selection import (
    Choice,
    candidate_order,
    could_still_serve,
    fallback_reason,
    passed_over,
    pick,
    to_probe,
)
from voicefallback.sessions import CLI_NAMES, StartOutcome, StartRequest, validate_request
from voicefallback.store.worker import StoreWorker


class SharedProbes:
    """Just-in-time probes in flight in one process, so concurrent starts that find the same
    stale model wait for one probe instead of each sending their own. The start that sent it
    records it; the others only use its result."""

    def __init__(self) -> None:
        self._inflight: dict[tuple[str, float | None], asyncio.Task[ProbeResult]] = {}

    async def probe(
        self, adapters: Adapters, model: Model, first_token_s: float | None
    ) -> tuple[ProbeResult, bool]:
        key = (model.id, first_token_s)
        task = self._inflight.get(key)
        if task is not None:
            return await asyncio.shield(task), False
        task = asyncio.ensure_future(adapters.probe(model, first_token_s=first_token_s))
        self._inflight[key] = task
        task.add_done_callback(lambda _: self._inflight.pop(key, None))
        return await asyncio.shield(task), True


async def start_session(
    registry: Registry,
    db: Path | str,
    mode: Mode,
    request: StartRequest,
    clock: Callable[[], datetime] = utcnow,
) -> StartOutcome:
    """What `start` does: choose, make the opening call, record calls and the event."""
    validate_request(registry, request, CLI_NAMES)
    # A database server that stops answering must not hold the session: its calls go to a
    # thread the start stops waiting for (see StoreWorker). A SQLite file is called inline.
    state = StoreWorker(
        db,
        threaded=is_database_url(db),
        connect_timeout_s=registry.connect_timeout_s,
        alone=True,
    )
    try:
        async with Adapters(mode, registry.key_env_names()) as adapters:
            return await route_session(registry, state, adapters, request, clock=clock)
    finally:
        await state.aclose()


async def route_session(
    registry: Registry,
    state: StoreWorker,
    adapters: Adapters,
    request: StartRequest,
    *,
    opening_call: bool = True,
    record_event: bool = True,
    shared: SharedProbes | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> StartOutcome:
    """SPEC "Choosing a model"; shared by `start`, the library routers and `serve`.

    Without `opening_call` the first usable candidate is chosen and the caller makes the
    call itself (a voice worker with its own client). Calls made here are always recorded;
    the fallback event only with `record_event`.
    """
    order, source = candidate_order(
        request.primary, request.fallbacks, [m.id for m in registry.models]
    )
    models = {model_id: registry.require(model_id, "start") for model_id in order}
    # With the state out of reach this reads nothing and the decision rests on just-in-time
    # probes alone; the writes below then wait in the local spool ("degraded").
    found, degraded = await state.run_session(lambda s: s.snapshots(order))
    snapshots: dict[str, Snapshot | None] = dict(found)
    now = clock()
    verdicts: dict[str, Candidate] = {}
    for model_id in order:
        snapshot = snapshots.get(model_id)
        status = status_of(snapshot, models[model_id].thresholds, now)
        verdicts[model_id] = Candidate(model_id, status, snapshot.last_error if snapshot else None)
    calls: list[ProbeResult] = []
    ruled_out: set[str] = set()  # failed during this start: not tried again

    def remember(result: ProbeResult, record: bool = True) -> None:
        limits = models[result.model].thresholds
        snapshot = apply_probe(snapshots.get(result.model), result, limits)
        snapshots[result.model] = snapshot
        if record:
            calls.append(result)
        # Judged at the time of the evidence: a call that just answered is never "stale".
        status = status_of(snapshot, limits, snapshot.last_checked_at)
        verdicts[result.model] = Candidate(result.model, status, result.error)
        if not result.ok:
            ruled_out.add(result.model)

    async def probe_ahead() -> None:
        pending = to_probe(order, verdicts, ruled_out)
        if not pending:
            return
        anything_usable = pick(order, verdicts, ruled_out) is not None
        tasks: dict[asyncio.Task[tuple[ProbeResult, bool]], str] = {}
        for index, model_id in enumerate(pending):
            model = models[model_id]
            last_hope = not anything_usable and index == len(pending) - 1
            budget = None if last_hope else model.thresholds.ttft_budget_ms / 1000
            if shared is not None:
                call = shared.probe(adapters, model, budget)
            else:
                call = _owned(adapters.probe(model, first_token_s=budget))
            tasks[asyncio.ensure_future(call)] = model_id
        try:
            waiting = set(tasks)
            while waiting:
                done, waiting = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                for task in sorted(done, key=lambda t: order.index(tasks[t])):
                    result, owned = task.result()
                    remember(result, record=owned)
                if _decided(order, verdicts, ruled_out, {tasks[t] for t in waiting}):
                    break  # the rest are behind a healthy answer: not needed
        finally:
            for task in tasks:
                task.cancel()  # an abandoned probe is not evidence and is not recorded

    agent: ProbeResult | None = None
    chosen: str | None = None
    failed_at_start: set[str] = set()
    chosen_healthy = False
    while True:
        await probe_ahead()
        candidate = pick(order, verdicts, ruled_out)
        if candidate is None:
            break
        chosen_healthy = verdicts[candidate].status == "healthy"
        if not opening_call:
            chosen = candidate
            break
        model = models[candidate]
        # Cut at the budget only while another candidate could still serve; a model chosen
        # as slow is known to answer past its budget, so it keeps timeout_s.
        cut = chosen_healthy and could_still_serve(order, verdicts, ruled_out, candidate)
        budget = model.thresholds.ttft_budget_ms / 1000 if cut else None
        result = await adapters.open_session(model, request.config, first_token_s=budget)
        remember(result)
        if result.ok:
            chosen, agent = candidate, result
            break
        failed_at_start.add(candidate)

    choice = Choice(
        chosen,
        passed_over(order, verdicts, chosen, chosen_healthy),
        frozenset(failed_at_start),
    )
    reason = fallback_reason(request.primary, choice)
    event = None
    error = None
    if choice.chosen is None:
        error = "no model could be started: " + ", ".join(
            f"{c.model} {c.status}" + (f" ({c.error})" if c.error else "")
            for c in choice.passed_over
        )
    if reason is not None and record_event:
        event = FallbackEvent(
            uid=uuid.uuid4().hex,
            at=clock(),
            simulation_id=request.simulation_id,
            primary=request.primary,
            chosen=choice.chosen,
            reason=reason,
            fallback_source=source,
            candidates=choice.passed_over,
            error=error,
        )
    if calls or event is not None:
        limits = {m.id: m.thresholds for m in registry.models}
        _, lost = await state.run_session(
            lambda s: s.record(calls, limits, event, update=apply_probe)
        )
        degraded = degraded or lost
    return StartOutcome(
        request=request,
        chosen=choice.chosen,
        fallback_source=source if choice.chosen != request.primary else None,
        reason=reason,
        agent=agent,
        event=event,
        candidates=choice.passed_over,
        error=error,
        degraded=degraded,
    )


async def _owned(call: Coroutine[Any, Any, ProbeResult]) -> tuple[ProbeResult, bool]:
    return await call, True


def _decided(
    order: list[str], verdicts: dict[str, Candidate], ruled_out: set[str], running: set[str]
) -> bool:
    """Whether a healthy candidate is known with nothing still being probed ahead of it."""
    for model_id in order:
        if model_id in running:
            return False
        if model_id not in ruled_out and verdicts[model_id].status == "healthy":
            return True
    return False
