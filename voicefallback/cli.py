"""The command line: parse options, call the core, render. No SQL and no SDK calls here."""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from voicefallback import __version__
from voicefallback.config import Model, Registry, config_path, db_path, load_registry, resolve_mode
from voicefallback.documents import print_json
from voicefallback.durations import format_span
from voicefallback.errors import InputError, Terminated, VoicefallbackError
from voicefallback.locking import DEFAULT_WAIT_S
from voicefallback.probing import DEFAULT_CONCURRENCY
from voicefallback.stats import DEFAULT_WINDOW_CALLS, DEFAULT_WINDOW_SPAN_S
from voicefallback.tables import print_error, print_notice

app = typer.Typer(
    name="voicefallback",
    help="Keep voice AI agents off dead or slow LLMs: probe models, start sessions on a "
    "healthy one, and record every fallback.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfigOption = Annotated[
    Optional[Path],
    typer.Option(
        "--config",
        help="models.toml to use (env: VOICEFALLBACK_CONFIG; default: ./models.toml, "
        "else the user config dir).",
        show_default=False,
        dir_okay=False,
    ),
]
DbOption = Annotated[
    Optional[Path],
    typer.Option(
        "--db",
        help="State file (env: VOICEFALLBACK_DB; default: the user state dir).",
        show_default=False,
        dir_okay=False,
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print exactly one JSON object on stdout.")
]
ModeOption = Annotated[
    Optional[str],
    typer.Option(
        "--mode",
        metavar="stub|live",
        help="stub (deterministic fake calls) or live (real provider calls) "
        "(env: VOICEFALLBACK_MODE; default: settings.mode).",
        show_default=False,
    ),
]
CheckOption = Annotated[
    bool, typer.Option("--check", help="Exit 1 if any listed model is not healthy.")
]
ModelsArgument = Annotated[
    Optional[list[str]],
    typer.Argument(
        help="Model ids (PROVIDER:MODEL); default: every registered model.", show_default=False
    ),
]
RequireOption = Annotated[
    Optional[list[str]],
    typer.Option(
        "--require",
        metavar="MODEL_ID",
        help="Exit 1 if this model is not healthy, whatever the others are; repeat for more "
        "(a CI gate on the primary).",
        show_default=False,
    ),
]


class OutputFormat(StrEnum):
    table = "table"
    json = "json"
    prometheus = "prometheus"


HISTORY_LIMIT = 20  # probes `health --history` lists without --limit


def _version(value: bool) -> None:
    if value:
        print(f"voicefallback {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    """Keep voice AI agents off dead or slow LLMs."""


@contextmanager
def _domain_errors() -> Iterator[None]:
    """A domain error becomes one line on stderr and its exit code; Ctrl-C exits 130."""
    try:
        yield
    except VoicefallbackError as exc:
        print_error(str(exc))
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        print_error("interrupted")
        raise typer.Exit(130) from None


def _registry(config: Path | None) -> Registry:
    return load_registry(config_path(config))


def _select(registry: Registry, ids: list[str] | None) -> list[Model]:
    if not ids:
        return list(registry.models)
    return [registry.require(model_id, "MODEL_ID") for model_id in dict.fromkeys(ids)]


def _select_with(registry: Registry, ids: list[str] | None, required: list[str]) -> list[Model]:
    """The listed models (default: all), plus every --require model not among them."""
    selected = _select(registry, ids)
    extra = [registry.require(m, "--require") for m in dict.fromkeys(required)]
    return selected + [m for m in extra if m not in selected]


def _gate_failed(rows: list[dict[str, Any]], check: bool, required: list[str]) -> bool:
    """--check: any listed model not healthy; --require: any required model not healthy.

    A failed gate names the models on stderr, so a CI log says what blocked the deploy.
    """
    gated = [r for r in rows if check or r["model"] in required]
    failing = [f"{r['model']} is {r['status']}" for r in gated if not r["ok"]]
    if failing:
        print_notice("check failed: " + ", ".join(failing))
    return bool(failing)


@app.command()
def probe(
    models: ModelsArgument = None,
    config: ConfigOption = None,
    db: DbOption = None,
    mode: ModeOption = None,
    json: JsonOption = False,
    check: CheckOption = False,
    require: RequireOption = None,
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet",
            "-q",
            help="Print nothing when all is well; one line on stderr per model whose status "
            "changed (for cron mail).",
        ),
    ] = False,
    every: Annotated[
        Optional[str],
        typer.Option(
            "--every",
            metavar="SECONDS",
            help="Keep probing on this interval (seconds, or 30s, 5m, 1h) until Ctrl-C or "
            "SIGTERM, then exit 0.",
            show_default=False,
        ),
    ] = None,
    textfile: Annotated[
        Optional[Path],
        typer.Option(
            "--textfile",
            help="Also write every model's health in Prometheus text format to this file, "
            "atomically (for node_exporter's textfile collector).",
            dir_okay=False,
            show_default=False,
        ),
    ] = None,
    lock_timeout: Annotated[
        float,
        typer.Option(
            "--lock-timeout",
            min=0,
            metavar="SECONDS",
            help="How long to wait while another probe holds the state file, before exit 75.",
        ),
    ] = DEFAULT_WAIT_S,
    concurrency: Annotated[
        int, typer.Option("--concurrency", min=1, max=256, help="Models probed at once.")
    ] = DEFAULT_CONCURRENCY,
) -> None:
    """Probe models now and record the results.

    Example: voicefallback probe --quiet --textfile /var/lib/node_exporter/voicefallback.prom
    """
    from voicefallback import documents, tables
    from voicefallback.durations import parse_duration
    from voicefallback.health import status_of
    from voicefallback.probing import probe_run
    from voicefallback.records import utcnow

    required = list(require or [])
    with _domain_errors():
        if quiet and json:
            raise InputError("--quiet and --json: choose one")
        interval = parse_duration(every, "--every") if every is not None else None
        if interval is not None and (check or required):
            raise InputError("--every: cannot gate an exit code (--check, --require) on a loop")
        registry = _registry(config)
        selected = _select_with(registry, models, required)
        chosen_mode = resolve_mode(mode, registry)
        state = db_path(db)
        if textfile is not None:
            from voicefallback.metrics import check_textfile_target

            check_textfile_target(textfile)
    by_id = {m.id: m for m in selected}
    progress = not json and not quiet and len(selected) > 1 and sys.stdout.isatty()

    def one_round() -> dict[str, Any]:
        started = utcnow()
        with tables.probe_progress(len(selected)) if progress else nullcontext() as on_result:
            probed = probe_run(
                registry,
                selected,
                state,
                chosen_mode,
                concurrency,
                lock_wait_s=lock_timeout,
                on_result=on_result,
            )
        now = utcnow()
        rows = [
            (by_id[p.result.model], p, status_of(p.after, by_id[p.result.model].thresholds, now))
            for p in probed
        ]
        document = documents.probe_json(started, chosen_mode, rows)
        if textfile is not None:
            _write_textfile(textfile, registry, state)
        if json:
            print_json(document)
        elif quiet:
            for line in tables.status_change_lines(probed):
                tables.print_notice(line)
        else:
            tables.print_probe_table(document)
        return document

    if interval is None:
        with _domain_errors():
            document = one_round()
        if _gate_failed(document["results"], check, required):
            raise typer.Exit(1)
        return
    from voicefallback.repeat import repeat_every

    with _domain_errors():  # main() turns SIGTERM into Terminated, which ends the loop too
        rounds = repeat_every(interval, one_round, lambda exc: print_error(str(exc)))
    if not quiet and not json:
        tables.print_notice(f"stopped after {rounds} rounds")


def _write_textfile(path: Path, registry: Registry, state: Path) -> None:
    """Prometheus text for every registered model, not only the ones just probed."""
    from voicefallback.metrics import prometheus_text, write_textfile
    from voicefallback.records import utcnow
    from voicefallback.reports import health_report
    from voicefallback.stats import Window

    report = health_report(registry.models, state, Window(), utcnow(), with_event_counts=True)
    write_textfile(path, prometheus_text(report))


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
    with _domain_errors():
        if json and output_format not in (None, OutputFormat.json):
            raise InputError(f"--json and --format {output_format.value}: choose one")
        fmt = output_format or (OutputFormat.json if json else OutputFormat.table)
        recent = Window(calls=window, span_s=parse_duration(span, "--span"))
        if history is None and (limit is not None or since is not None):
            raise InputError("--limit and --since go with --history MODEL_ID")
        registry = _registry(config)
        now = utcnow()
        if history is not None:
            if models or required:
                raise InputError("--history: shows one model; drop the MODEL_ID arguments")
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
            )
            document = documents.history_json(past)
            rows = [document]
        else:
            selected = _select_with(registry, models, required)
            report = health_report(
                selected,
                db_path(db),
                recent,
                now,
                with_event_counts=fmt is OutputFormat.prometheus,
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
    else:
        tables.print_health_table(document)
    if _gate_failed(rows, check, required):
        raise typer.Exit(1)


@app.command()
def start(
    simulation_id: Annotated[
        Optional[str],
        typer.Option(
            "--simulation-id",
            metavar="ID",
            help="The session's id (simulationId).",
            show_default=False,
        ),
    ] = None,
    primary: Annotated[
        Optional[str],
        typer.Option(
            "--primary",
            metavar="MODEL_ID",
            help="Model the session should start on.",
            show_default=False,
        ),
    ] = None,
    fallback: Annotated[
        Optional[list[str]],
        typer.Option(
            "--fallback",
            metavar="MODEL_ID",
            help="A fallback model, in order of preference; repeat for more. "
            "Default: every other registered model, in registry order.",
            show_default=False,
        ),
    ] = None,
    body: Annotated[
        Optional[str],
        typer.Option(
            "--body",
            metavar="JSON|@FILE|-",
            help="The old service's JSON request body: inline, @FILE, or - for stdin.",
            show_default=False,
        ),
    ] = None,
    config: ConfigOption = None,
    db: DbOption = None,
    mode: ModeOption = None,
    json: JsonOption = False,
) -> None:
    """Start a voice session on the primary model, or on a healthy fallback.

    Example: voicefallback start --simulation-id sim-1 --primary openai:gpt-4o-mini --json
    """
    from voicefallback import documents, tables
    from voicefallback.sessions import build_request, parse_body, start_session

    with _domain_errors():
        registry = _registry(config)
        parsed = parse_body(_read_body(body), "--body") if body is not None else {}
        request = build_request(parsed, simulation_id, primary, fallback)
        outcome = start_session(registry, db_path(db), resolve_mode(mode, registry), request)
        document = documents.start_json(outcome)
    if json:
        print_json(document)
    else:
        tables.print_start_panel(document)
    if outcome.chosen is None:
        print_error(outcome.error or "no model could be started")
        raise typer.Exit(1)


def _read_body(value: str) -> str:
    """--body's text: inline, @FILE or - (stdin); read no further than the size cap."""
    from voicefallback.sessions import MAX_BODY_BYTES

    if value != "-" and not value.startswith("@"):
        return value
    where = "--body -" if value == "-" else f"--body {value[1:]}"
    try:
        if value == "-":
            raw = sys.stdin.buffer.read(MAX_BODY_BYTES + 1)
        else:
            with open(value[1:], "rb") as handle:
                raw = handle.read(MAX_BODY_BYTES + 1)
    except OSError as exc:
        raise InputError(f"{where}: cannot read: {exc.strerror}") from None
    if len(raw) > MAX_BODY_BYTES:
        raise InputError(f"{where}: body larger than {MAX_BODY_BYTES // 1024} KiB")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{where}: not UTF-8") from None


@app.command()
def fallbacks(
    simulation_id: Annotated[
        Optional[str],
        typer.Option(
            "--simulation-id",
            metavar="ID",
            help="Only events of this session.",
            show_default=False,
        ),
    ] = None,
    since: Annotated[
        Optional[str],
        typer.Option(
            "--since",
            help="Only events at or after this ISO-8601 time, or this long ago (e.g. 24h).",
            show_default=False,
        ),
    ] = None,
    limit: Annotated[
        Optional[int],
        typer.Option("--limit", min=1, help="At most this many events.", show_default=False),
    ] = None,
    config: ConfigOption = None,
    db: DbOption = None,
    json: JsonOption = False,
) -> None:
    """List fallback events, newest first (reads only the state file, not the registry).

    Example: voicefallback fallbacks --since 24h --json
    """
    from voicefallback import documents, tables
    from voicefallback.durations import parse_since
    from voicefallback.records import utcnow
    from voicefallback.reports import fallback_events

    del config  # accepted like everywhere; events are read without the registry
    with _domain_errors():
        since_at = parse_since(since, utcnow()) if since is not None else None
        events = fallback_events(db_path(db), simulation_id, since_at, limit)
        document = documents.events_json(events)
    if json:
        print_json(document)
    else:
        tables.print_events_table(document)


@app.command()
def init(
    config: ConfigOption = None,
    db: DbOption = None,
    json: JsonOption = False,
) -> None:
    """Write a commented starter models.toml (stub mode); never overwrites a file.

    It goes to --config, else VOICEFALLBACK_CONFIG, else the user config dir, where every
    command finds it.

    Example: voicefallback init --config ./models.toml
    """
    from voicefallback import documents, tables
    from voicefallback.starter import starter_path, write_starter

    with _domain_errors():
        written = write_starter(starter_path(config))
        document = documents.init_json(written, db_path(db))
    if json:
        print_json(document)
    else:
        tables.print_init(document)


@app.command("models")
def list_models(
    config: ConfigOption = None,
    db: DbOption = None,
    mode: ModeOption = None,
    json: JsonOption = False,
) -> None:
    """List the registry in order of preference, with each model's status.

    Example: voicefallback models --json
    """
    from voicefallback import documents, tables
    from voicefallback.records import utcnow
    from voicefallback.reports import model_statuses

    with _domain_errors():
        registry = _registry(config)
        chosen_mode = resolve_mode(mode, registry)
        rows = model_statuses(registry.models, db_path(db), utcnow())
        document = documents.models_json(registry, chosen_mode, rows)
    if json:
        print_json(document)
    else:
        tables.print_models_table(document)


@app.command()
def prune(
    events_older_than: Annotated[
        Optional[float],
        typer.Option(
            "--events-older-than",
            metavar="DAYS",
            help="Also delete fallback events older than this many days (default: keep all).",
            show_default=False,
        ),
    ] = None,
    vacuum: Annotated[
        bool,
        typer.Option(
            "--vacuum", help="Then rewrite the file so the freed space goes back to the disk."
        ),
    ] = False,
    config: ConfigOption = None,
    db: DbOption = None,
    json: JsonOption = False,
) -> None:
    """Delete probe history older than each model's history_days (probe also does this).

    Example: voicefallback prune --vacuum --json
    """
    from voicefallback import documents, tables
    from voicefallback.retention import prune as prune_state

    with _domain_errors():
        registry = _registry(config)
        report = prune_state(
            db_path(db), registry, events_older_than_days=events_older_than, vacuum=vacuum
        )
        document = documents.prune_json(report)
    if json:
        print_json(document)
    else:
        tables.print_prune(document)


def _terminate(signum: int, frame: object) -> None:
    raise Terminated()


def main() -> None:
    """Entry point: usage errors become one line on stderr (exit 2), like domain errors.

    SIGTERM unwinds like Ctrl-C (rolling back any open transaction): exit 143, or 130.
    """
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _terminate)
    try:
        code = app(prog_name="voicefallback", standalone_mode=False)
    except Terminated:
        print_error("terminated")
        code = Terminated.exit_code
    except KeyboardInterrupt:  # outside a command's own handling, e.g. while printing
        print_error("interrupted")
        code = 130
    except typer.Abort:
        code = 130
    except Exception as exc:
        # Typer's bundled Click raises its UsageError family here; the rest are bugs.
        if not hasattr(exc, "format_message") or not hasattr(exc, "exit_code"):
            raise
        context = getattr(exc, "ctx", None)
        command = getattr(getattr(context, "command", None), "name", None)
        where = f"{command}: " if command and context.parent is not None else ""  # type: ignore[union-attr]
        print_error(f"{where}{exc.format_message()}")
        code = exc.exit_code
    sys.exit(code or 0)
