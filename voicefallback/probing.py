"""Probe rounds: every model at once on one event loop, results to the store in one transaction."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from voicefallback.config import DEFAULT_CONCURRENCY, Model, Registry
from voicefallback.health import apply_probe
from voicefallback.locking import DEFAULT_WAIT_S
from voicefallback.providers import Adapters
from voicefallback.records import Mode, ProbeResult, Snapshot, utcnow
from voicefallback.retention import prune_after_probe
from voicefallback.store import open_store


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


@dataclass(frozen=True)
class ProbedModel:
    """One model's probe in a `probe` run, with its recorded verdict before and after."""

    result: ProbeResult
    before: Snapshot | None
    after: Snapshot


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
    """What `probe` does: under the probe lock, probe `models` and record the results, then
    (with `prune`) drop history past each model's history_days, a bounded amount in short
    transactions of their own.

    With `if_older_s`, only the models whose latest evidence (a probe, a session opening or
    a report, from any process or host) is older than that are probed. It is read under the
    probe lock, so processes queued on the lock (many hosts on one PostgreSQL state) find
    what the one before them probed and do not probe it again.

    The state file is opened (and checked) before the lock is taken, so a file that is not
    ours is refused without creating a lock file beside it. Interrupted (Ctrl-C, SIGTERM),
    the calls in flight are abandoned at once and what finished is still recorded.
    """
    with (
        open_store(db, write=True, connect_timeout_s=registry.connect_timeout_s) as store,
        store.probe_lock(lock_wait_s),
    ):
        before = store.snapshots(m.id for m in models)
        if if_older_s is not None:
            cutoff = utcnow() - timedelta(seconds=if_older_s)
            models = [
                m for m in models if m.id not in before or before[m.id].last_checked_at <= cutoff
            ]
            if not models:
                return []
        limits = {m.id: m.thresholds for m in models}
        finished: list[ProbeResult] = []
        try:
            async with Adapters(mode, registry.key_env_names(), concurrency) as adapters:
                results = await run_probes(models, adapters, on_result, finished)
        except BaseException:
            if finished:
                store.record(_in_order(finished, models), limits, update=apply_probe)
            raise
        recorded = store.record(results, limits, update=apply_probe)
        if prune:
            prune_after_probe(store, registry)
    return [ProbedModel(result, before.get(result.model), after) for result, after in recorded]


def _in_order(results: list[ProbeResult], models: Sequence[Model]) -> list[ProbeResult]:
    rank = {m.id: i for i, m in enumerate(models)}
    return sorted(results, key=lambda r: rank[r.model])
