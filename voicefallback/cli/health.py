"""`health`: each model's status and what it rests on, without calling any provider."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from voicefallback.cli.common import (
    CheckOption,
    ConfigOption,
    DbOption,
    JsonOption,
    ModelsArgument,
    OutputFormat,
    RequireOption,
    app,
    domain_errors,
    gate_failed,
    registry_from,
    select_with,
)
from voicefallback.config import resolve_mode
from voicefallback.documents import print_json
from voicefallback.durations import format_span
from voicefallback.environment import db_path
from voicefallback.errors import InputError
from voicefallback.stats import DEFAULT_WINDOW_CALLS, DEFAULT_WINDOW_SPAN_S

HISTORY_LIMIT = 20  # probes `health --history` lists without --limit


@app.command()
def health(
    models: ModelsArgument = None,
    config: ConfigOption = None,
    db: DbOption = None,
    json: JsonOption = False,
    check: CheckOption = False,
    require: RequireOption = None,
    output_format: Annotated[
        Optional[OutputFormat],
        typer.Option(
            "--format",
            help="table (default), json (same as --json) or prometheus (text format for scraping).",
            show_default=False,
        ),
    ] = None,
    window: Annotated[
        int,
        typer.Option(
            "--window",
            min=1,
            max=100_000,
            metavar="N",
            help="Success rate and p50/p95 TTFT cover at most the last N probes of each model...",
        ),
    ] = DEFAULT_WINDOW_CALLS,
    span: Annotated[
        str,
        typer.Option(
            "--span",
            metavar="DURATION",
            help="...and only probes within this span before now (e.g. 30m, 24h, 7d).",
        ),
    ] = format_span(DEFAULT_WINDOW_SPAN_S),
    history: Annotated[
        Optional[str],
        typer.Option(
            "--history",
            metavar="MODEL_ID",
            help="Instead, list this model's recent probes and status changes, newest first.",
            show_default=False,
        ),
    ] = None,
    limit: Annotated[
        Optional[int],
        typer.Option(
            "--limit",
            min=1,
            max=1_000_000,
            help="With --history: at most this many probes and status changes (default: 20).",
            show_default=False,
        ),
    ] = None,
    since: Annotated[
        Optional[str],
        typer.Option(
            "--since",
            help="With --history: only what happened at or after this ISO-8601 time, or "
            "within this span (e.g. 1h, 7d).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Show each model's health and what it rests on, without calling any provider.

    Example: voicefallback health --require openai:gpt-4o-mini --json
    """
    from voicefallback import documents, tables
    from voicefallback.durations import parse_duration, parse_since
    from voicefallback.records import utcnow
    from voicefallback.reports import health_report, model_history
    from voicefallback.stats import Window

    required = list(require or [])
    with domain_errors():
        if json and output_format not in (None, OutputFormat.json):
            raise InputError(f"--json and --format {output_format.value}: choose one")
        fmt = output_format or (OutputFormat.json if json else OutputFormat.table)
        recent = Window(calls=window, span_s=parse_duration(span, "--span"))
        if history is None and (limit is not None or since is not None):
            raise InputError("--limit and --since go with --history MODEL_ID")
        registry = registry_from(config)
        now = utcnow()
        if history is not None:
            if models:
                raise InputError("--history: shows one model; drop the MODEL_ID arguments")
            others = [m for m in required if m != history]
            if others:
                raise InputError(
                    f"--require {others[0]}: --history shows {history} alone; require that"
                    " model, or gate on others with `health --require` without --history"
                )
            if fmt is OutputFormat.prometheus:
                raise InputError("--history: use --json or the table, not --format prometheus")
            model = registry.require(history, "--history")
            since_at = parse_since(since, now) if since is not None else None
            past = model_history(
                model,
                db_path(db),
                limit=limit or HISTORY_LIMIT,
                since=since_at,
                window=recent,
                now=now,
                connect_timeout_s=registry.connect_timeout_s,
                mode=resolve_mode(None, registry),
            )
            document = documents.history_json(past)
            rows = [document]
        else:
            selected = select_with(registry, models, required)
            report = health_report(
                selected,
                db_path(db),
                recent,
                now,
                with_event_counts=fmt is OutputFormat.prometheus,
                connect_timeout_s=registry.connect_timeout_s,
                mode=resolve_mode(None, registry),
            )
            document = documents.health_json(report)
            rows = document["models"]
    if fmt is OutputFormat.prometheus:
        from voicefallback.metrics import prometheus_text

        sys.stdout.write(prometheus_text(report))
    elif fmt is OutputFormat.json:
        print_json(document)
    elif history is not None:
        tables.print_history(document)
        tables.print_files(registry.path, db_path(db))
    else:
        tables.print_health_table(document)
        tables.print_files(registry.path, db_path(db))
    if gate_failed(rows, check, required):
        raise typer.Exit(1)
