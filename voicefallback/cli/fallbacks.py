"""`fallbacks`: recorded fallback events, newest first."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from voicefallback.cli.common import ConfigOption, DbOption, JsonOption, app, domain_errors
from voicefallback.documents import EVENTS_PAGE, print_json
from voicefallback.environment import db_path


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
        int,
        typer.Option("--limit", min=1, help="At most this many events (a page)."),
    ] = EVENTS_PAGE,
    before: Annotated[
        Optional[int],
        typer.Option(
            "--before",
            metavar="ID",
            min=1,
            help="Only events older than this id: the next page (--json: nextBefore).",
            show_default=False,
        ),
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
    with domain_errors():
        since_at = parse_since(since, utcnow()) if since is not None else None
        page = fallback_events(db_path(db), simulation_id, since_at, limit, before)
        document = documents.events_json(page)
    if json:
        print_json(document)
    else:
        tables.print_events_table(document)
        tables.print_events_page(document)
        tables.print_files(None, db_path(db))
