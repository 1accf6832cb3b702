"""What people and machines see: rich tables, or exactly one JSON object on stdout."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from voicefallback.config import Model
from voicefallback.records import FallbackEvent, ProbeResult, Snapshot, iso

if TYPE_CHECKING:
    from rich.console import Console

    from voicefallback.sessions import StartOutcome

STATUS_STYLE = {
    "healthy": "green",
    "slow": "yellow",
    "unhealthy": "red",
    "misconfigured": "magenta",
    "stale": "dim",
    "unknown": "dim",
}


def print_json(document: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(document, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def print_error(message: str) -> None:
    """One line on stderr; newlines in the message are flattened so it stays one line."""
    flat = " ".join(message.split())
    sys.stderr.write(f"voicefallback: error: {flat}\n")
    sys.stderr.flush()


def _time(moment: datetime | None) -> str | None:
    return iso(moment) if moment is not None else None


# -- JSON documents ---------------------------------------------------------------------


def probe_json(
    probed_at: datetime, mode: str, results: Sequence[tuple[Model, ProbeResult, str]]
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
                "latencyMs": result.latency_ms,
                "ttftMs": result.ttft_ms,
                "error": result.error,
                "stub": result.stub,
            }
            for model, result, status in results
        ],
    }


def health_json(rows: Sequence[tuple[Model, Snapshot | None, str]]) -> dict[str, Any]:
    return {"models": [health_row(model, snapshot, status) for model, snapshot, status in rows]}


def health_row(model: Model, snapshot: Snapshot | None, status: str) -> dict[str, Any]:
    return {
        "model": model.id,
        "provider": model.provider.name,
        "ok": status == "healthy",
        "status": status,
        "latencyMs": snapshot.latency_ms if snapshot else None,
        "ttftMs": snapshot.ttft_ms if snapshot else None,
        "lastCheckedAt": _time(snapshot.last_checked_at) if snapshot else None,
        "consecutiveFailures": snapshot.consecutive_failures if snapshot else 0,
        "lastError": snapshot.last_error if snapshot else None,
        "stub": snapshot.stub if snapshot else None,
    }


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
    if outcome.chosen is None:
        document["error"] = outcome.error
        document["candidates"] = [c.as_json() for c in outcome.candidates]
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


def events_json(events: Iterable[FallbackEvent]) -> dict[str, Any]:
    return {"events": [event_json(e) for e in events]}


# -- tables for people --------------------------------------------------------------------


def _console() -> Console:
    from rich.console import Console

    return Console(highlight=False)


def _status(status: str) -> str:
    return f"[{STATUS_STYLE.get(status, '')}]{status}[/]"


def _ms(value: int | None) -> str:
    return "-" if value is None else f"{value} ms"


def print_probe_table(document: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"probe ({document['mode']}) at {document['probedAt']}")
    for column in ("model", "status", "TTFT", "latency", "error"):
        table.add_column(column, justify="right" if column in ("TTFT", "latency") else "left")
    for row in document["results"]:
        table.add_row(
            row["model"],
            _status(row["status"]),
            _ms(row["ttftMs"]),
            _ms(row["latencyMs"]),
            row["error"] or "",
        )
    _console().print(table)


def print_health_table(document: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title="health")
    for column in ("model", "status", "TTFT", "latency", "last checked", "failures", "last error"):
        table.add_column(
            column, justify="right" if column in ("TTFT", "latency", "failures") else "left"
        )
    for row in document["models"]:
        table.add_row(
            row["model"],
            _status(row["status"]),
            _ms(row["ttftMs"]),
            _ms(row["latencyMs"]),
            row["lastCheckedAt"] or "never",
            str(row["consecutiveFailures"]),
            row["lastError"] or "",
        )
    _console().print(table)


def print_start_panel(document: dict[str, Any]) -> None:
    from rich.panel import Panel

    agent = document["agent"]
    if document["chosen"] is None:
        lines = [
            f"[red]no model could be started[/] for {document['simulationId']}",
            f"reason: {document['reason']}",
        ]
        lines += [
            f"  {c['model']}: {_status(c['status'])}" + (f" ({c['error']})" if c["error"] else "")
            for c in document["candidates"]
        ]
        _console().print(Panel("\n".join(lines), title="start", border_style="red"))
        return
    lines = [
        f"session [bold]{document['simulationId']}[/] started on [bold]{document['chosen']}[/]"
    ]
    if document["usedFallback"]:
        lines.append(
            f"fallback from {document['primary']}: {document['reason']}"
            f" ({document['fallbackSource']} list)"
        )
    lines.append(f"TTFT {_ms(agent['ttftMs'])}, latency {_ms(agent['latencyMs'])}")
    if agent.get("text"):
        lines.append(f"opening line: {agent['text']}")
    style = "yellow" if document["usedFallback"] else "green"
    _console().print(Panel("\n".join(lines), title="start", border_style=style))


def print_events_table(document: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title="fallback events (newest first)")
    for column in (
        "id",
        "at",
        "simulation",
        "primary",
        "chosen",
        "reason",
        "source",
        "passed over",
    ):
        table.add_column(column)
    for event in document["events"]:
        passed = ", ".join(
            f"{c['model']} {c['status']}" + (f" ({c['error']})" if c["error"] else "")
            for c in event["candidates"]
        )
        table.add_row(
            str(event["id"]),
            event["at"],
            event["simulationId"],
            event["primary"],
            event["chosen"] or "[red]none[/]",
            event["reason"],
            event["fallbackSource"] or "",
            passed,
        )
    _console().print(table)
