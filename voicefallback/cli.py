"""The command line: parse options, call the core, render. No SQL and no SDK calls here."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer

from voicefallback import __version__
from voicefallback.config import Model, Registry, config_path, db_path, load_registry, resolve_mode
from voicefallback.errors import InputError, VoicefallbackError
from voicefallback.output import print_error, print_json

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
        help="models.toml to use [env: VOICEFALLBACK_CONFIG; default: ./models.toml, "
        "else the user config dir].",
        show_default=False,
        dir_okay=False,
    ),
]
DbOption = Annotated[
    Optional[Path],
    typer.Option(
        "--db",
        help="State file [env: VOICEFALLBACK_DB; default: the user state dir].",
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
        help="stub (deterministic fake calls) or live (real provider calls) "
        "[env: VOICEFALLBACK_MODE; default: settings.mode].",
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


@app.command()
def probe(
    models: ModelsArgument = None,
    config: ConfigOption = None,
    db: DbOption = None,
    mode: ModeOption = None,
    json: JsonOption = False,
    check: CheckOption = False,
    concurrency: Annotated[
        int, typer.Option("--concurrency", min=1, max=256, help="Models probed at once.")
    ] = 16,
) -> None:
    """Probe models now and record the results.

    Example: voicefallback probe --json
    """
    from voicefallback import output
    from voicefallback.health import status_of
    from voicefallback.probing import probe_and_record
    from voicefallback.records import utcnow

    with _domain_errors():
        registry = _registry(config)
        selected = _select(registry, models)
        chosen_mode = resolve_mode(mode, registry)
        started = utcnow()
        recorded = probe_and_record(selected, db_path(db), chosen_mode, concurrency)
        now = utcnow()
        by_id = {m.id: m for m in selected}
        rows = [
            (by_id[r.model], r, status_of(s, by_id[r.model].thresholds, now)) for r, s in recorded
        ]
        document = output.probe_json(started, chosen_mode, rows)
    if json:
        print_json(document)
    else:
        output.print_probe_table(document)
    if check and not all(row["ok"] for row in document["results"]):
        raise typer.Exit(1)


@app.command()
def health(
    models: ModelsArgument = None,
    config: ConfigOption = None,
    db: DbOption = None,
    json: JsonOption = False,
    check: CheckOption = False,
) -> None:
    """Show each model's latest health, without calling any provider.

    Example: voicefallback health --check openai:gpt-4o-mini
    """
    from voicefallback import output
    from voicefallback.health import status_of
    from voicefallback.records import utcnow
    from voicefallback.store import Store

    with _domain_errors():
        registry = _registry(config)
        selected = _select(registry, models)
        with Store.open(db_path(db), write=False) as store:
            snapshots = store.snapshots(m.id for m in selected)
        now = utcnow()
        document = output.health_json(
            [
                (m, snapshots.get(m.id), status_of(snapshots.get(m.id), m.thresholds, now))
                for m in selected
            ]
        )
    if json:
        print_json(document)
    else:
        output.print_health_table(document)
    if check and not all(row["ok"] for row in document["models"]):
        raise typer.Exit(1)


@app.command()
def start(
    simulation_id: Annotated[
        Optional[str],
        typer.Option(
            "--simulation-id", help="The session's id (simulationId).", show_default=False
        ),
    ] = None,
    primary: Annotated[
        Optional[str],
        typer.Option("--primary", help="Model the session should start on.", show_default=False),
    ] = None,
    fallback: Annotated[
        Optional[list[str]],
        typer.Option(
            "--fallback",
            help="A fallback model, in order of preference; repeat for more. "
            "Default: every other registered model, in registry order.",
            show_default=False,
        ),
    ] = None,
    body: Annotated[
        Optional[str],
        typer.Option(
            "--body",
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
    from voicefallback import output
    from voicefallback.sessions import build_request, parse_body, start_session

    with _domain_errors():
        registry = _registry(config)
        parsed = parse_body(_read_body(body), "--body") if body is not None else {}
        request = build_request(parsed, simulation_id, primary, fallback)
        outcome = start_session(registry, db_path(db), resolve_mode(mode, registry), request)
        document = output.start_json(outcome)
    if json:
        print_json(document)
    else:
        output.print_start_panel(document)
    if outcome.chosen is None:
        print_error(outcome.error or "no model could be started")
        raise typer.Exit(1)


def _read_body(value: str) -> str:
    if value == "-":
        return sys.stdin.read()
    if value.startswith("@"):
        path = Path(value[1:])
        try:
            return path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise InputError(f"--body {path}: not UTF-8") from None
        except OSError as exc:
            raise InputError(f"--body {path}: cannot read: {exc.strerror}") from None
    return value


@app.command()
def fallbacks(
    simulation_id: Annotated[
        Optional[str],
        typer.Option("--simulation-id", help="Only events of this session.", show_default=False),
    ] = None,
    since: Annotated[
        Optional[str],
        typer.Option(
            "--since", help="Only events at or after this ISO-8601 time.", show_default=False
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
    """List fallback events, newest first.

    Example: voicefallback fallbacks --since 2026-01-01T00:00:00Z --json
    """
    from voicefallback import output
    from voicefallback.records import parse_iso
    from voicefallback.store import Store

    with _domain_errors():
        _registry(config)  # a broken registry is reported the same way by every command
        since_at = None
        if since is not None:
            try:
                since_at = parse_iso(since)
            except ValueError:
                raise InputError(f"--since: not an ISO-8601 date or time: {since!r}") from None
        with Store.open(db_path(db), write=False) as store:
            events = store.events(simulation_id, since_at, limit)
        document = output.events_json(events)
    if json:
        print_json(document)
    else:
        output.print_events_table(document)


def main() -> None:
    """Entry point: usage errors become one line on stderr (exit 2), like domain errors."""
    try:
        code = app(prog_name="voicefallback", standalone_mode=False)
    except typer.Abort:
        code = 130
    except Exception as exc:
        # Typer's bundled Click raises its UsageError family here; the rest are bugs.
        if not hasattr(exc, "format_message") or not hasattr(exc, "exit_code"):
            raise
        command = getattr(getattr(exc, "ctx", None), "command_path", "voicefallback")
        print_error(f"{command}: {exc.format_message()}")
        code = exc.exit_code
    sys.exit(code or 0)
