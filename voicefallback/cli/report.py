"""`report`: a real session's turn (first-token time or error) as evidence of a model's health."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from voicefallback.cli.common import (
    ConfigOption,
    DbOption,
    JsonOption,
    app,
    domain_errors,
    registry_from,
)
from voicefallback.config import resolve_mode
from voicefallback.documents import print_json
from voicefallback.environment import db_path


@app.command()
def report(
    model: Annotated[
        str, typer.Argument(metavar="MODEL_ID", help="The model the session's turn ran on.")
    ],
    ttft_ms: Annotated[
        Optional[int],
        typer.Option(
            "--ttft-ms",
            metavar="N",
            help="The turn answered: milliseconds to its first token.",
            show_default=False,
        ),
    ] = None,
    latency_ms: Annotated[
        Optional[int],
        typer.Option(
            "--latency-ms",
            metavar="N",
            help="With --ttft-ms: milliseconds to the end of the answer.",
            show_default=False,
        ),
    ] = None,
    error: Annotated[
        Optional[str],
        typer.Option(
            "--error",
            metavar="KIND",
            help="The turn failed: an error kind (timeout, overloaded, … , over_budget, stalled).",
            show_default=False,
        ),
    ] = None,
    simulation_id: Annotated[
        Optional[str],
        typer.Option(
            "--simulation-id",
            metavar="ID",
            help="The session the turn belongs to (kept in the history row).",
            show_default=False,
        ),
    ] = None,
    config: ConfigOption = None,
    db: DbOption = None,
    json: JsonOption = False,
) -> None:
    """Record a real session's outcome as evidence, and print the model's status after it.

    A model that starts stalling in real traffic leaves rotation before the next cron probe.

    Example: voicefallback report openai:gpt-4o-mini --ttft-ms 420 --simulation-id sim-1
    """
    from voicefallback import documents, tables
    from voicefallback.environment import secrets_from_env
    from voicefallback.evidence import record_session, session_result
    from voicefallback.health import apply_probe
    from voicefallback.records import utcnow
    from voicefallback.redaction import refuse_secret
    from voicefallback.sessions import CLI_NAMES
    from voicefallback.store.outage import open_writer

    with domain_errors():
        registry = registry_from(config)
        if simulation_id is not None:
            keys = secrets_from_env(p.api_key_env for p in registry.providers.values())
            refuse_secret(simulation_id, "--simulation-id", keys)
        result = session_result(
            registry,
            model,
            ttft_ms=ttft_ms,
            latency_ms=latency_ms,
            error=error,
            simulation_id=simulation_id,
            now=utcnow(),
            names=CLI_NAMES,
            mode=resolve_mode(None, registry),
        )
        state = db_path(db)
        timeout = registry.connect_timeout_s
        with open_writer(state, update=apply_probe, connect_timeout_s=timeout) as store:
            recorded = record_session(store, registry, result)
        document = documents.report_json(recorded)
    if json:
        print_json(document)
    else:
        tables.print_report(document)
        tables.print_files(registry.path, state)
