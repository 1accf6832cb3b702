"""The routes: the old service's four, health checks for the process, metrics, the page.

Each one parses, awaits the core (reads run in a worker thread) and answers with the CLI's
--json document, so a caller can switch between `voicefallback start --json` and HTTP.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, Response
from starlette.requests import ClientDisconnect

from voicefallback import documents
from voicefallback.documents import EVENTS_PAGE
from voicefallback.durations import format_span, parse_duration, parse_since
from voicefallback.environment import secrets_from_env
from voicefallback.errors import InputError, StateUnreachable, VoicefallbackError
from voicefallback.records import utcnow
from voicefallback.redaction import refuse_secret
from voicefallback.reports import read_board, read_event_page, read_health, read_history
from voicefallback.server import schemas
from voicefallback.server.responses import (
    ServeSettings,
    document_response,
    error_response,
    one_line,
)
from voicefallback.sessions import MAX_BODY_BYTES, parse_body
from voicefallback.stats import DEFAULT_WINDOW_CALLS, DEFAULT_WINDOW_SPAN_S, Window

if TYPE_CHECKING:
    from voicefallback.config import Registry
    from voicefallback.router import AsyncSessionRouter
    from voicefallback.store import Store


async def _known_parameters(request: Request) -> None:
    """A query parameter the route does not take is refused, naming it: a typo
    (`?chek=true`) or a parameter of another route would otherwise be answered as if it had
    not been asked (`/health/probe?check=true`: 200, unchecked)."""
    from fastapi.routing import APIRoute

    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    known: set[str] = set()
    pending = [route.dependant]
    while pending:  # the route's own parameters and those of its dependencies
        dependant = pending.pop()
        known.update(p.alias for p in dependant.query_params)
        pending.extend(dependant.dependencies)
    for name in request.query_params:
        if name not in known:
            takes = ", ".join(sorted(known)) or "none"
            raise InputError(f"{name}: unknown query parameter (this route takes: {takes})")


api = APIRouter(dependencies=[Depends(_known_parameters)])

T = TypeVar("T")
HISTORY_LIMIT = 20  # as `health --history` without --limit
# A page of /fallbacks is read whole into memory: the most one request may ask for.
MAX_EVENTS_PAGE = 1000
# A read route answers by then: a database that stopped answering is a 503, not a request
# that hangs (the status page on a second screen says so instead of spinning).
READ_DEADLINE_S = 10.0

BAD_INPUT: dict[int | str, dict[str, Any]] = {
    400: {"model": schemas.ErrorDocument, "description": "Bad input; nothing written."}
}
UNUSABLE: dict[int | str, dict[str, Any]] = {
    500: {"model": schemas.ErrorDocument, "description": "The state file cannot be used."},
    503: {
        "model": schemas.ErrorDocument,
        "description": "The state is busy past its wait, or its database cannot be reached; "
        "try again (Retry-After).",
    },
}


def _router(request: Request) -> AsyncSessionRouter:
    router: AsyncSessionRouter = request.app.state.router
    return router


def _settings(request: Request) -> ServeSettings:
    settings: ServeSettings = request.app.state.settings
    return settings


async def _read(request: Request, read: Callable[[Store], T]) -> T:
    """`read(store)` through the state's owner (its one thread and connection, shared with
    starts), for at most READ_DEADLINE_S: past it, 503 (busy, or away)."""
    owner = _router(request).owner
    return await owner.run(read, read_only=True, wait_s=READ_DEADLINE_S)


def _secrets(request: Request) -> list[str]:
    """The configured keys and the bearer token: what no caller-supplied id may be."""
    providers = _router(request).registry.providers.values()
    return [*secrets_from_env(p.api_key_env for p in providers), _settings(request).token or ""]


def _select(registry: Registry, ids: list[str] | None, where: str) -> list[str]:
    return [registry.require(model_id, where).id for model_id in dict.fromkeys(ids or [])]


# -- the old service's routes -----------------------------------------------------------

START_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["simulationId", "primary"],
                "properties": {
                    "simulationId": {"type": "string", "minLength": 1, "maxLength": 256},
                    "primary": {"type": "string", "description": "A registered model id."},
                    # primary's and fallbacks' enums: the registered ids, filled in per registry
                    "fallbacks": {
                        "type": "array",
                        "items": {"type": "string"},
                        "description": "Fallback model ids in order; default: every other "
                        "registered model, in registry order.",
                    },
                },
                "additionalProperties": True,
                "description": "The start request; every key reaches the opening call "
                "and comes back as agent.received_config. At most 256 KiB.",
            },
            "example": {
                "simulationId": "sim-auto",
                "primary": "anthropic:claude-3-5-sonnet-latest",
            },
        }
    },
}


def _as_body_error(exc: InputError) -> str:
    """The library's messages name its parameter `simulation_id`; a caller sent `simulationId`
    (the other names are the same in both)."""
    message = one_line(exc)
    if message.startswith("simulation_id:"):
        return "simulationId" + message.removeprefix("simulation_id")
    return message


async def _read_body(request: Request) -> bytes | None:
    """The body, or None when it is over the cap (read no further than the cap)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        return None
    received = bytearray()
    async for chunk in request.stream():  # bounded in time by serve's --read-timeout
        received += chunk
        if len(received) > MAX_BODY_BYTES:
            return None
    return bytes(received)


def _start_fields(body: dict[str, Any], registry: Registry) -> tuple[str, str, list[str]]:
    simulation_id = body.get("simulationId")
    if not isinstance(simulation_id, str):
        raise InputError(
            "simulationId: required" if simulation_id is None else "simulationId: must be a string"
        )
    primary = body.get("primary")
    if not isinstance(primary, str):
        raise InputError(
            "primary: required" if primary is None else "primary: must be a model id string"
        )
    fallbacks = body.get("fallbacks")
    if fallbacks is None:
        fallbacks = []
    if not isinstance(fallbacks, list) or not all(isinstance(m, str) for m in fallbacks):
        raise InputError("fallbacks: must be an array of model id strings")
    registry.require(primary, "primary")
    for model_id in fallbacks:
        registry.require(model_id, "fallbacks")
    return simulation_id, primary, fallbacks


@api.post(
    "/interviews/start",
    summary="Start a voice session on the primary, or on a healthy fallback",
    description="`voicefallback start --body BODY --json`. A fallback event is recorded when "
    "the session did not start on its primary, or could not start at all.",
    response_class=Response,
    responses={
        200: {"model": schemas.StartedDocument, "description": "Started (maybe on a fallback)."},
        503: {
            "model": schemas.NotStartedDocument | schemas.ErrorDocument,
            "description": "No model could be started (the start document, with `error` and "
            "`candidates`), or the state file is busy (`{error}`, Retry-After).",
        },
        413: {"model": schemas.ErrorDocument, "description": "Body over 256 KiB."},
        **BAD_INPUT,
        500: UNUSABLE[500],
    },
    openapi_extra={"requestBody": START_BODY},
)
async def start_interview(request: Request) -> Response:
    try:
        raw = await _read_body(request)
    except ClientDisconnect:  # gone, or cut off at --read-timeout (answered 408 already)
        return Response(status_code=408)
    if raw is None:
        return error_response(413, f"body larger than {MAX_BODY_BYTES // 1024} KiB")
    router = _router(request)
    try:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InputError("body: not UTF-8") from None
        body = parse_body(text, "body")
        simulation_id, primary, fallbacks = _start_fields(body, router.registry)
        refuse_secret(simulation_id, "simulationId", _secrets(request))
        outcome = await router.choose(
            simulation_id, primary, fallbacks, body=body, opening_call=True
        )
    except InputError as exc:
        return error_response(400, _as_body_error(exc))
    return document_response(documents.start_json(outcome), 200 if outcome.chosen else 503)


@api.post(
    "/health/probe",
    summary="Probe models now and record the results",
    description="`voicefallback probe --json`, under the probe lock that cron's `probe` takes too.",
    response_class=Response,
    responses={
        200: {"model": schemas.ProbeDocument, "description": "Probed and recorded."},
        503: {
            "model": schemas.ErrorDocument,
            "description": "Another probe holds the probe lock past its wait; try again.",
        },
        **BAD_INPUT,
        500: UNUSABLE[500],
    },
)
async def probe(
    request: Request,
    model: Annotated[
        list[str] | None,
        Query(description="Model ids to probe (repeat); default: every registered model."),
    ] = None,
) -> Response:
    router = _router(request)
    registry = router.registry
    selected = _select(registry, model, "model")
    started = utcnow()
    probed = await router.probe(selected or None)
    by_id = {m.id: m for m in registry.models}
    rows = [(by_id[p.result.model], p, p.status) for p in probed if p.result.model in by_id]
    return document_response(documents.probe_json(started, router.mode, rows))


@api.get(
    "/health",
    summary="Each model's health and what it rests on (no provider call)",
    description="`voicefallback health --json`, with the command's options as query "
    "parameters. With `check` or `require`, a model that is not healthy makes it 503 (the "
    "same document), for load balancers and deploy gates.",
    response_class=Response,
    responses={
        200: {
            "model": schemas.HealthDocument | schemas.HistoryDocument,
            "description": "The health document (or, with `history`, one model's history).",
        },
        503: {
            "model": schemas.HealthDocument | schemas.ErrorDocument,
            "description": "`check`/`require` failed (the health document), or the state "
            "file is busy (`{error}`, Retry-After).",
        },
        **BAD_INPUT,
        500: UNUSABLE[500],
    },
)
async def health(
    request: Request,
    model: Annotated[
        list[str] | None, Query(description="Model ids (repeat); default: every model.")
    ] = None,
    window: Annotated[
        int, Query(ge=1, le=100_000, description="Recent figures cover at most N calls...")
    ] = DEFAULT_WINDOW_CALLS,
    span: Annotated[
        str, Query(description="...within this span before now (30m, 24h, 7d).")
    ] = format_span(DEFAULT_WINDOW_SPAN_S),
    history: Annotated[
        str | None, Query(description="Instead, this model's recent calls and status changes.")
    ] = None,
    limit: Annotated[
        int | None, Query(ge=1, le=1_000_000, description="With history: at most N of each.")
    ] = None,
    since: Annotated[
        str | None, Query(description="With history: since this ISO time or span ago.")
    ] = None,
    check: Annotated[bool, Query(description="503 if any listed model is not healthy.")] = False,
    require: Annotated[
        list[str] | None, Query(description="503 if this model is not healthy (repeat).")
    ] = None,
) -> Response:
    router = _router(request)
    registry = router.registry
    recent = Window(calls=window, span_s=parse_duration(span, "span"))
    now = utcnow()
    if history is None and (limit is not None or since is not None):
        raise InputError("limit and since go with history=MODEL_ID")
    if history is not None:
        if model or require:
            raise InputError("history: shows one model; drop model and require")
        one = registry.require(history, "history")
        since_at = parse_since(since, now, "since") if since is not None else None
        past = await _read(
            request,
            lambda store: read_history(
                store,
                one,
                limit=limit or HISTORY_LIMIT,
                since=since_at,
                window=recent,
                now=now,
                mode=router.mode,
            ),
        )
        document = documents.history_json(past)
        # check: as `health --history M --check`, 503 unless the model is healthy
        return document_response(document, 503 if check and not document["ok"] else 200)
    # As the CLI: the listed models (default: all), then any required one not among them.
    listed = [registry.require(m, "model") for m in dict.fromkeys(model or [])]
    required = [registry.require(m, "require") for m in dict.fromkeys(require or [])]
    selected = listed or list(registry.models)
    selected += [m for m in required if m not in selected]
    report = await _read(
        request, lambda store: read_health(store, selected, recent, now, mode=router.mode)
    )
    document = documents.health_json(report)
    gated = [r for r in document["models"] if check or r["model"] in {m.id for m in required}]
    return document_response(document, 503 if any(not r["ok"] for r in gated) else 200)


@api.get(
    "/fallbacks",
    summary="Fallback events, newest first",
    description="`voicefallback fallbacks --json`.",
    response_class=Response,
    responses={200: {"model": schemas.EventsDocument, "description": "Events."}, **UNUSABLE},
)
async def fallbacks(
    request: Request,
    simulation_id: Annotated[
        str | None, Query(alias="simulationId", description="Only this session's events.")
    ] = None,
    since: Annotated[
        str | None, Query(description="Only events at or after this ISO time, or span ago.")
    ] = None,
    limit: Annotated[
        int,
        Query(ge=1, le=MAX_EVENTS_PAGE, description="At most N events (a page)."),
    ] = EVENTS_PAGE,
    before: Annotated[
        int | None,
        Query(ge=1, description="Only events older than this id: the last page's nextBefore."),
    ] = None,
) -> Response:
    since_at = parse_since(since, utcnow(), "since") if since is not None else None
    page = await _read(
        request, lambda store: read_event_page(store, simulation_id, since_at, limit, before)
    )
    return document_response(documents.events_json(page))


# -- for operators ------------------------------------------------------------------------


@api.get(
    "/metrics",
    summary="Prometheus text: every model's health and the fallback counters",
    description="`voicefallback health --format prometheus`.",
    response_class=PlainTextResponse,
    responses=UNUSABLE,
)
async def metrics(request: Request) -> Response:
    from voicefallback.metrics import prometheus_text

    router = _router(request)
    registry = router.registry
    now = utcnow()
    report = await _read(
        request,
        lambda store: read_health(
            store, registry.models, Window(), now, with_event_counts=True, mode=router.mode
        ),
    )
    return PlainTextResponse(
        prometheus_text(report), media_type="text/plain; version=0.0.4; charset=utf-8"
    )


@api.get(
    "/livez",
    summary="The process answers (no provider call, no read, no write; no token)",
    response_class=Response,
    responses={200: {"model": schemas.Liveness, "description": "Alive."}},
)
async def livez() -> Response:
    return document_response({"status": "ok"})


@api.get(
    "/readyz",
    summary="Ready to serve: registry loaded and starts can be recorded",
    response_class=Response,
    responses={
        200: {"model": schemas.Readiness, "description": "Ready."},
        503: {"model": schemas.Readiness, "description": "Not ready; `error` says why."},
    },
)
async def readyz(request: Request) -> Response:
    """Ready while starts can be recorded: the state takes writes, or a database is away
    and its writes are spooled. 503 (with the reason) when the state itself refuses them:
    read-only, full, deleted, replaced, newer, or not even the spool takes them."""
    router = _router(request)
    owner = router.owner
    document: dict[str, Any] = {
        "status": "ready",
        "mode": router.mode,
        "models": len(router.registry.models),
        "state": owner.state,
        "reason": owner.reason,
        "error": None,
    }
    with contextlib.suppress(VoicefallbackError):  # what it says is in owner.refusing
        await owner.check(wait_s=READ_DEADLINE_S)
    why = owner.refusing
    document.update(state=owner.state, reason=owner.reason)
    if why is None and owner.state == "busy":
        why = owner.reason
    if why is not None:
        document.update(status="unready", error=why)
        response = document_response(document, 503)
        response.headers["Retry-After"] = "1"  # as every 503 of a busy or away state
        return response
    return document_response(document)


@api.get(
    "/",
    summary="The status page (HTML, refreshes itself)",
    response_class=HTMLResponse,
    responses={
        500: UNUSABLE[500],
        503: {
            "content": {"text/html": {"schema": {"type": "string"}}},
            "description": "The state is busy or out of reach: a page that says so and keeps "
            "refreshing.",
        },
    },
)
async def status_page(request: Request) -> Response:
    from voicefallback.server.page import render_status_page, render_unavailable_page

    router = _router(request)
    status = 200
    try:
        models, now = router.registry.models, utcnow()
        board = await _read(request, lambda store: read_board(store, models, now, mode=router.mode))
    except VoicefallbackError as exc:
        if exc.exit_code != 75 and not isinstance(exc, StateUnreachable):
            raise
        page, status = render_unavailable_page(one_line(exc), utcnow()), 503
    else:
        page = render_status_page(board, router.mode)
    response = HTMLResponse(
        page,
        status_code=status,
        headers={
            # No script, nothing fetched: the strictest policy the page can live with.
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
            "img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            "Cache-Control": "no-store",
        },
    )
    if status == 503:
        response.headers["Retry-After"] = "1"  # as every 503 of a busy or away state
    return response
