"""The FastAPI app over one warm AsyncSessionRouter: bearer auth, the probe loop, hot reload."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from voicefallback import __version__
from voicefallback.config import load_registry
from voicefallback.environment import file_stamp
from voicefallback.errors import InputError, StateUnreachable, VoicefallbackError
from voicefallback.server.responses import ServeSettings, error_response, one_line

if TYPE_CHECKING:
    from voicefallback.router import AsyncSessionRouter

log = logging.getLogger("voicefallback.serve")

RELOAD_POLL_S = 1.0  # how often models.toml is looked at for changes
UNAUTHENTICATED = frozenset({"/livez"})  # a liveness probe carries no credentials

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class EdgeMiddleware:
    """Before any route: HEAD answered as GET without the body, the bearer token (compared in
    constant time), and a Server-Timing header on every answer with the time it took."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token.encode() if token is not None else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()

        async def timed(message: Message) -> None:
            if message["type"] == "http.response.start":
                spent = f"app;dur={(time.perf_counter() - began) * 1000:.3f}".encode()
                message["headers"] = [*message.get("headers", []), (b"server-timing", spent)]
            await send(message)

        guarded = self.token is not None and scope["path"] not in UNAUTHENTICATED
        if guarded and not self._authorized(scope):
            response = error_response(401, "unauthorized")
            response.headers["WWW-Authenticate"] = "Bearer"
            await response(scope, receive, timed)
            return
        if scope["method"] == "HEAD":
            # The routes see a GET; the server, which keeps the original scope, sends the
            # headers (Content-Length included) and drops the body, as HEAD requires.
            scope = {**scope, "method": "GET"}
        await self.app(scope, receive, timed)

    def _authorized(self, scope: Scope) -> bool:
        assert self.token is not None
        supplied = b""
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, credentials = bytes(value).partition(b" ")
                if scheme.lower() == b"bearer":
                    supplied = credentials.strip()
        # Compared in full even when the header is missing, so timing tells nothing.
        return hmac.compare_digest(supplied, self.token) and bool(supplied)


class AnswerWhenCut:
    """A request still running when the stop's grace ends is cut (uvicorn cancels it): it
    gets the JSON 503 every temporary refusal gets (Retry-After), not a plain-text 500 and
    a traceback in the log. What it had already recorded stays; the rest is its caller's
    to retry."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except asyncio.CancelledError:
            if not started:
                response = error_response(503, "the server is stopping; try again")
                response.headers["Retry-After"] = "1"
                await response(scope, receive, send)


async def _domain_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, VoicefallbackError)
    if isinstance(exc, InputError):
        return error_response(400, one_line(exc))
    if exc.exit_code == 75 or isinstance(exc, StateUnreachable):
        # Busy (another process holds what this request needs) or the state database is
        # down: temporary, and not this server's fault.
        return error_response(503, one_line(exc))
    log.error("%s %s: %s", request.method, request.url.path, one_line(exc))
    return error_response(500, one_line(exc))


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own answers (404 unknown route, 405 wrong method) in the same shape."""
    assert isinstance(exc, StarletteHTTPException)
    response = error_response(exc.status_code, str(exc.detail))
    response.headers.update(exc.headers or {})
    return response


async def _bad_request(request: Request, exc: Exception) -> Response:
    """FastAPI's 422 list becomes the CLI's one line, as 400 like every other bad input."""
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first = errors[0] if errors else {}
    location = list(first.get("loc", ()))
    if location[:1] in (["query"], ["body"]):  # the parameter's name says enough
        location = location[1:]
    where = " ".join(str(part) for part in location)
    return error_response(400, f"{where}: {first.get('msg', 'invalid request')}")


def _openapi(app: FastAPI, router: AsyncSessionRouter, token: str | None) -> dict[str, Any]:
    """FastAPI's document, made truthful: bad input is 400 with one line (not 422); model ids
    are the registered ones (rebuilt after a reload); with a token, every route but /livez
    says so and may answer 401."""
    registry = router.registry
    cached = app.state.openapi
    if cached is not None and cached[0] is registry:
        return cached[1]  # type: ignore[no-any-return]
    schema = get_openapi(
        title="voicefallback",
        version=__version__,
        description="Probe LLMs, read their health, start voice sessions on a healthy model "
        "and list the fallbacks taken. Bodies are the CLI's --json documents.",
        routes=app.routes,
    )
    ids = [m.id for m in registry.models]
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorDocument"}}}
    for path, operations in schema["paths"].items():
        for operation in operations.values():
            responses = operation["responses"]
            if responses.pop("422", None) is not None:
                responses.setdefault(
                    "400", {"description": "Bad input; nothing written.", "content": error}
                )
            if token is not None and path not in UNAUTHENTICATED:
                operation["security"] = [{"bearer": []}]
                responses["401"] = {"description": "Missing or wrong bearer token."}
                responses["401"]["content"] = error
            for parameter in operation.get("parameters", []):
                if parameter["name"] in MODEL_PARAMETERS:
                    _only_models(parameter["schema"], ids)
            body = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if body is not None:
                properties = body["schema"]["properties"]
                _only_models(properties["primary"], ids)
                _only_models(properties["fallbacks"], ids)
    components = schema.setdefault("components", {})
    for name in ("HTTPValidationError", "ValidationError"):
        components.get("schemas", {}).pop(name, None)
    if token is not None:
        components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    app.state.openapi = (registry, schema)
    return schema


MODEL_PARAMETERS = frozenset({"model", "history", "require"})  # query parameters naming models


def _only_models(schema: dict[str, Any], ids: list[str]) -> None:
    """A string (or array of strings, or nullable string) that must be a registered id."""
    for option in schema.get("anyOf", [schema]):
        if option.get("type") == "array":
            option["items"] = {"type": "string", "enum": ids}
        elif option.get("type") == "string":
            option["enum"] = ids


async def _reload(router: AsyncSessionRouter, path: Path) -> None:
    """Swap in the new registry, or keep the old one and say why in one line."""
    try:
        registry = await asyncio.to_thread(load_registry, path)
    except VoicefallbackError as exc:
        log.error("models.toml not reloaded, the previous registry stays: %s", one_line(exc))
        return
    except Exception:  # a bug: say so, and keep serving on the previous registry
        log.exception("models.toml not reloaded, the previous registry stays")
        return
    router.reload(registry)
    log.info("models.toml reloaded: %d models from %s", len(registry.models), path)


async def watch_registry(router: AsyncSessionRouter, path: Path, hangup: asyncio.Event) -> None:
    """Reload on SIGHUP, or when the file changes (polled: works on every filesystem)."""
    seen = file_stamp(path)
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(hangup.wait(), RELOAD_POLL_S)
        asked = hangup.is_set()
        hangup.clear()
        current = file_stamp(path)
        if asked or current != seen:
            seen = current
            await _reload(router, path)


async def probe_loop(router: AsyncSessionRouter, every_s: float) -> None:
    """Probe every registered model now and every `every_s`, under the probe lock cron's
    `probe` takes too: when cron holds it, this round waits, or is skipped with one line."""
    from voicefallback.tables import status_change_lines

    while True:
        try:
            probed = await router.probe()
        except VoicefallbackError as exc:
            log.warning("scheduled probe skipped: %s", one_line(exc))
        except Exception:  # a bug: say so, and keep the schedule
            log.exception("scheduled probe failed")
        else:
            for line in status_change_lines(probed):
                log.info("%s", line)
        await asyncio.sleep(every_s)


def create_app(router: AsyncSessionRouter, settings: ServeSettings) -> FastAPI:
    """The app over an open router; the caller owns the router's lifetime."""
    from voicefallback.server.routes import api

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        hangup = asyncio.Event()
        loop = asyncio.get_running_loop()
        listening = False
        with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
            loop.add_signal_handler(signal.SIGHUP, hangup.set)  # main thread only
            listening = True
        tasks = [asyncio.create_task(watch_registry(router, settings.config, hangup))]
        if settings.probe_every_s is not None:
            tasks.append(asyncio.create_task(probe_loop(router, settings.probe_every_s)))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if listening:
                loop.remove_signal_handler(signal.SIGHUP)

    app = FastAPI(
        title="voicefallback",
        version=__version__,
        docs_url=None,  # Swagger UI loads from a CDN; the page stays self-contained
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.router = router
    app.state.settings = settings
    app.include_router(api)
    app.add_exception_handler(VoicefallbackError, _domain_error)
    app.add_exception_handler(RequestValidationError, _bad_request)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_middleware(AnswerWhenCut)
    app.add_middleware(EdgeMiddleware, token=settings.token)
    app.state.openapi = None
    app.openapi = lambda: _openapi(app, router, settings.token)  # type: ignore[method-assign]
    return app
