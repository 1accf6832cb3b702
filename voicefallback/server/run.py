"""Run the app under uvicorn: bind, log, serve until SIGTERM or Ctrl-C, drain, exit."""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import json
import logging
import socket
import sys
from datetime import UTC, datetime

from voicefallback.config import display_location
from voicefallback.errors import InputError, VoicefallbackError
from voicefallback.records import iso
from voicefallback.server.app import create_app
from voicefallback.server.responses import ServeSettings

log = logging.getLogger("voicefallback.serve")

# SIGTERM: stop accepting, let in-flight requests finish for up to this long, then stop the
# probe loop and close the state file: well inside systemd's 10 s of patience (TimeoutStopSec).
GRACE_S = 7


class AddressBusy(VoicefallbackError):
    """Another process listens on the address: temporary, like a busy state file."""

    exit_code = 75


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """Bind before anything else starts, so a taken port is one line, not a traceback."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise InputError(f"--host {host}: cannot resolve: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise AddressBusy(f"--port {port}: {host}:{port} is already in use") from None
        raise InputError(f"--host {host} --port {port}: cannot listen: {exc.strerror}") from None
    sock.setblocking(False)
    return sock


class JsonLines(logging.Formatter):
    """`serve --json`: one JSON object per log line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.fromtimestamp(record.created, UTC)
        return json.dumps(
            {
                "at": iso(moment),
                "level": record.levelname.lower(),
                "logger": record.name,
                "message": record.getMessage(),
            },
            ensure_ascii=False,
        )


def configure_logging(json_lines: bool) -> None:
    """One line per event on stderr (journald adds its own timestamps)."""
    handler = logging.StreamHandler(sys.stderr)
    if json_lines:
        handler.setFormatter(JsonLines())
    else:
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


async def _serve(settings: ServeSettings, sock: socket.socket, mode: str | None) -> None:
    import uvicorn

    from voicefallback.router import AsyncSessionRouter

    async with AsyncSessionRouter(config=settings.config, db=settings.db, mode=mode) as router:
        app = create_app(router, settings)
        config = uvicorn.Config(
            app,
            log_config=None,  # our handler, our format
            timeout_graceful_shutdown=GRACE_S,
            server_header=False,
            proxy_headers=False,
        )
        host, port = sock.getsockname()[:2]
        log.info(
            "serving http://%s:%d (%s mode, %d models, state %s)",
            host,
            port,
            router.mode,
            len(router.registry.models),
            display_location(settings.db),  # a URL's password stays out of the log
        )
        await uvicorn.Server(config).serve(sockets=[sock])


def run(
    settings: ServeSettings, sock: socket.socket, mode: str | None, *, json_logs: bool = False
) -> None:
    """Serve until a signal; uvicorn drains, then re-raises the signal it caught, which the
    caller treats as a clean stop."""
    configure_logging(json_logs)
    try:
        asyncio.run(_serve(settings, sock, mode))
    finally:
        sock.close()
