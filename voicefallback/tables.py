"""What people see: rich tables and panels on stdout, one-line errors and notices on stderr."""

from __future__ import annotations

import os
import sys
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from voicefallback.config import display_location, is_database_url
from voicefallback.durations import format_age, format_span
from voicefallback.records import ProbeResult, parse_iso
from voicefallback.redaction import redact

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from voicefallback.probing import ProbedModel

STATUS_STYLE = {
    "healthy": "green",
    "slow": "yellow",
    "unhealthy": "red",
    "misconfigured": "magenta",
    "stale": "dim",
    "unknown": "dim",
}


def visible(text: str) -> str:
    """Text a terminal shows as itself: control and format characters (escape sequences,
    bidi overrides such as U+202E, zero-width ones) are written as \\uXXXX instead."""
    return "".join(
        f"\\u{ord(ch):04x}" if ch not in "\n\t" and unicodedata.category(ch) in _HIDDEN else ch
        for ch in text
    )


_HIDDEN = ("Cc", "Cf", "Zl", "Zp", "Cs")


def print_error(message: str) -> None:
    """One line on stderr; newlines in the message are flattened so it stays one line, and
    anything shaped like a key is redacted: the last stop before a terminal or a CI log."""
    flat = visible(redact(" ".join(message.split())))
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

    return escape(visible(str(value)))


def _status(status: str) -> str:
    return f"[{STATUS_STYLE.get(status, '')}]{status}[/]"


def _ms(value: int | None) -> str:
    return "-" if value is None else f"{value} ms"


@dataclass
class _Column:
    """A column and its cells (rich markup). `drop` 0 is never dropped (ids, status); on a
    narrow terminal the highest `drop` goes first, so ids stay whole on one line."""

    header: str
    cells: list[str]
    drop: int = 0
    justify: Literal["left", "right"] = "left"

    @cached_property
    def width(self) -> int:
        from rich.cells import cell_len
        from rich.text import Text

        lines = [self.header]
        for cell in self.cells:
            lines += Text.from_markup(cell).plain.split("\n")
        return max(cell_len(line) for line in lines)


def _fitting(columns: list[_Column], width: int) -> tuple[list[_Column], bool]:
    """The columns that fit `width`, dropping secondary ones first; and whether they fit."""
    shown = list(columns)

    def needed() -> int:  # each cell has one space either side, and one border between
        return sum(c.width + 3 for c in shown) + 1

    while needed() > width:
        droppable = [c for c in shown if c.drop]
        if not droppable:
            return shown, False
        shown.remove(max(droppable, key=lambda c: c.drop))
    return shown, True


def _table(title: str, columns: list[_Column], console: Console) -> Table:
    from rich.table import Table

    shown, fits = _fitting(columns, console.width)
    table = Table(title=title)
    for column in shown:
        # When even the ids alone are wider than the terminal, they wrap rather than lose text.
        overflow: Literal["fold", "ellipsis"] = "ellipsis" if fits else "fold"
        table.add_column(column.header, justify=column.justify, no_wrap=fits, overflow=overflow)
    for cells in zip(*(c.cells for c in shown), strict=True):
        table.add_row(*cells)
    return table


def print_files(registry: Path | None, state: Path | str) -> None:
    """Which registry and state a command used, as full paths (stdout, after its table), so
    `init` writing one file and `probe` reading another is no puzzle."""
    console = _console()
    if registry is not None:
        console.print(f"[dim]registry: {_e(os.path.abspath(registry))}[/]", overflow="fold")
    where = display_location(state if is_database_url(state) else os.path.abspath(state))
    console.print(f"[dim]state:    {_e(where)}[/]", overflow="fold")


def print_report(document: dict[str, Any]) -> None:
    """One line: the model, its status after the report, and what was reported."""
    said = (
        f"error {document['error']}"
        if document["error"]
        else f"first token {_ms(document['ttftMs'])}"
        + (f", done {_ms(document['latencyMs'])}" if document["latencyMs"] is not None else "")
    )
    _console().print(
        f"{_e(visible(document['model']))}: {_status(document['status'])} (session report: {said})",
        overflow="fold",
    )


def print_probe_table(document: dict[str, Any]) -> None:
    rows = document["results"]
    columns = [
        _Column("model", [_e(r["model"]) for r in rows]),
        _Column("status", [_status(r["status"]) for r in rows]),
        _Column("TTFT", [_ms(r["ttftMs"]) for r in rows], drop=2, justify="right"),
        _Column("latency", [_ms(r["latencyMs"]) for r in rows], drop=3, justify="right"),
        _Column("error", [r["error"] or "" for r in rows], drop=1),
    ]
    console = _console()
    console.print(_table(f"probe ({document['mode']}) at {document['probedAt']}", columns, console))


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
    window = document["window"]
    now = document["generatedAt"]
    rows = document["models"]

    def checked(row: dict[str, Any]) -> str:
        return f"{_age(row['lastCheckedAt'], now)} ago" if row["lastCheckedAt"] else "never"

    # The model and its status always show, whole; the evidence gives way on a narrow terminal.
    columns = [
        _Column("model", [_e(r["model"]) for r in rows]),
        _Column("status", [_status(r["status"]) for r in rows]),
        _Column("for", [_age(r["statusSince"], now) for r in rows], drop=8, justify="right"),
        _Column("TTFT", [_ms(r["ttftMs"]) for r in rows], drop=1, justify="right"),
        _Column("p50/p95", [_percentiles(r["recent"]) for r in rows], drop=6, justify="right"),
        _Column("success", [_success(r["recent"]) for r in rows], drop=5, justify="right"),
        _Column("checked", [checked(r) for r in rows], drop=3, justify="right"),
        _Column("fails", [str(r["consecutiveFailures"]) for r in rows], drop=7, justify="right"),
        _Column("last error", [_last_failure(r["lastFailure"]) for r in rows], drop=2),
    ]
    title = (
        f"health (recent: last {window['probes']} probes within "
        f"{format_span(window['spanMs'] / 1000)})"
    )
    console = _console()
    console.print(_table(title, columns, console))


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
    rows = document["models"]

    def key(row: dict[str, Any]) -> str:
        text = _e(row["apiKeyEnv"] or "-")
        return text + " [yellow]unset[/]" if row["apiKeyEnv"] and not row["apiKeySet"] else text

    columns = [
        _Column("#", [str(n) for n in range(1, len(rows) + 1)], justify="right"),
        _Column("model", [_e(r["model"]) for r in rows]),
        _Column("status", [_status(r["status"]) for r in rows]),
        _Column("TTFT budget", [_ms(r["ttftBudgetMs"]) for r in rows], drop=2, justify="right"),
        _Column("key", [key(r) for r in rows], drop=1),
    ]
    console = _console()
    console.print(_table(f"models ({document['mode']} mode)", columns, console))


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


def print_copy(document: dict[str, Any]) -> None:
    copied = document["copied"]
    sys.stdout.write(
        f"copied {copied['probes']} probes, {copied['snapshots']} snapshots,"
        f" {copied['events']} fallback events and {copied['statusChanges']} status changes\n"
        f"  from {visible(document['from'])}\n  to   {visible(document['to'])}\n"
    )


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
    sys.stderr.write(f"voicefallback: {visible(message)}\n")
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


def print_start_panel(
    document: dict[str, Any], *, budget_ms: int | None = None, degraded: str | None = None
) -> None:
    """What `start` did. `budget_ms`: the chosen model's TTFT budget, to say when it answered
    slowly; `degraded`: what the state could not record, and where it went."""
    from rich.panel import Panel

    agent = document["agent"]
    warnings = [f"[yellow]degraded[/]: {_e(degraded)}"] if degraded else []
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
        lines += warnings
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
    slow = budget_ms is not None and (agent["ttftMs"] or 0) > budget_ms
    if slow:  # started anyway: nothing healthy was left, and a late answer beats none
        lines.append(f"{_status('slow')}: first token over its {budget_ms} ms budget")
    if agent.get("text"):
        lines.append(f"opening line: {_e(agent['text'])}")
    lines += warnings
    style = "yellow" if document["usedFallback"] or slow or degraded else "green"
    _console().print(Panel("\n".join(lines), title="start", border_style=style, expand=False))


def print_events_table(document: dict[str, Any]) -> None:
    events = document["events"]

    def passed(event: dict[str, Any]) -> str:
        return "\n".join(
            f"{_e(c['model'])} {c['status']}" + (f" ({c['error']})" if c["error"] else "")
            for c in event["candidates"]
        )

    def chosen(event: dict[str, Any]) -> str:
        return _e(event["chosen"]) if event["chosen"] else "[red]none[/]"

    columns = [
        _Column("id", [str(e["id"]) for e in events], justify="right"),
        _Column("at", [e["at"] for e in events], drop=4),
        _Column("simulation", [_e(e["simulationId"]) for e in events]),
        _Column("primary", [_e(e["primary"]) for e in events]),
        _Column("chosen", [chosen(e) for e in events]),
        _Column("reason", [e["reason"] for e in events]),
        _Column("source", [e["fallbackSource"] or "" for e in events], drop=3),
        _Column("passed over", [passed(e) for e in events], drop=5),
    ]
    console = _console()
    if _fitting(columns, console.width)[1]:
        console.print(_table("fallback events (newest first)", columns, console))
        return
    # Too narrow for the ids side by side: one block per event, one whole id per line.
    console.print("fallback events (newest first)")
    for event in events:
        source = f" ({event['fallbackSource']} list)" if event["fallbackSource"] else ""
        lines = [
            f"[bold]#{event['id']}[/] {event['at']} {event['reason']}{source}",
            f"  session  {_e(event['simulationId'])}",
            f"  primary  {_e(event['primary'])}",
            f"  chosen   {chosen(event)}",
        ]
        lines += [f"  passed   {line}" for line in passed(event).split("\n") if line]
        console.print("\n".join(lines), overflow="fold")


def print_events_page(document: dict[str, Any]) -> None:
    """Where this page sits among all the events, and how to see the older ones."""
    shown, total = len(document["events"]), document["total"]
    line = f"{shown:,} of {total:,} events"
    if document["nextBefore"] is not None:
        line += f"; older ones: --before {document['nextBefore']}"
    _console().print(line, highlight=False)


def print_prune(document: dict[str, Any], *, database: bool = False) -> None:
    """One line: what was deleted, and the state's size before and after. `database`: the
    state is PostgreSQL, whose tables keep freed space for new rows rather than shrink."""

    def size(count: int) -> str:
        return f"{count / 1_048_576:.1f} MiB" if count >= 1_048_576 else f"{count / 1024:.0f} KiB"

    what = "state tables" if database else "state file"
    line = (
        f"pruned {document['probesDeleted']} probe rows and {document['eventsDeleted']} events;"
        f" {what} {size(document['bytesBefore'])} -> {size(document['bytesAfter'])}"
    )
    if document["vacuumed"]:
        line += " (vacuumed: the freed space is reused by new rows)" if database else " (vacuumed)"
    _console().print(line, highlight=False)
