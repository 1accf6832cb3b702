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

# Probes wait on the network, not the CPU: live calls overlap on one event loop per provider
# and a worker thread only waits for its call. 64 probes a typical registry in one round
# (50 models at 200 ms: ~0.4 s, median TTFT +5-12%); 16 would take four rounds (see README
# "Performance"). Keep in step with probe's --concurrency default in cli.py.
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
        with Adapters(mode, _key_env_names(models, retention)) as adapters:
            results = run_probes(models, adapters, concurrency, on_result)
        recorded = store.record(results, {m.id: m.thresholds for m in models})
        if retention is not None:
            prune_after_probe(store, retention)
    return [ProbedModel(result, before.get(result.model), after) for result, after in recorded]


def _key_env_names(models: Sequence[Model], registry: Registry | None) -> list[str | None]:
    if registry is not None:
        return list(registry.key_env_names())
    return [m.provider.api_key_env for m in models]
