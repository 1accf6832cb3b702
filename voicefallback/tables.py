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

from voicefallback.durations import format_age, format_span
from voicefallback.environment import display_location, is_database_url
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


# Free text (messages, lists of models) wraps onto more lines, but not narrower than this.
_WRAP_MIN = 16


@dataclass
class _Column:
    """A column and its cells (rich markup). On a narrow terminal, columns give way so that ids
    stay whole on one line: first those with nothing to show, then the highest `drop`. `drop` 0
    is never dropped (ids, statuses, errors); when those alone do not fit, each row becomes a
    block of lines instead (see `_print_rows`). `wrap`: free text that may take more lines."""

    header: str
    cells: list[str]
    drop: int = 0
    justify: Literal["left", "right"] = "left"
    wrap: bool = False

    @cached_property
    def width(self) -> int:
        from rich.cells import cell_len

        return max(cell_len(line) for line in [self.header, *self._lines])

    @cached_property
    def _lines(self) -> list[str]:
        from rich.text import Text

        return [line for cell in self.cells for line in Text.from_markup(cell).plain.split("\n")]

    @property
    def least(self) -> int:
        """The narrowest this column may be: its widest cell; for free text, a readable width
        that keeps its widest word (a model id) whole."""
        if not self.wrap:
            return self.width
        from rich.cells import cell_len

        words = [cell_len(word) for line in self._lines for word in line.split()]
        return min(self.width, max([_WRAP_MIN, *words]))

    @property
    def blank(self) -> bool:
        return all(line.strip() in ("", "-") for line in self._lines)


def _fitting(columns: list[_Column], width: int) -> tuple[list[_Column], bool]:
    """The columns that fit `width`, dropping blank then secondary ones first; and whether
    they fit. The first column (the row's id) is never dropped."""
    shown = list(columns)

    def needed() -> int:  # each cell has one space either side, and one border between
        return sum(c.least + 3 for c in shown) + 1

    while needed() > width:
        droppable = [c for c in shown[1:] if c.blank] or [c for c in shown if c.drop]
        if not droppable:
            return shown, False
        shown.remove(max(droppable, key=lambda c: c.drop))
    return shown, True


def _print_rows(title: str, columns: list[_Column], console: Console, heading: int = 1) -> None:
    """A table when the columns that never drop fit the terminal; else one block per row: the
    first `heading` columns (the id) alone on a line, whole, then the others as `header value`."""
    from rich.padding import Padding
    from rich.table import Table
    from rich.text import Text

    shown, fits = _fitting(columns, console.width)
    if not fits:
        console.print(title, overflow="fold")
        for row in range(len(columns[0].cells)):
            console.print(" ".join(c.cells[row] for c in columns[:heading]), overflow="fold")
            said = [
                f"{c.header} {c.cells[row]}".replace("\n", ", ")
                for c in columns[heading:]
                if c.cells[row].strip() not in ("", "-")
            ]
            text = Text.from_markup(", ".join(said), overflow="fold")
            console.print(Padding(text, (0, 0, 0, 2), expand=False))
        return
    table = Table(title=title)
    for column in shown:
        table.add_column(
            column.header,
            justify=column.justify,
            no_wrap=not column.wrap,
            overflow="fold" if column.wrap else "ellipsis",
            min_width=column.least,
        )
    for cells in zip(*(c.cells for c in shown), strict=True):
        table.add_row(*cells)
    console.print(table)


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
        _Column("error", [r["error"] or "" for r in rows]),
    ]
    console = _console()
    _print_rows(f"probe ({document['mode']}) at {document['probedAt']}", columns, console)


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
        _Column("TTFT", [_ms(r["ttftMs"]) for r in rows], drop=2, justify="right"),
        _Column("p50/p95", [_percentiles(r["recent"]) for r in rows], drop=6, justify="right"),
        _Column("success", [_success(r["recent"]) for r in rows], drop=5, justify="right"),
        _Column("checked", [checked(r) for r in rows], drop=3, justify="right"),
        _Column("fails", [str(r["consecutiveFailures"]) for r in rows], drop=7, justify="right"),
        _Column("last error", [_last_failure(r["lastFailure"]) for r in rows]),
    ]
    title = (
        f"health (recent: last {window['probes']} probes within "
        f"{format_span(window['spanMs'] / 1000)})"
    )
    console = _console()
    _print_rows(title, columns, console)


def print_history(document: dict[str, Any]) -> None:
    """A model's status changes and calls; the time of each stays whole at any width."""
    now = document["generatedAt"]
    console = _console()
    since = f" for {_age(document['statusSince'], now)}" if document["statusSince"] else ""
    console.print(
        f"[bold]{_e(document['model'])}[/]: {_status(document['status'])}{since}", overflow="fold"
    )
    changes = document["statusChanges"]
    _print_rows(
        "status changes (newest first)",
        [
            _Column("at", [c["at"] for c in changes]),
            _Column("from", [_status(c["from"]) if c["from"] else "-" for c in changes], drop=1),
            _Column("to", [_status(c["to"]) for c in changes]),
            _Column("error", [c["error"] or "" for c in changes]),
        ],
        console,
    )
    calls = document["probes"]
    _print_rows(
        "probes (newest first)",
        [
            _Column("at", [c["at"] for c in calls]),
            _Column("kind", [c["kind"] for c in calls], drop=3),
            _Column(
                "result", ["[green]ok[/]" if c["ok"] else f"[red]{c['error']}[/]" for c in calls]
            ),
            _Column("TTFT", [_ms(c["ttftMs"]) for c in calls], drop=2, justify="right"),
            _Column("latency", [_ms(c["latencyMs"]) for c in calls], drop=4, justify="right"),
            _Column("message", [_e(c["message"] or "") for c in calls], drop=1, wrap=True),
        ],
        console,
    )


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
    _print_rows(f"models ({document['mode']} mode)", columns, console, heading=2)


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
        _Column("at", [e["at"] for e in events], drop=3),
        _Column("simulation", [_e(e["simulationId"]) for e in events]),
        _Column("primary", [_e(e["primary"]) for e in events]),
        _Column("chosen", [chosen(e) for e in events]),
        _Column("reason", [e["reason"] for e in events]),
        _Column("source", [e["fallbackSource"] or "" for e in events], drop=4),
        _Column("passed over", [passed(e) for e in events], drop=2, wrap=True),
    ]
    console = _console()
    if _fitting(columns, console.width)[1]:
        _print_rows("fallback events (newest first)", columns, console)
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
