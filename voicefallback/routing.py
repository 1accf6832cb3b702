"""`start`'s decision: judge the candidates, race them by the attempt rules, record why.

The decision that prevents dead air must not cause it (README "Choosing a model"). Candidates
are tried in `attempt_order` as a `Race` (race.py): healthy ones need no probe; stale or
unknown ones are called just in time, and with an opening call to make, that call is the probe.
The first content token within the rules decides; every call made is recorded once.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Protocol

from voicefallback.attempts import Attempt, Runner
from voicefallback.config import Model, Registry, Thresholds
from voicefallback.environment import is_database_url
from voicefallback.health import apply_probe, counts_in, needs_probe, status_of
from voicefallback.providers import Adapters
from voicefallback.race import Contender, Race
from voicefallback.records import (
    Candidate,
    FallbackEvent,
    Mode,
    Opening,
    ProbeResult,
    Snapshot,
    utcnow,
)
from voicefallback.selection import (
    Choice,
    attempt_order,
    candidate_order,
    fallback_reason,
    passed_over,
)
from voicefallback.sessions import CLI_NAMES, StartOutcome, StartRequest, validate_request
from voicefallback.store.owner import StateOwner


class SessionState(Protocol):
    """What a start needs of the state. Neither method raises for a fault of the state: the
    start goes on, and says it was degraded (one line, or None when all went well)."""

    async def snapshots(self, model_ids: Sequence[str]) -> tuple[dict[str, Snapshot], str | None]:
        """The latest snapshot of each model, as far as they can be read now."""
        ...

    async def record(self, calls: Sequence[ProbeResult], event: FallbackEvent | None) -> str | None:
        """Write the calls and the event once; what was not recorded, and where it went."""
        ...

    def record_soon(self, calls: Sequence[ProbeResult]) -> None:
        """Record calls that ended after the decision, in the background."""
        ...


class SharedProbes:
    """Just-in-time probes in flight in one process (a router, `serve`), so concurrent starts
    that find the same stale model wait for one probe instead of each sending their own.

    Each start's race sees the probe through an attempt of its own. The probe itself is
    recorded once, by `record`, when it ends, whichever start launched it and whether or not
    any start still waits for it. It is cut only when every start that waited for it gave up
    on it before its first content token.
    """

    def __init__(self, record: Callable[[ProbeResult], None]) -> None:
        self._record = record
        self._inflight: dict[str, _SharedProbe] = {}

    def runner(self, adapters: Adapters, model: Model) -> Runner:
        if adapters.mode == "stub":
            # Stub calls cost nothing and answer at once: each race makes its own, so that a
            # late stub answer is timed against the race's other candidates as a live one is.
            return adapters.runner(model)

        async def follow(view: Attempt) -> ProbeResult:
            view.recorded_elsewhere = True
            view.preparing()  # its clock is the probe's, which may still be building a client
            probe = self._inflight.get(model.id) or self._launch(adapters, model)
            probe.followers += 1
            try:
                await probe.started.wait()
                view.follow_clock(probe.attempt)
                async with view.deadline():
                    await probe.heard.wait()
                    if probe.attempt.first_content is not None:
                        view.sent = probe.attempt.sent
                        view.content()
                        # Decided on its first content: the rest is the probe's own business.
                        return view.success()
                    result = await asyncio.shield(probe.task)
                    return result
            except TimeoutError:
                return view.timed_out()
            finally:
                probe.followers -= 1
                if probe.followers == 0 and probe.attempt.first_content is None:
                    probe.attempt.lose()  # no one waits for it any more

        return follow

    async def drain(self, grace_s: float) -> None:
        """Let the probes in flight end and be recorded, for up to `grace_s`; then cut the
        rest (not evidence: they were stopped, not slow)."""
        probes = list(self._inflight.values())
        if not probes:
            return
        await asyncio.wait([p.task for p in probes], timeout=grace_s)
        for probe in probes:
            probe.attempt.abandon()
        await asyncio.wait([p.task for p in probes])

    def _launch(self, adapters: Adapters, model: Model) -> _SharedProbe:
        attempt = adapters.attempt(model, "probe")
        probe = _SharedProbe(attempt)
        attempt.on_first_content = probe.heard.set
        attempt.on_start = probe.started.set
        self._inflight[model.id] = probe

        async def run() -> ProbeResult:
            try:
                result = await adapters.probe(model, attempt)
            finally:
                probe.started.set()
                probe.heard.set()
                if self._inflight.get(model.id) is probe:
                    del self._inflight[model.id]
            if attempt.evidence:
                self._record(result)  # at once: before anything its followers do next
            return result

        probe.task = asyncio.ensure_future(run())
        return probe


class _SharedProbe:
    def __init__(self, attempt: Attempt) -> None:
        self.attempt = attempt
        self.started = asyncio.Event()  # its client is built and its clock runs, or it ended
        self.heard = asyncio.Event()  # its first content arrived, or it ended
        self.followers = 0
        self.task: asyncio.Future[ProbeResult]


class CommandState:
    """A one-shot command's state for `route_session`: its state owner, inline."""

    def __init__(self, owner: StateOwner, limits: dict[str, Thresholds]) -> None:
        self._owner = owner
        self._limits = limits

    async def snapshots(self, model_ids: Sequence[str]) -> tuple[dict[str, Snapshot], str | None]:
        return await self._owner.snapshots(model_ids)

    async def record(self, calls: Sequence[ProbeResult], event: FallbackEvent | None) -> str | None:
        return await self._owner.record(calls, self._limits, event)

    def record_soon(self, calls: Sequence[ProbeResult]) -> None:
        raise AssertionError("a one-shot start waits for every call it made")


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
    # thread the start stops waiting for (see StateOwner). A SQLite file is called inline.
    owner = StateOwner(
        db,
        update=apply_probe,
        threaded=is_database_url(db),
        connect_timeout_s=registry.connect_timeout_s,
        alone=True,
    )
    state = CommandState(owner, {m.id: m.thresholds for m in registry.models})
    try:
        async with Adapters(mode, registry.key_env_names()) as adapters:
            return await route_session(registry, state, adapters, request, clock=clock)
    finally:
        await owner.aclose()


async def route_session(
    registry: Registry,
    state: SessionState,
    adapters: Adapters,
    request: StartRequest,
    *,
    opening_call: bool = True,
    record_event: bool = True,
    shared: SharedProbes | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> StartOutcome:
    """README "Choosing a model"; shared by `start`, the library routers and `serve`.

    Without `opening_call` the choice is made on the first content token of a just-in-time
    probe (or on the evidence alone) and the caller makes the call itself (a voice worker with
    its own client); a probe still running then is recorded when it ends. Calls made here are
    always recorded; the fallback event only with `record_event`.
    """
    mode = adapters.mode
    order, source = candidate_order(
        request.primary, request.fallbacks, [m.id for m in registry.models]
    )
    models = {model_id: registry.require(model_id, "start") for model_id in order}
    snapshots, degraded = await state.snapshots(order)
    verdicts = _judged(order, models, snapshots, clock(), mode)
    opening = request.opening() if opening_call else None
    contenders = _contenders(order, models, verdicts, adapters, opening, shared)

    calls: list[ProbeResult] = []
    decided = False

    def on_result(result: ProbeResult) -> None:
        if decided:
            state.record_soon([result])  # a probe that ended after the choice was made
        else:
            calls.append(result)

    race = Race(
        contenders,
        kind="start" if opening_call else "probe",
        on_result=on_result,
        stub=mode == "stub",
    )
    winner: Attempt | None = None
    agent: ProbeResult | None = None
    try:
        while True:
            winner = await race.run()
            if winner is None or opening is None:
                break
            result = await winner.result
            if result is not None and result.ok:
                agent = result
                break
        if opening is not None:
            await race.settle()  # the other attempts were cut: they end at once
    except BaseException:
        # Cut short (cancelled, interrupted): nothing more is decided, but every call that
        # ended is evidence, recorded as in any start.
        with contextlib.suppress(BaseException):
            await asyncio.shield(race.aclose())
            if calls:
                await asyncio.shield(state.record(list(calls), None))
        raise

    chosen = winner.model.id if winner is not None else None
    # An opening call that failed (or was cut) on a model the evidence called usable.
    failed_at_start = {
        a.model.id
        for a in race.attempts
        if opening is not None
        and a.model.id != chosen
        and verdicts[a.model.id].status in ("healthy", "slow")
        and a.evidence
    }
    _learn(race.attempts, models, snapshots, verdicts)
    chosen_healthy = winner is not None and _healthy(winner, verdicts, opening is None)
    choice = Choice(
        chosen, passed_over(order, verdicts, chosen, chosen_healthy), frozenset(failed_at_start)
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
    decided = True
    if calls or event is not None:
        rank = {model_id: index for index, model_id in enumerate(order)}
        calls.sort(key=lambda call: rank[call.model])  # in the order they were tried
        lost = await state.record(calls, event)
        degraded = lost or degraded  # what was not recorded, and where it went, first
    return StartOutcome(
        request=request,
        chosen=choice.chosen,
        fallback_source=source if choice.chosen != request.primary else None,
        reason=reason,
        agent=agent,
        event=event,
        candidates=[verdicts[m] for m in order if m != choice.chosen],
        error=error,
        degraded=degraded,
    )


def _judged(
    order: Sequence[str],
    models: dict[str, Model],
    snapshots: dict[str, Snapshot],
    now: datetime,
    mode: Mode,
) -> dict[str, Candidate]:
    """Each candidate's status and last error on the evidence read (of this mode only)."""
    verdicts = {}
    for model_id in order:
        snapshot = snapshots.get(model_id)
        status = status_of(snapshot, models[model_id].thresholds, now, mode)
        evidence = snapshot is not None and counts_in(snapshot, mode)
        error = snapshot.last_error if snapshot is not None and evidence else None
        verdicts[model_id] = Candidate(model_id, status, error)
    return verdicts


def _contenders(
    order: Sequence[str],
    models: dict[str, Model],
    verdicts: dict[str, Candidate],
    adapters: Adapters,
    opening: Opening | None,
    shared: SharedProbes | None,
) -> list[Contender]:
    """The candidates as the race tries them: each one's opening call (which is its probe),
    or, without an opening call, a probe of those with no fresh evidence."""
    contenders = []
    for model_id in attempt_order(order, verdicts):
        model = models[model_id]
        status = verdicts[model_id].status
        run: Runner | None = None
        if opening is not None:
            run = adapters.runner(model, opening)
        elif needs_probe(status):
            run = shared.runner(adapters, model) if shared else adapters.runner(model)
        # Stale candidates (known once, their evidence expired) are re-checked together: one
        # after another would cost a budget each. Unknown ones are tried in order, so a start
        # with nothing to go on calls no further down the order than it needs.
        contenders.append(Contender(model, run, eager=status == "stale"))
    return contenders


def _learn(
    attempts: Sequence[Attempt],
    models: dict[str, Model],
    snapshots: dict[str, Snapshot],
    verdicts: dict[str, Candidate],
) -> None:
    """What this choice's calls say of their models, judged at the time of the evidence (a
    call that has just answered is never "stale")."""
    for attempt in attempts:
        ended = attempt.result.result() if attempt.result.done() else None
        if ended is None or not attempt.evidence:
            continue
        limits = models[ended.model].thresholds
        snapshot = apply_probe(snapshots.get(ended.model), ended, limits)
        snapshots[ended.model] = snapshot
        status = status_of(snapshot, limits, snapshot.last_checked_at)
        verdicts[ended.model] = Candidate(ended.model, status, ended.error)


def _healthy(winner: Attempt, verdicts: dict[str, Candidate], at_first_token: bool) -> bool:
    """Whether the chosen model counts as healthy (else it was chosen slow). A choice made at
    a probe's first token is judged on that token's time."""
    chosen = winner.model.id
    if winner.result.done() and winner.result.result() is None:
        return verdicts[chosen].status == "healthy"  # no call: on its evidence alone
    if at_first_token:
        heard = winner.ms(winner.first_content) or 0
        healthy = heard <= winner.model.thresholds.ttft_budget_ms
        verdicts[chosen] = Candidate(chosen, "healthy" if healthy else "slow")
        return healthy
    return verdicts[chosen].status == "healthy"
