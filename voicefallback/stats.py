"""What a verdict rests on: success rate and TTFT percentiles over recent calls (pure)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from voicefallback.config import Thresholds
from voicefallback.health import verdict_figure
from voicefallback.records import ProbeResult, Snapshot

DEFAULT_WINDOW_CALLS = 20
DEFAULT_WINDOW_SPAN_S = 24 * 3600.0


@dataclass(frozen=True)
class Window:
    """The recent evidence: at most `calls` calls, none older than `span_s` seconds."""

    calls: int = DEFAULT_WINDOW_CALLS
    span_s: float = DEFAULT_WINDOW_SPAN_S

    def since(self, now: datetime) -> datetime:
        return now - timedelta(seconds=self.span_s)


@dataclass(frozen=True)
class RecentStats:
    calls: int
    successes: int
    success_rate: float | None  # None: no calls in the window
    ttft_p50_ms: int | None  # None: no successful call in the window
    ttft_p95_ms: int | None


def percentile(values: Sequence[int], fraction: float) -> int | None:
    """Nearest-rank percentile: a value that was actually measured, never an interpolation."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def recent_stats(calls: Sequence[ProbeResult]) -> RecentStats:
    successes = [c for c in calls if c.ok]
    figures = [
        f for f in (verdict_figure(c.ttft_ms, c.latency_ms) for c in successes) if f is not None
    ]
    return RecentStats(
        calls=len(calls),
        successes=len(successes),
        success_rate=round(len(successes) / len(calls), 4) if calls else None,
        ttft_p50_ms=percentile(figures, 0.50),
        ttft_p95_ms=percentile(figures, 0.95),
    )


def status_since(snapshot: Snapshot | None, status: str, limits: Thresholds) -> datetime | None:
    """Since when the model has had `status`; None when that cannot be told honestly."""
    if snapshot is None:
        return None
    if status == "stale":
        return snapshot.last_checked_at + timedelta(seconds=limits.stale_after_s)
    if status == snapshot.last_status:
        return snapshot.status_since
    return None  # the registry's limits changed since the verdict was recorded
