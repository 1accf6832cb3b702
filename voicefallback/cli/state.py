"""`state copy`: move a whole state between a SQLite file and a PostgreSQL database."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from voicefallback.cli.common import ConfigOption, DbOption, JsonOption, app, domain_errors
from voicefallback.documents import print_json

state_app = typer.Typer(
    help="Move a whole state between a SQLite file and a PostgreSQL database.\n\n"
    "Example: voicefallback state copy --to postgresql://voicefallback@db.internal/voicefallback",
    no_args_is_help=True,
)
app.add_typer(state_app, name="state")


@state_app.command("copy")
def copy(
    to: Annotated[
        str,
        typer.Option(
            "--to",
            metavar="FILE|URL",
            help="Where to copy it: a SQLite file or a postgresql:// URL holding no state yet.",
            show_default=False,
        ),
    ],
    source: Annotated[
        Optional[str],
        typer.Option(
            "--from",
            metavar="FILE|URL",
            help="The state to copy (default: --db, else VOICEFALLBACK_DB, else the user state"
            " dir).",
            show_default=False,
        ),
    ] = None,
    config: ConfigOption = None,
    db: DbOption = None,
    json: JsonOption = False,
) -> None:
    """Copy every probe, snapshot and fallback event to another state, checking the counts.

    The target must hold no state yet; it gets everything in one transaction, or nothing.

    Example: voicefallback state copy --from state.db --to postgresql://vf@db.internal/vf
    """
    from voicefallback import documents, tables
    from voicefallback.config import DEFAULT_CONNECT_TIMEOUT_S, load_registry
    from voicefallback.environment import config_path, db_path
    from voicefallback.store.copy import copy_state

    with domain_errors():
        timeout = DEFAULT_CONNECT_TIMEOUT_S
        registry_file = config_path(config)
        if config is not None or registry_file.is_file():  # only for connect_timeout_s
            timeout = load_registry(registry_file).connect_timeout_s
        report = copy_state(
            db_path(source if source is not None else db),
            db_path(to),
            connect_timeout_s=timeout,
        )
    document = documents.copy_json(report)
    if json:
        print_json(document)
    else:
        tables.print_copy(document)
