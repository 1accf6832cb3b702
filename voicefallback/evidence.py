"""Health from real sessions: a voice worker's report of one turn, kept as evidence."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from voicefallback.config import Registry
from voicefallback.errors import InputError
from voicefallback.health import apply_probe, status_of
from voicefallback.records import ERROR_KINDS, ErrorKind, Mode, ProbeResult, Status, error_kind
from voicefallback.sessions import InputNames, check_simulation_id
from voicefallback.store import Store

MAX_REPORTED_MS = 24 * 3600 * 1000  # a day: anything longer is a unit mistake, not a turn


@dataclass(frozen=True)
class SessionReport:
    """A recorded report and the model's status right after it."""

    result: ProbeResult
    status: Status


def session_result(
    registry: Registry,
    model_id: str,
    *,
    ttft_ms: int | None,
    latency_ms: int | None,
    error: str | None,
    simulation_id: str | None,
    now: datetime,
    names: InputNames,
    mode: Mode,
) -> ProbeResult:
    """The report as one call of kind "session"; InputError (exit 2) names what is wrong.

    It is evidence in the mode it was made in (a worker in stub mode reports stub sessions):
    evidence of one mode never counts in the other."""
    registry.require(model_id, names.model)
    if ttft_ms is None and error is None:
        raise InputError(
            f"give {names.ttft_ms} (a turn that answered) or {names.error} (one that failed)"
        )
    if ttft_ms is not None and error is not None:
        raise InputError(
            f"{names.ttft_ms} and {names.error}: give one, {names.ttft_ms} for a turn that"
            f" answered or {names.error} for one that failed"
        )
    if error is not None and latency_ms is not None:
        raise InputError(f"{names.latency_ms}: goes with {names.ttft_ms}, not with {names.error}")
    for where, value in ((names.ttft_ms, ttft_ms), (names.latency_ms, latency_ms)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or not value >= 0
        ):
            raise InputError(f"{where}: must be a whole number of milliseconds, got {value!r}")
        if value is not None and value > MAX_REPORTED_MS:
            raise InputError(f"{where}: at most {MAX_REPORTED_MS} ms (a day), got {value}")
    if ttft_ms is not None and latency_ms is not None and latency_ms < ttft_ms:
        raise InputError(f"{names.latency_ms}: {latency_ms} is less than {names.ttft_ms} {ttft_ms}")
    kind = _error_kind(error, names.error) if error is not None else None
    if simulation_id is not None:
        check_simulation_id(simulation_id, names.simulation_id)
    said = f"session {simulation_id}" if simulation_id else "session"
    return ProbeResult(
        model=model_id,
        ok=kind is None,
        at=now,
        latency_ms=latency_ms if kind is None else None,
        ttft_ms=ttft_ms,
        error=kind,
        message=f"{said}: reported {kind}" if kind else said,
        kind="session",
        stub=mode == "stub",
    )


def record_session(store: Store, registry: Registry, result: ProbeResult) -> SessionReport:
    """One history row of kind "session"; the snapshot follows by the same rules as a probe."""
    limits = registry.require(result.model, "model").thresholds
    [(_, snapshot)] = store.record([result], {result.model: limits}, update=apply_probe)
    # Judged at the time of the evidence it reports, never "stale" the moment it is written.
    return SessionReport(result, status_of(snapshot, limits, snapshot.last_checked_at))


def _error_kind(value: str, where: str) -> ErrorKind:
    kind = error_kind(value)
    if kind is not None:
        return kind
    raise InputError(f"{where}: unknown kind {value!r}; one of: {', '.join(ERROR_KINDS)}")
