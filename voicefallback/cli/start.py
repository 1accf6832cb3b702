"""`start`: start a voice session on the primary model or a healthy fallback."""

from __future__ import annotations

import sys
from dataclasses import replace
from typing import Annotated, Optional

import typer

from voicefallback.cli.common import (
    ConfigOption,
    DbOption,
    JsonOption,
    ModeOption,
    app,
    domain_errors,
    registry_from,
)
from voicefallback.config import resolve_mode
from voicefallback.documents import print_json
from voicefallback.environment import db_path
from voicefallback.errors import InputError
from voicefallback.tables import print_error


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
            help="The start request as one JSON object (simulationId, primary, fallbacks and "
            "any keys the opening call needs): inline, @FILE, or - for stdin.",
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
    import asyncio  # here, not at the top: read-only commands need no event loop

    from voicefallback import documents, tables
    from voicefallback.environment import secrets_from_env
    from voicefallback.redaction import refuse_secret
    from voicefallback.routing import start_session
    from voicefallback.sessions import CLI_NAMES, build_request, parse_body, validate_request

    with domain_errors():
        registry = registry_from(config)
        parsed = parse_body(_read_body(body), "--body") if body is not None else {}
        request = build_request(parsed, simulation_id, primary, fallback, CLI_NAMES)
        # An unknown model is blamed on where it came from: an option, or a key of --body.
        names = replace(
            CLI_NAMES,
            primary="--primary" if primary is not None else "--body primary",
            fallbacks="--fallback" if fallback else "--body fallbacks",
        )
        validate_request(registry, request, names)
        keys = secrets_from_env(p.api_key_env for p in registry.providers.values())
        refuse_secret(request.simulation_id, "--simulation-id", keys)
        chosen_mode = resolve_mode(mode, registry)
        outcome = asyncio.run(start_session(registry, db_path(db), chosen_mode, request))
        document = documents.start_json(outcome)
    if outcome.degraded:
        tables.print_notice(f"degraded: {outcome.degraded}")  # what, why, and where it went
    if json:
        print_json(document)
    else:
        chosen = registry.get(outcome.chosen) if outcome.chosen else None
        budget = chosen.thresholds.ttft_budget_ms if chosen else None
        tables.print_start_panel(document, budget_ms=budget, degraded=outcome.degraded)
        tables.print_files(registry.path, db_path(db))
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
