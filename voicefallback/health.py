"""A model's status from its history: pure functions of data and an injected clock."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from voicefallback.config import Thresholds
from voicefallback.records import MISCONFIG_KINDS, Mode, ProbeResult, Snapshot, Status


def apply_probe(previous: Snapshot | None, result: ProbeResult, limits: Thresholds) -> Snapshot:
    """The snapshot after one more call: counters, hysteresis and the figures to judge on.

    Evidence of the other mode (a stub call after live ones, or the reverse) never counts:
    the call starts the snapshot afresh."""
    if previous is not None and previous.stub != result.stub:
        previous = None
    if result.ok:
        failures, successes = 0, (previous.consecutive_successes if previous else 0) + 1
    else:
        failures, successes = (previous.consecutive_failures if previous else 0) + 1, 0
    failing = previous.failing if previous else False
    if not result.ok and (failures >= limits.fail_after or result.error in MISCONFIG_KINDS):
        failing = True
    elif result.ok and (successes >= limits.recover_after or _misconfigured(previous)):
        # A fixed configuration is not flakiness: one success clears `misconfigured`.
        failing = False
    if result.ok:
        has_success, success_latency, success_ttft = True, result.latency_ms, result.ttft_ms
    elif previous:
        has_success = previous.has_success
        success_latency, success_ttft = previous.success_latency_ms, previous.success_ttft_ms
    else:
        has_success, success_latency, success_ttft = False, None, None
    snapshot = Snapshot(
        model=result.model,
        last_checked_at=result.at,
        ok=result.ok,
        latency_ms=result.latency_ms,
        ttft_ms=result.ttft_ms,
        last_error=None if result.ok else result.error,
        consecutive_failures=failures,
        consecutive_successes=successes,
        failing=failing,
        has_success=has_success,
        success_latency_ms=success_latency,
        success_ttft_ms=success_ttft,
        stub=result.stub,
    )
    status = judge(snapshot, limits)
    if previous is not None and previous.last_status == status and previous.status_since:
        since = previous.status_since
    else:
        since = result.at
    return replace(snapshot, last_status=status, status_since=since)


def _misconfigured(snapshot: Snapshot | None) -> bool:
    return snapshot is not None and not snapshot.ok and snapshot.last_error in MISCONFIG_KINDS


def judge(snapshot: Snapshot, limits: Thresholds) -> Status:
    """Status from the evidence alone, ignoring its age."""
    if not snapshot.ok and snapshot.last_error in MISCONFIG_KINDS:
        return "misconfigured"
    if snapshot.consecutive_failures >= limits.fail_after or snapshot.failing:
        return "unhealthy"
    if not snapshot.has_success:
        return "unhealthy"  # failed below fail_after, but never answered: not usable
    figure = verdict_figure(snapshot.success_ttft_ms, snapshot.success_latency_ms)
    if figure is not None and figure > limits.ttft_budget_ms:
        return "slow"
    return "healthy"


def verdict_figure(ttft_ms: int | None, latency_ms: int | None) -> int | None:
    """What a success is judged on: TTFT, or total time when no visible text came back
    (a stream that ended properly after a reasoning model spent its tokens thinking)."""
    return ttft_ms if ttft_ms is not None else latency_ms


def status_of(
    snapshot: Snapshot | None, limits: Thresholds, now: datetime, mode: Mode | None = None
) -> Status:
    """README "Health": unknown, stale, or the verdict of the latest evidence.

    In `mode`, a snapshot of the other mode (stub evidence in live mode, or the reverse) is no
    evidence: it reads as unknown."""
    if snapshot is None or not counts_in(snapshot, mode):
        return "unknown"
    if (now - snapshot.last_checked_at).total_seconds() > limits.stale_after_s:
        return "stale"
    return judge(snapshot, limits)


def counts_in(snapshot: Snapshot, mode: Mode | None) -> bool:
    """Whether `snapshot` is evidence in `mode` (None: in any mode)."""
    return mode is None or snapshot.stub == (mode == "stub")


def needs_probe(status: str) -> bool:
    """`start` probes these just in time before judging them."""
    return status in ("stale", "unknown")


def is_news(previous: str | None, current: str | None) -> bool:
    """Whether a change of recorded verdict is worth a line in cron mail (`probe --quiet`).

    A model seen for the first time and found healthy is not news; everything else is.
    """
    if previous == current:
        return False
    return not (previous is None and current == "healthy")
