"""`serve`: the HTTP API and the status page, as one warm process."""

from __future__ import annotations

import os
from typing import Annotated, Optional

import typer

from voicefallback.cli.common import ConfigOption, DbOption, ModeOption, app, domain_errors
from voicefallback.config import load_registry, resolve_mode
from voicefallback.environment import config_path, db_path, is_database_url
from voicefallback.errors import InputError, Terminated

MISSING_EXTRA = "serve needs the web extra: pip install 'voicefallback[serve]'"


def _token(name: str | None) -> str | None:
    """The bearer token from the variable `--token-env` names; never from argv."""
    if name is None:
        return None
    value = os.environ.get(name, "").strip()
    if not value:
        raise InputError(f"--token-env {name}: the variable is not set (or empty)")
    return value


@app.command()
def serve(
    host: Annotated[
        str,
        typer.Option(
            "--host",
            metavar="ADDRESS",
            help="Address to listen on. Anything but loopback needs --token-env.",
        ),
    ] = "127.0.0.1",
    port: Annotated[
        int,
        typer.Option(
            "--port", metavar="PORT", min=0, max=65535, help="Port to listen on (0: any free)."
        ),
    ] = 3000,
    probe_every: Annotated[
        Optional[str],
        typer.Option(
            "--probe-every",
            metavar="SPAN",
            help="Also probe every model now and on this interval (30s, 5m, 1h), sharing "
            "the probe lock with cron's probe.",
            show_default=False,
        ),
    ] = None,
    token_env: Annotated[
        Optional[str],
        typer.Option(
            "--token-env",
            metavar="NAME",
            help="Environment variable holding the bearer token that every route but "
            "/livez then requires.",
            show_default=False,
        ),
    ] = None,
    read_timeout: Annotated[
        str,
        typer.Option(
            "--read-timeout",
            metavar="SPAN",
            help="Time a client has to send a whole request (headers and body) from its "
            "first byte, or to send anything on a new connection; then 408 and closed.",
        ),
    ] = "10s",
    config: ConfigOption = None,
    db: DbOption = None,
    mode: ModeOption = None,
    json: Annotated[
        bool, typer.Option("--json", help="Log one JSON object per line on stderr.")
    ] = False,
) -> None:
    """Serve the HTTP API (probe, health, start, fallbacks) and a status page until SIGTERM.

    Example: voicefallback serve --port 3000 --probe-every 1m
    """
    with domain_errors():
        try:
            import fastapi  # noqa: F401
            import httptools  # noqa: F401
            import uvicorn  # noqa: F401
        except ImportError:
            raise InputError(MISSING_EXTRA) from None
        from voicefallback.durations import parse_duration
        from voicefallback.server.responses import ServeSettings
        from voicefallback.server.run import bind, is_loopback, run
        from voicefallback.store import open_store

        interval = parse_duration(probe_every, "--probe-every") if probe_every else None
        read_timeout_s = parse_duration(read_timeout, "--read-timeout")
        token = _token(token_env)
        if token is None and not is_loopback(host):
            raise InputError(
                f"--host {host}: not a loopback address; serving it needs --token-env NAME, "
                "the variable that holds the token callers must send"
            )
        config_file = config_path(config)
        resolve_mode(mode, load_registry(config_file))  # bad config: one line, before binding
        state = db_path(db)
        if not is_database_url(state):
            # A state file that is not ours (or too new) is refused now, as every command
            # refuses it, not answered with 500s later. A database may be down at start:
            # starts then run degraded until it is back.
            open_store(state, write=False).close()
        settings = ServeSettings(
            config=config_file,
            db=state,
            token=token,
            probe_every_s=interval,
            read_timeout_s=read_timeout_s,
        )
        sock = bind(host, port)
        try:
            run(settings, sock, mode, json_logs=json)
        except (Terminated, KeyboardInterrupt):
            return  # uvicorn drained in-flight requests first: a clean stop
