"""The store interface every backend implements (`Store`), and what `start` needs of it.

Callers see `Store`. Both backends are `SQLStore`s (sql.py): the queries are written once;
rows.py maps table rows to records and back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, Protocol

from voicefallback.config import Thresholds
from voicefallback.records import (
    FallbackEvent,
    ProbeResult,
    Snapshot,
    StatusChange,
    TtftBucket,
)

# How a model's snapshot follows from its previous one and a new call (health.apply_probe).
# The caller hands it in, so storage does not depend on how health is decided.
SnapshotUpdate = Callable[[Snapshot | None, ProbeResult, Thresholds], Snapshot]


class SessionStore(Protocol):
    """What choosing a model for a session needs: snapshots to read, calls to record."""

    def snapshots(self, models: Iterable[str] | None = None) -> dict[str, Snapshot]: ...

    def record(
        self,
        results: Iterable[ProbeResult],
        limits: Mapping[str, Thresholds],
        event: FallbackEvent | None = None,
        *,
        update: SnapshotUpdate,
        once: str | None = None,
    ) -> list[tuple[ProbeResult, Snapshot]]:
        """Write calls (history rows + snapshots) and an optional event in one transaction.

        `once`: an id for this write, kept with it, so the same write kept aside and
        written in later (its commit went unanswered) is not written twice; nor is this one
        if that copy went in first.
        """
        ...


class Store(SessionStore, Protocol):
    """The state: calls, snapshots, fallback events and status changes.

    Opened by `voicefallback.store.open_store`. Reading a state that does not exist yet
    behaves as empty state and creates nothing.
    """

    def close(self) -> None: ...

    def __enter__(self) -> Store: ...

    def __exit__(self, *exc: object) -> None: ...

    # record() and snapshots(): as SessionStore's.

    # What the owner (owner.py) needs of a backend, from its event loop's thread:

    def answering(self, within_s: float) -> bool:
        """Whether the state answered within the last `within_s` (or is local: a file
        always answers, it can only be locked). Safe from any thread."""
        ...

    def break_off(self) -> None:
        """From another thread: make the call in progress fail at once, and any later one
        (the owner then opens the state again)."""
        ...

    def events(
        self,
        simulation_id: str | None = None,
        since: datetime | None = None,
        limit: int | None = None,
        before: int | None = None,
    ) -> list[FallbackEvent]:
        """Fallback events, newest first; with `before`, only those with a smaller id."""
        ...

    def count_events(self, simulation_id: str | None = None, since: datetime | None = None) -> int:
        """How many fallback events `events` would list without a limit."""
        ...

    def recent_calls(
        self, model: str, *, limit: int, since: datetime | None = None
    ) -> list[ProbeResult]:
        """A model's calls (probes and session openings), newest first."""
        ...

    def last_failure(self, model: str) -> ProbeResult | None:
        """The model's most recent failed call, however long ago."""
        ...

    def status_changes(
        self, model: str, *, limit: int, since: datetime | None = None
    ) -> list[StatusChange]:
        """Changes of the model's recorded verdict, newest first."""
        ...

    def event_counts(self) -> dict[str, int]:
        """Fallback events ever recorded, by reason (not lowered by pruning events)."""
        ...

    def call_counts(self, model: str, since: datetime) -> tuple[int, int]:
        """A model's calls at or after `since`, and how many of them succeeded."""
        ...

    def ttft_series(self, model: str, since: datetime, bucket_minutes: int) -> list[TtftBucket]:
        """A model's calls at or after `since` in slices of `bucket_minutes` (a divisor of
        60), oldest first; empty slices are left out."""
        ...

    def prune_probes(
        self,
        cutoffs: Mapping[str, datetime],
        default: datetime,
        *,
        max_rows: int | None = None,
    ) -> int:
        """Delete calls older than their model's cutoff, oldest first; return how many."""
        ...

    def prune_events(self, cutoff: datetime) -> int:
        """Delete fallback events older than `cutoff`, in short transactions; return how many."""
        ...

    def vacuum(self) -> None:
        """Give the space of deleted rows back."""
        ...

    def size_bytes(self) -> int:
        """The space the state takes now."""
        ...

    def probe_lock(self, wait_s: float) -> AbstractContextManager[None]:
        """Hold the probe lock (one `probe` at a time on this state), waiting up to `wait_s`."""
        ...

    def counts(self) -> dict[str, int]:
        """Rows in each table of the state's content (schema.CONTENT)."""
        ...

    def consistent_read(self) -> AbstractContextManager[None]:
        """Reads inside see the state as of one moment, whatever is written meanwhile."""
        ...

    def export_rows(self, table: str, batch: int) -> Iterator[list[tuple[Any, ...]]]:
        """A table's rows, CONTENT[table] columns in order, `batch` at a time, by key."""
        ...

    def import_rows(
        self, tables: Mapping[str, Iterable[list[tuple[Any, ...]]]], expected: Mapping[str, int]
    ) -> None:
        """Insert rows, ids kept, into this (empty) state in one transaction, committed only
        if each table then holds exactly `expected` rows."""
        ...
