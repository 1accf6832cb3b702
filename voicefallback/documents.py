"""The --json documents: exactly one JSON object, shared by the CLI and the HTTP API."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voicefallback.config import Model, Registry
from voicefallback.environment import api_key, display_location
from voicefallback.records import FallbackEvent, ProbeResult, StatusChange, iso

if TYPE_CHECKING:
    from voicefallback.evidence import SessionReport
    from voicefallback.probing import ProbedModel
    from voicefallback.reports import EventPage, HealthReport, ModelHealth, ModelHistory
    from voicefallback.retention import PruneReport
    from voicefallback.sessions import StartOutcome
    from voicefallback.store.copy import CopyReport


def json_text(document: dict[str, Any]) -> str:
    """The one rendering of a document: stdout for the CLI, the body for the HTTP API.

    allow_nan=False: strict JSON or nothing (inputs refuse non-finite numbers up front)."""
    return json.dumps(document, ensure_ascii=False, allow_nan=False) + "\n"


def print_json(document: dict[str, Any]) -> None:
    sys.stdout.write(json_text(document))
    sys.stdout.flush()


def _time(moment: datetime | None) -> str | None:
    return iso(moment) if moment is not None else None


def _ms_between(earlier: datetime, later: datetime) -> int:
    return max(0, round((later - earlier).total_seconds() * 1000))


def probe_json(
    probed_at: datetime, mode: str, results: Sequence[tuple[Model, ProbedModel, str]]
) -> dict[str, Any]:
    return {
        "probedAt": iso(probed_at),
        "mode": mode,
        "results": [
            {
                "model": model.id,
                "provider": model.provider.name,
                "ok": status == "healthy",
                "status": status,
                "latencyMs": probed.result.latency_ms,
                "ttftMs": probed.result.ttft_ms,
                "error": probed.result.error,
                "stub": probed.result.stub,
            }
            for model, probed, status in results
        ],
    }


def health_json(report: HealthReport) -> dict[str, Any]:
    return {
        "models": [health_row(row, report.at) for row in report.models],
        "window": {
            "probes": report.window.calls,
            "spanMs": round(report.window.span_s * 1000),
            "since": iso(report.window.since(report.at)),
        },
        "generatedAt": iso(report.at),
    }


def health_row(row: ModelHealth, now: datetime) -> dict[str, Any]:
    model, snapshot, recent, failure = row.model, row.snapshot, row.recent, row.last_failure
    return {
        "model": model.id,
        "provider": model.provider.name,
        "ok": row.status == "healthy",
        "status": row.status,
        "latencyMs": snapshot.latency_ms if snapshot else None,
        "ttftMs": snapshot.ttft_ms if snapshot else None,
        "lastCheckedAt": _time(snapshot.last_checked_at) if snapshot else None,
        "consecutiveFailures": snapshot.consecutive_failures if snapshot else 0,
        "lastError": snapshot.last_error if snapshot else None,
        "stub": snapshot.stub if snapshot else None,
        # What the verdict rests on (README "`health`"), beside the snapshot's fields.
        "statusSince": _time(row.status_since),
        "recent": {
            "probes": recent.calls,
            "successes": recent.successes,
            "successRate": recent.success_rate,
            "ttftP50Ms": recent.ttft_p50_ms,
            "ttftP95Ms": recent.ttft_p95_ms,
        },
        "lastFailure": None
        if failure is None
        else {
            "at": iso(failure.at),
            "ageMs": _ms_between(failure.at, now),
            "error": failure.error,
            "message": failure.message,
            "httpStatus": failure.http_status,
        },
    }


def call_json(call: ProbeResult) -> dict[str, Any]:
    return {
        "at": iso(call.at),
        "kind": call.kind,
        "ok": call.ok,
        "latencyMs": call.latency_ms,
        "ttftMs": call.ttft_ms,
        "error": call.error,
        "message": call.message,
        "httpStatus": call.http_status,
        "stub": call.stub,
    }


def change_json(change: StatusChange) -> dict[str, Any]:
    return {
        "at": iso(change.at),
        "from": change.from_status,
        "to": change.to_status,
        "error": change.error,
    }


def history_json(history: ModelHistory) -> dict[str, Any]:
    document = health_row(history.health, history.at)
    document["generatedAt"] = iso(history.at)
    document["limit"] = history.limit
    document["since"] = _time(history.since)
    document["probes"] = [call_json(c) for c in history.calls]
    document["statusChanges"] = [change_json(c) for c in history.changes]
    return document


def models_json(registry: Registry, mode: str, rows: Sequence[tuple[Model, str]]) -> dict[str, Any]:
    return {
        "config": str(registry.path),
        "mode": mode,
        "models": [
            {
                "model": model.id,
                "provider": model.provider.name,
                "providerType": model.provider.type,
                "name": model.name,
                "baseUrl": model.provider.base_url,
                "apiKeyEnv": model.provider.api_key_env,
                "apiKeySet": api_key(model.provider.api_key_env) is not None,
                "ok": status == "healthy",
                "status": status,
                "ttftBudgetMs": model.thresholds.ttft_budget_ms,
                "timeoutMs": round(model.thresholds.timeout_s * 1000),
                "staleAfterMs": round(model.thresholds.stale_after_s * 1000),
                "failAfter": model.thresholds.fail_after,
                "recoverAfter": model.thresholds.recover_after,
            }
            for model, status in rows
        ],
    }


def init_json(config: Path, db: Path | str) -> dict[str, Any]:
    return {"config": str(config), "created": True, "db": display_location(db)}


def start_json(outcome: StartOutcome) -> dict[str, Any]:
    request = outcome.request
    document: dict[str, Any] = {
        "simulationId": request.simulation_id,
        "primary": request.primary,
        "chosen": outcome.chosen,
        "usedFallback": outcome.used_fallback,
        "fallbackSource": outcome.fallback_source,
        "reason": outcome.reason,
    }
    if outcome.degraded:  # only then
        document["degraded"] = True
    # Every candidate the choice judged but the chosen one, those behind it included.
    document["candidates"] = [c.as_json() for c in outcome.candidates]
    if outcome.chosen is None:
        document["error"] = outcome.error
        document["agent"] = None
        return document
    agent = outcome.agent
    assert agent is not None
    document["agent"] = {
        "ok": agent.ok,
        "stub": agent.stub,
        "model": agent.model,
        "latencyMs": agent.latency_ms,
        "ttftMs": agent.ttft_ms,
        "text": agent.text,
        "received_config": dict(request.config),
    }
    return document


def event_json(event: FallbackEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "at": iso(event.at),
        "simulationId": event.simulation_id,
        "primary": event.primary,
        "chosen": event.chosen,
        "reason": event.reason,
        "fallbackSource": event.fallback_source,
        "candidates": [c.as_json() for c in event.candidates],
    }


EVENTS_PAGE = 100  # `fallbacks` and GET /fallbacks: events per page without a limit


def events_json(page: EventPage) -> dict[str, Any]:
    return {
        "events": [event_json(e) for e in page.events],
        "total": page.total,  # matching the filters, on all pages
        "limit": page.limit,
        "nextBefore": page.next_before,  # `before` for the next, older page; null: no more
    }


def prune_json(report: PruneReport) -> dict[str, Any]:
    return {
        "prunedAt": iso(report.at),
        "probesDeleted": report.probes_deleted,
        "eventsDeleted": report.events_deleted,
        "vacuumed": report.vacuumed,
        "bytesBefore": report.bytes_before,
        "bytesAfter": report.bytes_after,
    }


def copy_json(report: CopyReport) -> dict[str, Any]:
    names = {"status_changes": "statusChanges", "event_counts": "eventCounts"}
    return {
        "from": report.source,
        "to": report.target,
        "copied": {names.get(table, table): rows for table, rows in report.copied.items()},
    }


def report_json(report: SessionReport) -> dict[str, Any]:
    """`report --json`: the reported turn and the model's status after it."""
    result = report.result
    return {
        "model": result.model,
        "status": report.status,
        "ok": report.status == "healthy",
        "kind": result.kind,
        "ttftMs": result.ttft_ms,
        "latencyMs": result.latency_ms,
        "error": result.error,
    }
