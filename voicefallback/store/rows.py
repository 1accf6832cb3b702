"""Rows <-> records: how calls, snapshots and events are written to and read from tables."""

from __future__ import annotations

import json
from typing import Any

from voicefallback.records import (
    Candidate,
    FallbackEvent,
    ProbeResult,
    Snapshot,
    iso,
    parse_iso,
)
from voicefallback.store.schema import CONTENT

SNAPSHOT_COLUMNS = CONTENT["snapshots"]  # in the order snapshot_params gives them


def call_params(result: ProbeResult) -> tuple[Any, ...]:
    return (
        result.model,
        iso(result.at),
        result.kind,
        int(result.ok),
        result.latency_ms,
        result.ttft_ms,
        result.error,
        result.message,
        result.http_status,
        result.retry_after_s,
        result.input_tokens,
        result.output_tokens,
        int(result.stub),
    )


def snapshot_params(snapshot: Snapshot) -> tuple[Any, ...]:
    return (
        snapshot.model,
        iso(snapshot.last_checked_at),
        int(snapshot.ok),
        snapshot.latency_ms,
        snapshot.ttft_ms,
        snapshot.last_error,
        snapshot.consecutive_failures,
        snapshot.consecutive_successes,
        int(snapshot.failing),
        int(snapshot.has_success),
        snapshot.success_latency_ms,
        snapshot.success_ttft_ms,
        int(snapshot.stub),
        iso(snapshot.status_since) if snapshot.status_since else None,
        snapshot.last_status,
    )


def event_params(event: FallbackEvent) -> tuple[Any, ...]:
    return (
        event.uid,
        iso(event.at),
        event.simulation_id,
        event.primary,
        event.chosen,
        event.reason,
        event.fallback_source,
        json.dumps([c.as_json() for c in event.candidates]),
        event.error,
    )


def snapshot_from_row(row: Any) -> Snapshot:
    return Snapshot(
        model=row["model"],
        last_checked_at=parse_iso(row["last_checked_at"]),
        ok=bool(row["ok"]),
        latency_ms=row["latency_ms"],
        ttft_ms=row["ttft_ms"],
        last_error=row["last_error"],
        consecutive_failures=row["consecutive_failures"],
        consecutive_successes=row["consecutive_successes"],
        failing=bool(row["failing"]),
        has_success=bool(row["has_success"]),
        success_latency_ms=row["success_latency_ms"],
        success_ttft_ms=row["success_ttft_ms"],
        stub=bool(row["stub"]),
        status_since=parse_iso(row["status_since"]) if row["status_since"] else None,
        last_status=row["last_status"],
    )


def call_from_row(row: Any) -> ProbeResult:
    return ProbeResult(
        model=row["model"],
        ok=bool(row["ok"]),
        at=parse_iso(row["at"]),
        latency_ms=row["latency_ms"],
        ttft_ms=row["ttft_ms"],
        error=row["error"],
        message=row["message"],
        http_status=row["http_status"],
        retry_after_s=row["retry_after_s"],
        input_tokens=row["input_tokens"],
        output_tokens=row["output_tokens"],
        stub=bool(row["stub"]),
        kind=row["kind"],
    )


def event_from_row(row: Any) -> FallbackEvent:
    candidates: list[Any] = json.loads(row["candidates"])
    return FallbackEvent(
        id=row["id"],
        uid=row["uid"],
        at=parse_iso(row["at"]),
        simulation_id=row["simulation_id"],
        primary=row["primary_model"],
        chosen=row["chosen"],
        reason=row["reason"],
        fallback_source=row["fallback_source"],
        candidates=[Candidate(c["model"], c["status"], c.get("error")) for c in candidates],
        error=row["error"],
    )
