"""Runs probes concurrently and hands the results to the store in one transaction."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from voicefallback.config import Model, Registry
from voicefallback.locking import DEFAULT_WAIT_S, probe_lock
from voicefallback.providers import Adapters
from voicefallback.records import ProbeResult, Snapshot
from voicefallback.retention import prune_after_probe
from voicefallback.store import Store

DEFAULT_CONCURRENCY = 16  # probes mostly wait on the network; 2 cores are enough for 16


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
        result = adapters.for_model(model).probe(model)
        if on_result is not None:
            on_result(result)
        return result

    if len(models) <= 1 or concurrency <= 1:
        return [probe(m) for m in models]
    with ThreadPoolExecutor(max_workers=min(concurrency, len(models))) as pool:
        return list(pool.map(probe, models))


def probe_and_record(
    models: Sequence[Model],
    db: Path,
    mode: str,
    concurrency: int = DEFAULT_CONCURRENCY,
) -> list[tuple[ProbeResult, Snapshot]]:
    """Probe, then write every result at once; the state file is opened before any call
    so a bad state file is reported before spending provider calls."""
    with Store.open(db, write=True) as store, Adapters(mode) as adapters:
        results = run_probes(models, adapters, concurrency)
        return store.record(results, {m.id: m.thresholds for m in models})


@dataclass(frozen=True)
class ProbedModel:
    """One model's probe in a `probe` run, with its recorded verdict before and after."""

    result: ProbeResult
    before: Snapshot | None
    after: Snapshot


def probe_run(
    models: Sequence[Model],
    db: Path,
    mode: str,
    concurrency: int = DEFAULT_CONCURRENCY,
    *,
    lock_wait_s: float = DEFAULT_WAIT_S,
    on_result: Callable[[ProbeResult], None] | None = None,
    retention: Registry | None = None,
) -> list[ProbedModel]:
    """What `probe` does: under the probe lock, probe every model and record the results.

    With `retention` (the whole registry), history past each model's history_days is then
    pruned, a bounded amount in short transactions of its own.

    The state file is opened (and checked) before the lock is taken, so a file that is not
    ours is refused without creating a lock file beside it.
    """
    with Store.open(db, write=True) as store, probe_lock(db, lock_wait_s):
        before = store.snapshots(m.id for m in models)
        with Adapters(mode) as adapters:
            results = run_probes(models, adapters, concurrency, on_result)
        recorded = store.record(results, {m.id: m.thresholds for m in models})
        if retention is not None:
            prune_after_probe(store, retention)
    return [ProbedModel(result, before.get(result.model), after) for result, after in recorded]
