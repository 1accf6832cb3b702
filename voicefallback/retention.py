"""How long history is kept: probe rows past each model's history_days, events on request."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from voicefallback.config import Registry
from voicefallback.durations import MAX_DAYS
from voicefallback.environment import display_location
from voicefallback.errors import InputError, PartlyWritten, StateError, VoicefallbackError
from voicefallback.records import utcnow
from voicefallback.store import Store, open_store

# A probe run prunes at most this many rows, so a backlog (history_days just lowered, or
# months without a probe) is worked off over a few runs instead of delaying one of them.
AFTER_PROBE_MAX_ROWS = 10_000
# Cutoffs never go before this, so "keep for a million days" works instead of overflowing.
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class PruneReport:
    at: datetime
    probes_deleted: int
    events_deleted: int
    vacuumed: bool
    bytes_before: int
    bytes_after: int


def probe_cutoffs(registry: Registry, now: datetime) -> tuple[dict[str, datetime], datetime]:
    """Each registered model's cutoff, and the global one for models no longer registered."""
    per_model = {m.id: cutoff(now, m.thresholds.history_days) for m in registry.models}
    return per_model, cutoff(now, registry.defaults.history_days)


def cutoff(now: datetime, days: float) -> datetime:
    """`days` before `now`, or the epoch for spans longer than that."""
    if days >= (now - _EPOCH) / timedelta(days=1):
        return _EPOCH
    return now - timedelta(days=days)


def prune_after_probe(
    store: Store, registry: Registry, clock: Callable[[], datetime] = utcnow
) -> int:
    """What `probe` does after recording: a bounded prune, in its own short transactions.

    Housekeeping: when it fails (a file kept busy, a full disk) the probe is still recorded,
    so the failure must not become the probe's exit code ("nothing written"); the next run
    prunes, and a state that is really broken fails that run's recording anyway.
    """
    cutoffs, default = probe_cutoffs(registry, clock())
    try:
        return store.prune_probes(cutoffs, default, max_rows=AFTER_PROBE_MAX_ROWS)
    except StateError:
        return 0


def check_days(value: float | None, where: str) -> None:
    if value is not None and (not math.isfinite(value) or value <= 0):
        raise InputError(f"{where}: must be a positive number of days, got {value!r}")
    if value is not None and value > MAX_DAYS:  # like every other span: larger is a typo
        raise InputError(f"{where}: must be at most {MAX_DAYS} days (100 years), got {value!r}")


def prune(
    db: Path | str,
    registry: Registry,
    *,
    events_older_than_days: float | None = None,
    vacuum: bool = False,
    clock: Callable[[], datetime] = utcnow,
) -> PruneReport:
    """`voicefallback prune`: all probe history past history_days; events only if asked.

    A state that does not exist yet is left so: there is nothing to prune.
    """
    check_days(events_older_than_days, "--events-older-than")
    now = clock()
    timeout = registry.connect_timeout_s
    with open_store(db, write=False, connect_timeout_s=timeout) as reader:
        if reader.size_bytes() == 0:
            return PruneReport(now, 0, 0, False, 0, 0)
    with open_store(db, write=True, connect_timeout_s=timeout) as store:
        before = store.size_bytes()
        cutoffs, default = probe_cutoffs(registry, now)
        probes = store.prune_probes(cutoffs, default)
        events = 0
        try:
            if events_older_than_days is not None:
                events = store.prune_events(cutoff(now, events_older_than_days))
            if vacuum:
                store.vacuum()
        except VoicefallbackError as exc:
            if not (probes or events):
                raise  # nothing was written: its own code (2, or 75 when busy) holds
            where = display_location(db)
            raise PartlyWritten(
                f"{where}: deleted {probes} probe rows and {events} events, then stopped:"
                f" {str(exc).removeprefix(f'{where}: ')}"
            ) from None
        return PruneReport(now, probes, events, vacuum, before, store.size_bytes())
