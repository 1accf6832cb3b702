"""Health as people and scripts read it: each verdict with the evidence it rests on, and one
model's history. Read-only: a missing state file reads as empty and is not created."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from voicefallback.config import DEFAULT_CONNECT_TIMEOUT_S, Model
from voicefallback.health import counts_in, status_of
from voicefallback.records import (
    FallbackEvent,
    Mode,
    ProbeResult,
    Snapshot,
    StatusChange,
    TtftBucket,
)
from voicefallback.stats import RecentStats, Window, recent_stats, status_since
from voicefallback.store import Store, open_store


@dataclass(frozen=True)
class ModelHealth:
    model: Model
    snapshot: Snapshot | None
    status: str
    status_since: datetime | None
    recent: RecentStats
    last_failure: ProbeResult | None


@dataclass(frozen=True)
class HealthReport:
    at: datetime
    window: Window
    models: list[ModelHealth]
    event_counts: dict[str, int] | None = None  # only when asked: metrics need them


@dataclass(frozen=True)
class ModelHistory:
    at: datetime
    health: ModelHealth
    calls: list[ProbeResult]  # newest first
    changes: list[StatusChange]  # newest first
    limit: int
    since: datetime | None


def _model_health(
    store: Store,
    model: Model,
    snapshot: Snapshot | None,
    window: Window,
    now: datetime,
    mode: Mode | None,
) -> ModelHealth:
    if snapshot is not None and not counts_in(snapshot, mode):
        snapshot = None  # evidence of the other mode: none in this one (reads as unknown)
    status = status_of(snapshot, model.thresholds, now)
    calls = store.recent_calls(model.id, limit=window.calls, since=window.since(now))
    return ModelHealth(
        model=model,
        snapshot=snapshot,
        status=status,
        status_since=status_since(snapshot, status, model.thresholds),
        recent=recent_stats(calls),
        last_failure=store.last_failure(model.id) if snapshot is not None else None,
    )


def health_report(
    models: Sequence[Model],
    db: Path | str,
    window: Window,
    now: datetime,
    *,
    with_event_counts: bool = False,
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
    mode: Mode | None = None,
) -> HealthReport:
    """Each model's verdict and what it rests on. In `mode`, evidence of the other mode
    counts for nothing (a stub snapshot reads as unknown in live mode)."""
    with _read(db, connect_timeout_s) as store:
        return read_health(
            store, models, window, now, with_event_counts=with_event_counts, mode=mode
        )


def read_health(
    store: Store,
    models: Sequence[Model],
    window: Window,
    now: datetime,
    *,
    with_event_counts: bool = False,
    mode: Mode | None = None,
) -> HealthReport:
    """`health_report` from an open state (serve reads through the state's owner)."""
    snapshots = store.snapshots(m.id for m in models)
    rows = [_model_health(store, m, snapshots.get(m.id), window, now, mode) for m in models]
    counts = store.event_counts() if with_event_counts else None
    return HealthReport(at=now, window=window, models=rows, event_counts=counts)


def model_history(
    model: Model,
    db: Path | str,
    *,
    limit: int,
    since: datetime | None,
    window: Window,
    now: datetime,
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
    mode: Mode | None = None,
) -> ModelHistory:
    with _read(db, connect_timeout_s) as store:
        return read_history(
            store, model, limit=limit, since=since, window=window, now=now, mode=mode
        )


def read_history(
    store: Store,
    model: Model,
    *,
    limit: int,
    since: datetime | None,
    window: Window,
    now: datetime,
    mode: Mode | None = None,
) -> ModelHistory:
    snapshot = store.snapshots([model.id]).get(model.id)
    return ModelHistory(
        at=now,
        health=_model_health(store, model, snapshot, window, now, mode),
        calls=store.recent_calls(model.id, limit=limit, since=since),
        changes=store.status_changes(model.id, limit=limit, since=since),
        limit=limit,
        since=since,
    )


def model_statuses(
    models: Sequence[Model],
    db: Path | str,
    now: datetime,
    *,
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
    mode: Mode | None = None,
) -> list[tuple[Model, str]]:
    """Each registered model with its status, for `models`; snapshots only."""
    with _read(db, connect_timeout_s) as store:
        snapshots = store.snapshots(m.id for m in models)
    return [(m, status_of(snapshots.get(m.id), m.thresholds, now, mode)) for m in models]


def _read(db: Path | str, connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S) -> Store:
    """The state opened for reading. Reads never write: what degraded starts kept in the
    spool is written in by the next writer, so a reader answers within its own limits
    whatever the spool holds."""
    return open_store(db, write=False, connect_timeout_s=connect_timeout_s)


@dataclass(frozen=True)
class EventPage:
    events: list[FallbackEvent]  # newest first, at most `limit`
    total: int  # events matching the filters, on all pages
    limit: int
    next_before: int | None  # `before` for the next, older page; None: this is the last


def fallback_events(
    db: Path | str,
    simulation_id: str | None,
    since: datetime | None,
    limit: int,
    before: int | None = None,
) -> EventPage:
    """`fallbacks`: one page of events, newest first, straight from the state (it reads no
    registry, so a database gets the default connect_timeout_s, unless its URL or
    PGCONNECT_TIMEOUT says otherwise). One row past the page tells whether another follows."""
    with _read(db) as store:
        return read_event_page(store, simulation_id, since, limit, before)


def read_event_page(
    store: Store,
    simulation_id: str | None,
    since: datetime | None,
    limit: int,
    before: int | None = None,
) -> EventPage:
    events = store.events(simulation_id, since, limit + 1, before=before)
    total = store.count_events(simulation_id, since)
    page = events[:limit]
    return EventPage(page, total, limit, page[-1].id if len(events) > limit else None)


# The status page: TTFT percentiles over the last hour (at most this many calls), success
# rates over OpenRouter's public windows, a 24 h first-token sparkline in 15-minute slices.
BOARD_WINDOW = Window(calls=1000, span_s=3600.0)
SUCCESS_SPANS_S = (300.0, 3600.0, 86400.0)
SERIES_SPAN_S = 86400.0
SERIES_BUCKET_MINUTES = 15


@dataclass(frozen=True)
class SuccessRate:
    span_s: float
    calls: int
    successes: int


@dataclass(frozen=True)
class BoardRow:
    health: ModelHealth  # recent figures over BOARD_WINDOW
    success: list[SuccessRate]  # one per SUCCESS_SPANS_S
    series: list[TtftBucket]  # oldest first, empty slices left out


@dataclass(frozen=True)
class StatusBoard:
    at: datetime
    models: list[BoardRow]
    events: list[FallbackEvent]  # newest first


def status_board(
    models: Sequence[Model],
    db: Path | str,
    now: datetime,
    *,
    events: int = 20,
    mode: Mode | None = None,
) -> StatusBoard:
    """Everything the status page shows, read in one go."""
    with _read(db) as store:
        return read_board(store, models, now, events=events, mode=mode)


def read_board(
    store: Store,
    models: Sequence[Model],
    now: datetime,
    *,
    events: int = 20,
    mode: Mode | None = None,
) -> StatusBoard:
    snapshots = store.snapshots(m.id for m in models)
    rows = []
    for model in models:
        health = _model_health(store, model, snapshots.get(model.id), BOARD_WINDOW, now, mode)
        success = [
            SuccessRate(span, *store.call_counts(model.id, now - timedelta(seconds=span)))
            for span in SUCCESS_SPANS_S
        ]
        series = store.ttft_series(
            model.id, now - timedelta(seconds=SERIES_SPAN_S), SERIES_BUCKET_MINUTES
        )
        rows.append(BoardRow(health, success, series))
    latest = store.events(None, None, events)
    return StatusBoard(at=now, models=rows, events=latest)
