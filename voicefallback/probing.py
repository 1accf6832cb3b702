"""The one probe round: under the probe lock, every model at once, results recorded together.

`probe` (once, `--every`), the library routers, `serve --probe-every` and `POST /health/probe`
all run `probe_round`; only how they reach the store differs (`StoreCall`: inline for a
command, the router's own thread for a long-lived process).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from voicefallback.config import DEFAULT_CONCURRENCY, Model, Registry
from voicefallback.health import apply_probe, counts_in, status_of
from voicefallback.locking import DEFAULT_WAIT_S
from voicefallback.providers import Adapters
from voicefallback.records import Mode, ProbeResult, Snapshot, Status, utcnow
from voicefallback.retention import prune_after_probe
from voicefallback.store import Store
from voicefallback.store.outage import open_writer

T = TypeVar("T")
# How a round reaches the store: runs a piece of store work and gives back its value.
StoreCall = Callable[[Callable[[Store], Any]], Awaitable[Any]]


@dataclass(frozen=True)
class ProbedModel:
    """One model's probe in a round, with its recorded verdict before and after."""

    result: ProbeResult
    before: Snapshot | None
    after: Snapshot
    # Judged at the time of its evidence, not after the whole round: a probe that has just
    # succeeded is never reported stale (README "Health").
    status: Status


async def run_probes(
    models: Sequence[Model],
    adapters: Adapters,
    on_result: Callable[[ProbeResult], None] | None = None,
    finished: list[ProbeResult] | None = None,
) -> list[ProbeResult]:
    """Probe every model at once (the pool bounds how many calls are in flight); results in
    the models' order. Each result is also appended to `finished` as it ends, so a caller that
    is interrupted still holds what completed."""
    await adapters.prepare(models)  # build clients before any clock starts
    done = finished if finished is not None else []

    async def probe(model: Model) -> ProbeResult:
        result = await adapters.probe(model)
        done.append(result)
        if on_result is not None:
            on_result(result)
        return result

    return list(await asyncio.gather(*(probe(m) for m in models)))


async def probe_round(
    registry: Registry,
    models: Sequence[Model],
    adapters: Adapters,
    store_call: StoreCall,
    *,
    lock_wait_s: float = DEFAULT_WAIT_S,
    on_result: Callable[[ProbeResult], None] | None = None,
    prune: bool = True,
    if_older_s: float | None = None,
) -> list[ProbedModel]:
    """Under the probe lock, probe `models` and record the results, then (with `prune`) drop
    history past each model's history_days, a bounded amount in short transactions.

    With `if_older_s`, only the models whose latest evidence (a probe, a session opening or
    a report, from any process or host) is older than that are probed. It is read under the
    probe lock, so processes queued on the lock (many hosts on one PostgreSQL state) find
    what the one before them probed and do not probe it again.

    Interrupted (Ctrl-C, SIGTERM, a cancelled task), the calls in flight are abandoned at once
    and what finished is still recorded.
    """
    lock: AbstractContextManager[None] = await store_call(
        lambda store: _entered(store.probe_lock(lock_wait_s))
    )
    try:
        before: dict[str, Snapshot] = await store_call(
            lambda store: store.snapshots(m.id for m in models)
        )
        if if_older_s is not None:
            cutoff = utcnow() - timedelta(seconds=if_older_s)
            # Evidence of the other mode is none (a stub probe says nothing of a live model).
            models = [
                m
                for m in models
                if m.id not in before
                or before[m.id].last_checked_at <= cutoff
                or not counts_in(before[m.id], adapters.mode)
            ]
            if not models:
                return []
        limits = {m.id: m.thresholds for m in models}
        finished: list[ProbeResult] = []
        try:
            results = await run_probes(models, adapters, on_result, finished)
        except BaseException:
            if finished:
                kept = _in_order(finished, models)
                await asyncio.shield(
                    store_call(lambda store: store.record(kept, limits, update=apply_probe))
                )
            raise

        def record(store: Store) -> list[tuple[ProbeResult, Snapshot]]:
            recorded = store.record(results, limits, update=apply_probe)
            if prune:
                prune_after_probe(store, registry)
            return recorded

        recorded: list[tuple[ProbeResult, Snapshot]] = await store_call(record)
    finally:
        await store_call(lambda _: lock.__exit__(None, None, None))
    return [
        ProbedModel(
            result,
            before.get(result.model),
            after,
            status_of(after, limits[result.model], after.last_checked_at),
        )
        for result, after in recorded
    ]


async def probe_run(
    registry: Registry,
    models: Sequence[Model],
    db: Path | str,
    mode: Mode,
    concurrency: int = DEFAULT_CONCURRENCY,
    *,
    lock_wait_s: float = DEFAULT_WAIT_S,
    on_result: Callable[[ProbeResult], None] | None = None,
    prune: bool = True,
    if_older_s: float | None = None,
) -> list[ProbedModel]:
    """What `probe` does: one `probe_round` on the state at `db`, opened for this run.

    The state is opened (and checked) before the lock is taken, so a file that is not ours is
    refused without creating a lock file beside it.
    """
    with open_writer(db, update=apply_probe, connect_timeout_s=registry.connect_timeout_s) as store:

        async def inline(work: Callable[[Store], T]) -> T:
            return work(store)

        async with Adapters(mode, registry.key_env_names(), concurrency) as adapters:
            return await probe_round(
                registry,
                models,
                adapters,
                inline,
                lock_wait_s=lock_wait_s,
                on_result=on_result,
                prune=prune,
                if_older_s=if_older_s,
            )


def _entered(lock: AbstractContextManager[None]) -> AbstractContextManager[None]:
    lock.__enter__()
    return lock


def _in_order(results: list[ProbeResult], models: Sequence[Model]) -> list[ProbeResult]:
    rank = {m.id: i for i, m in enumerate(models)}
    return sorted(results, key=lambda r: rank[r.model])
