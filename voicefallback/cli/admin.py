"""`init`, `models` and `prune`: set up, list the registry, and trim the state."""

from __future__ import annotations

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
from voicefallback.environment import db_path, is_database_url


@app.command()
def init(
    config: ConfigOption = None,
    db: DbOption = None,
    json: JsonOption = False,
) -> None:
    """Write a commented starter models.toml (stub mode); never overwrites a file.

    It goes to --config, else VOICEFALLBACK_CONFIG, else the user config dir: commands look there.

    Example: voicefallback init --config ./models.toml
    """
    from voicefallback import documents, tables
    from voicefallback.starter import starter_path, write_starter

    with domain_errors():
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

    with domain_errors():
        registry = registry_from(config)
        chosen_mode = resolve_mode(mode, registry)
        rows = model_statuses(
            registry.models,
            db_path(db),
            utcnow(),
            connect_timeout_s=registry.connect_timeout_s,
            mode=chosen_mode,
        )
        document = documents.models_json(registry, chosen_mode, rows)
    if json:
        print_json(document)
    else:
        tables.print_models_table(document)
        tables.print_files(registry.path, db_path(db))


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

    with domain_errors():
        registry = registry_from(config)
        report = prune_state(
            db_path(db), registry, events_older_than_days=events_older_than, vacuum=vacuum
        )
        document = documents.prune_json(report)
    if json:
        print_json(document)
    else:
        tables.print_prune(document, database=is_database_url(db_path(db)))
