"""Runs probes concurrently and hands the results to the store in one transaction."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from voicefallback.config import Model
from voicefallback.providers import Adapters
from voicefallback.records import ProbeResult, Snapshot
from voicefallback.store import Store

DEFAULT_CONCURRENCY = 16  # probes mostly wait on the network; 2 cores are enough for 16


def run_probes(
    models: Sequence[Model], adapters: Adapters, concurrency: int = DEFAULT_CONCURRENCY
) -> list[ProbeResult]:
    """Probe every model, at most `concurrency` at a time; results in the models' order."""
    adapters.prepare(list(models))  # build clients before any clock starts
    if len(models) <= 1 or concurrency <= 1:
        return [adapters.for_model(m).probe(m) for m in models]
    with ThreadPoolExecutor(max_workers=min(concurrency, len(models))) as pool:
        return list(pool.map(lambda m: adapters.for_model(m).probe(m), models))


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
