"""What people see: rich tables and panels on stdout, one-line errors and notices on stderr."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from voicefallback.durations import format_age, format_span
from voicefallback.records import ProbeResult, parse_iso
from voicefallback.redaction import redact

if TYPE_CHECKING:
    from rich.console import Console

    from voicefallback.probing import ProbedModel

STATUS_STYLE = {
    "healthy": "green",
    "slow": "yellow",
    "unhealthy": "red",
    "misconfigured": "magenta",
    "stale": "dim",
    "unknown": "dim",
}


def print_error(message: str) -> None:
    """One line on stderr; newlines in the message are flattened so it stays one line, and
    anything shaped like a key is redacted: the last stop before a terminal or a CI log."""
    flat = redact(" ".join(message.split()))
    sys.stderr.write(f"voicefallback: error: {flat}\n")
    sys.stderr.flush()


def _console() -> Console:
    from rich.console import Console

    # No emoji: a model id like "ollama:tiger:" must never print as a tiger.
    console = Console(highlight=False, emoji=False)
    if not console.is_terminal and not os.environ.get("COLUMNS"):
        console.width = 250  # piped, or in cron mail: nothing to fit, so never cut an id
    return console


def _e(value: object) -> str:
    """Data shown inside rich markup: model ids, simulation ids and provider messages may
    hold square brackets, which must print as themselves."""
    from rich.markup import escape

    return escape(str(value))


def _status(status: str) -> str:
    return f"[{STATUS_STYLE.get(status, '')}]{status}[/]"


def _ms(value: int | None) -> str:
    return "-" if value is None else f"{value} ms"


def print_probe_table(document: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"probe ({document['mode']}) at {document['probedAt']}")
    for column in ("model", "status", "TTFT", "latency", "error"):
        table.add_column(
            column,
            justify="right" if column in ("TTFT", "latency") else "left",
            overflow="fold" if column == "model" else "ellipsis",
        )
    for row in document["results"]:
        table.add_row(
            _e(row["model"]),
            _status(row["status"]),
            _ms(row["ttftMs"]),
            _ms(row["latencyMs"]),
            row["error"] or "",
        )
    _console().print(table)


def _age(moment: str | None, now: str) -> str:
    """How long before `now` an ISO time was, for people."""
    if moment is None:
        return "-"
    return format_age((parse_iso(now) - parse_iso(moment)).total_seconds())


def _percentiles(recent: dict[str, Any]) -> str:
    if recent["ttftP50Ms"] is None:
        return "-"
    return f"{recent['ttftP50Ms']}/{recent['ttftP95Ms']} ms"


def _success(recent: dict[str, Any]) -> str:
    if not recent["probes"]:
        return "-"
    return f"{round(recent['successRate'] * 100)}% of {recent['probes']}"


def _last_failure(failure: dict[str, Any] | None) -> str:
    if failure is None:
        return ""
    return f"{failure['error']} {format_age(failure['ageMs'] / 1000)} ago"


def print_health_table(document: dict[str, Any]) -> None:
    from rich.table import Table

    window = document["window"]
    now = document["generatedAt"]
    table = Table(
        title=f"health (recent: last {window['probes']} probes within "
        f"{format_span(window['spanMs'] / 1000)})"
    )
    # The model and its status never wrap; the evidence columns give way on a narrow terminal.
    table.add_column("model", overflow="fold")
    table.add_column("status", no_wrap=True)
    for column in ("for", "TTFT", "p50/p95", "success", "checked", "fails"):
        table.add_column(column, justify="right")
    table.add_column("last error")
    for row in document["models"]:
        checked = row["lastCheckedAt"]
        table.add_row(
            _e(row["model"]),
            _status(row["status"]),
            _age(row["statusSince"], now),
            _ms(row["ttftMs"]),
            _percentiles(row["recent"]),
            _success(row["recent"]),
            f"{_age(checked, now)} ago" if checked else "never",
            str(row["consecutiveFailures"]),
            _last_failure(row["lastFailure"]),
        )
    _console().print(table)


def print_history(document: dict[str, Any]) -> None:
    from rich.table import Table

    now = document["generatedAt"]
    console = _console()
    since = f" for {_age(document['statusSince'], now)}" if document["statusSince"] else ""
    console.print(f"[bold]{_e(document['model'])}[/]: {_status(document['status'])}{since}")
    changes = Table(title="status changes (newest first)")
    for column in ("at", "from", "to", "error"):
        changes.add_column(column)
    for change in document["statusChanges"]:
        changes.add_row(
            change["at"],
            _status(change["from"]) if change["from"] else "-",
            _status(change["to"]),
            change["error"] or "",
        )
    console.print(changes)
    probes = Table(title="probes (newest first)")
    for column in ("at", "kind", "result", "TTFT", "latency", "message"):
        probes.add_column(column, justify="right" if column in ("TTFT", "latency") else "left")
    for call in document["probes"]:
        probes.add_row(
            call["at"],
            call["kind"],
            "[green]ok[/]" if call["ok"] else f"[red]{call['error']}[/]",
            _ms(call["ttftMs"]),
            _ms(call["latencyMs"]),
            _e(call["message"] or ""),
        )
    console.print(probes)


def print_models_table(document: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"models in {_e(document['config'])} ({document['mode']} mode)")
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("model", overflow="fold")
    table.add_column("status", no_wrap=True)
    table.add_column("TTFT budget", justify="right", no_wrap=True)
    table.add_column("key", no_wrap=True)
    for number, row in enumerate(document["models"], start=1):
        key = _e(row["apiKeyEnv"] or "-")
        if row["apiKeyEnv"] and not row["apiKeySet"]:
            key += " [yellow]unset[/]"
        table.add_row(
            str(number),
            _e(row["model"]),
            _status(row["status"]),
            _ms(row["ttftBudgetMs"]),
            key,
        )
    _console().print(table)


def print_init(document: dict[str, Any]) -> None:
    config = document["config"]
    lines = [
        f"wrote a starter registry to {config}",
        "next, in stub mode (no keys, no network):",
        f"  voicefallback probe --config {config}",
        f"  voicefallback start --config {config} --simulation-id demo --primary openai:gpt-4o",
        'then set mode = "live" in it and export the API key variables it names.',
    ]
    sys.stdout.write("".join(line + "\n" for line in lines))  # paths must not wrap


def status_change_lines(results: Iterable[ProbedModel]) -> list[str]:
    """`probe --quiet`: one line per model whose recorded verdict changed in a way worth mail."""
    from voicefallback.health import is_news

    lines = []
    for probed in results:
        before = probed.before.last_status if probed.before else None
        after = probed.after.last_status
        if is_news(before, after):
            error = f" ({probed.result.error})" if probed.result.error else ""
            lines.append(f"{probed.result.model}: {before or 'new'} -> {after}{error}")
    return lines


def print_notice(message: str) -> None:
    """One line on stderr that is not an error (status changes, a loop stopping)."""
    sys.stderr.write(f"voicefallback: {message}\n")
    sys.stderr.flush()


@contextmanager
def probe_progress(total: int) -> Iterator[Callable[[ProbeResult], None]]:
    """A transient progress bar on the terminal; yields the callback each finished probe calls."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(
        TextColumn("probing {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=_console(),
        transient=True,
    )
    with progress:
        task = progress.add_task(f"{total} models", total=total)
        yield lambda result: progress.advance(task)


def print_start_panel(document: dict[str, Any]) -> None:
    from rich.panel import Panel

    agent = document["agent"]
    if document["chosen"] is None:
        lines = [
            f"[red]no model could be started[/] for {_e(document['simulationId'])}",
            f"reason: {document['reason']}",
        ]
        lines += [
            f"  {_e(c['model'])}: {_status(c['status'])}"
            + (f" ({c['error']})" if c["error"] else "")
            for c in document["candidates"]
        ]
        _console().print(Panel("\n".join(lines), title="start", border_style="red", expand=False))
        return
    lines = [
        f"session [bold]{_e(document['simulationId'])}[/] started on"
        f" [bold]{_e(document['chosen'])}[/]"
    ]
    if document["usedFallback"]:
        lines.append(
            f"fallback from {_e(document['primary'])}: {document['reason']}"
            f" ({document['fallbackSource']} list)"
        )
    lines.append(f"TTFT {_ms(agent['ttftMs'])}, latency {_ms(agent['latencyMs'])}")
    if agent.get("text"):
        lines.append(f"opening line: {_e(agent['text'])}")
    style = "yellow" if document["usedFallback"] else "green"
    _console().print(Panel("\n".join(lines), title="start", border_style=style, expand=False))


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
        table.add_column(column, overflow="fold")
    for event in document["events"]:
        passed = ", ".join(
            f"{_e(c['model'])} {c['status']}" + (f" ({c['error']})" if c["error"] else "")
            for c in event["candidates"]
        )
        table.add_row(
            str(event["id"]),
            event["at"],
            _e(event["simulationId"]),
            _e(event["primary"]),
            _e(event["chosen"]) if event["chosen"] else "[red]none[/]",
            event["reason"],
            event["fallbackSource"] or "",
            passed,
        )
    _console().print(table)


def print_prune(document: dict[str, Any]) -> None:
    def size(count: int) -> str:
        return f"{count / 1_048_576:.1f} MiB" if count >= 1_048_576 else f"{count / 1024:.0f} KiB"

    line = (
        f"pruned {document['probesDeleted']} probe rows and {document['eventsDeleted']} events;"
        f" state file {size(document['bytesBefore'])} -> {size(document['bytesAfter'])}"
    )
    if document["vacuumed"]:
        line += " (vacuumed)"
    _console().print(line, highlight=False)
