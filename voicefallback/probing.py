"""Runs probes concurrently and hands the results to the store in one transaction."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from voicefallback.config import Model, Registry
from voicefallback.health import apply_probe
from voicefallback.locking import DEFAULT_WAIT_S
from voicefallback.providers import Adapters
from voicefallback.records import ProbeResult, Snapshot, utcnow
from voicefallback.retention import prune_after_probe
from voicefallback.store import open_store

# Probes wait on the network, not the CPU: live calls overlap on one event loop per provider
# and a worker thread only waits for its call. 64 probes a typical registry in one round
# (50 models at 200 ms: ~0.4 s, median TTFT +5-12%); 16 would take four rounds (see README
# "Performance").
DEFAULT_CONCURRENCY = 64


def run_probes(
    models: Sequence[Model],
    adapters: Adapters,
    concurrency: int = DEFAULT_CONCURRENCY,
    on_result: Callable[[ProbeResult], None] | None = None,
) -> list[ProbeResult]:
    """Probe every model, at most `concurrency` at a time; results in the models' order.

    `on_result` (a progress display) is called from worker threads as each probe ends.
    """
    adapters.prepare(list(models))  # build clients before any clock starts

    def probe(model: Model) -> ProbeResult:
        result = adapters.probe(model)
        if on_result is not None:
            on_result(result)
        return result

    if len(models) <= 1 or concurrency <= 1:
        return [probe(m) for m in models]
    with ThreadPoolExecutor(max_workers=min(concurrency, len(models))) as pool:
        return list(pool.map(probe, models))


@dataclass(frozen=True)
class ProbedModel:
    """One model's probe in a `probe` run, with its recorded verdict before and after."""

    result: ProbeResult
    before: Snapshot | None
    after: Snapshot


def probe_run(
    registry: Registry,
    models: Sequence[Model],
    db: Path | str,
    mode: str,
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
    ours is refused without creating a lock file beside it.
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
        with Adapters(mode, registry.key_env_names()) as adapters:
            results = run_probes(models, adapters, concurrency, on_result)
        recorded = store.record(results, {m.id: m.thresholds for m in models}, update=apply_probe)
        if prune:
            prune_after_probe(store, registry)
    return [ProbedModel(result, before.get(result.model), after) for result, after in recorded]
