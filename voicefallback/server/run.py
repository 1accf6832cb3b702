"""Run the app under uvicorn: bind, log, serve until SIGTERM or Ctrl-C, drain, exit."""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import json
import logging
import os
import socket
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from voicefallback.environment import display_location, secrets_from_env
from voicefallback.errors import InputError, VoicefallbackError
from voicefallback.records import iso
from voicefallback.redaction import redact
from voicefallback.server.app import create_app
from voicefallback.server.responses import ServeSettings

if TYPE_CHECKING:
    from voicefallback.router import AsyncSessionRouter
    from voicefallback.server.edge import Limits

log = logging.getLogger("voicefallback.serve")

# SIGTERM: stop accepting, let in-flight requests finish for up to GRACE_S (those still
# running then get a JSON 503), stop the probe loop and close the state (bounded, whatever
# the database does). The process is gone by STOP_LIMIT_S in any case: inside systemd's 10 s
# of patience (TimeoutStopSec), so the unit never ends in SIGKILL.
GRACE_S = 3
STOP_LIMIT_S = 6.5


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


class LogSecrets:
    """What no log line may show: the bearer token and the configured keys (read again after
    a reload adds a provider), besides what redact() finds by shape."""

    def __init__(self, token: str | None) -> None:
        self.token = token
        self.router: AsyncSessionRouter | None = None
        self._seen: tuple[object, list[str]] = (None, [token or ""])

    def values(self) -> list[str]:
        registry = self.router.registry if self.router is not None else None
        if registry is not self._seen[0]:
            assert registry is not None
            names = (p.api_key_env for p in registry.providers.values())
            self._seen = (registry, [self.token or "", *secrets_from_env(names)])
        return self._seen[1]


class Redacting(logging.Filter):
    """Every record on the way out, whoever logged it (uvicorn's access line with a client's
    query string, a library's message, a traceback), with its secrets redacted."""

    def __init__(self, secrets: LogSecrets) -> None:
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        record.msg, record.args = redact(text, self.secrets.values()), None
        record.exc_info, record.exc_text = None, None
        return True


# Loggers that print a provider request's URL and headers' worth of detail at INFO or DEBUG.
QUIET_LOGGERS = ("httpx", "httpx2", "httpcore", "openai", "anthropic")


def configure_logging(json_lines: bool, secrets: LogSecrets) -> None:
    """One line per event on stderr (journald adds its own timestamps), redacted."""
    handler = logging.StreamHandler(sys.stderr)
    if json_lines:
        handler.setFormatter(JsonLines())
    else:
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(Redacting(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def url_of(host: str, port: int) -> str:
    """http://HOST:PORT, an IPv6 address in brackets."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def _serve(
    settings: ServeSettings,
    sock: socket.socket,
    mode: str | None,
    secrets: LogSecrets,
    limits: Limits,
) -> None:
    import uvicorn

    from voicefallback.router import AsyncSessionRouter
    from voicefallback.server.edge import protocol_class

    async with AsyncSessionRouter(config=settings.config, db=settings.db, mode=mode) as router:
        secrets.router = router
        app = create_app(router, settings)
        config = uvicorn.Config(
            app,
            log_config=None,  # our handler, our format
            http=protocol_class(limits),
            timeout_graceful_shutdown=GRACE_S,
            server_header=False,
            proxy_headers=False,
        )
        host, port = sock.getsockname()[:2]
        log.info(
            "serving %s (%s mode, %d models, state %s; %s, up to %d connections)",
            url_of(host, port),
            router.mode,
            len(router.registry.models),
            display_location(settings.db),  # a URL's password stays out of the log
            type(asyncio.get_running_loop()).__module__.partition(".")[0],  # uvloop or asyncio
            limits.max_connections,
        )
        await _bounded(uvicorn.Server)(config).serve(sockets=[sock])


def _bounded(server: type[Any]) -> type[Any]:
    """uvicorn's server class, sure to be gone STOP_LIMIT_S after its stop begins."""

    class Bounded(server):  # type: ignore[misc]
        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            _stop_by(STOP_LIMIT_S)
            await super().shutdown(sockets)

    return Bounded


def _stop_by(limit_s: float) -> None:
    """The last resort of a stop: past `limit_s`, one log line and the process exits.
    Everything committed stays (SQLite and PostgreSQL roll back what was not); spooled
    writes are files already."""

    def give_up() -> None:
        log.error("stopping took over %g s: exiting now, unfinished work not recorded", limit_s)
        logging.shutdown()
        os._exit(0)

    timer = threading.Timer(limit_s, give_up)
    timer.daemon = True
    timer.start()


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop where it is installed (the serve extra brings it): a request costs less
    CPU; else asyncio's own (None)."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run(
    settings: ServeSettings, sock: socket.socket, mode: str | None, *, json_logs: bool = False
) -> None:
    """Serve until a signal; uvicorn drains, then re-raises the signal it caught, which the
    caller treats as a clean stop."""
    from voicefallback.server.edge import limits_for

    secrets = LogSecrets(settings.token)
    configure_logging(json_logs, secrets)
    limits = limits_for(settings.read_timeout_s)
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(_serve(settings, sock, mode, secrets, limits))
    finally:
        sock.close()
