"""What went wrong with a live call: its error kind (README "Health") from a status or stream."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from voicefallback.records import ErrorKind
from voicefallback.redaction import redact

MESSAGE_LIMIT = 300  # characters of a provider's message kept in a history row


@dataclass(frozen=True)
class Failure:
    """A classified failure: one of records.ERROR_KINDS plus what the provider said."""

    kind: ErrorKind
    message: str
    http_status: int | None = None
    retry_after_s: float | None = None


class StreamError(Exception):
    """The provider reported an error inside a 200 stream."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class Incomplete(Exception):
    """The body ended without the stream's proper end."""


def status_kind(status: int) -> ErrorKind:
    """The error kind (README "Health") for an HTTP error status."""
    if status == 429:
        return "rate_limited"
    if status in (503, 529):
        return "overloaded"
    if status >= 500:
        return "server_error"
    if status in (401, 403):
        return "auth"
    if status == 404:
        return "not_found"
    return "bad_request"


def status_failure(status: int, headers: Mapping[str, str] | None, message: str) -> Failure:
    return Failure(
        status_kind(status),
        f"HTTP {status}: {message}" if message else f"HTTP {status}",
        http_status=status,
        retry_after_s=retry_after(headers) if status in (429, 503, 529) else None,
    )


def retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait from `retry-after-ms` or `Retry-After` (seconds or an HTTP date)."""
    if not headers:
        return None
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value:
            try:
                return max(0.0, float(value) / scale)
            except ValueError:
                pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - datetime.now(UTC)).total_seconds())


def error_event_kind(kind: str, code: str = "") -> ErrorKind:
    """The kind for an error reported inside a stream, from its type or code."""
    words = f"{kind} {code}".lower()
    if "overload" in words or "unavailable" in words:
        return "overloaded"
    if "rate_limit" in words or "quota" in words:
        return "rate_limited"
    if "authentication" in words or "permission" in words or "api_key" in words:
        return "auth"
    if "not_found" in words:
        return "not_found"
    if "timeout" in words:
        return "timeout"
    if "invalid_request" in words or "too_large" in words or "billing" in words:
        return "bad_request"
    return "server_error"


def describe(exc: BaseException) -> str:
    """The exception and the causes under it, as one readable phrase."""
    parts = [f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__]
    seen = {str(exc)}
    cause = _cause(exc)
    for _ in range(5):
        if cause is None:
            break
        text = str(cause)
        if text and text not in seen:
            seen.add(text)
            parts.append(f"{type(cause).__name__}: {text}")
        cause = _cause(cause)
    return "; ".join(parts)


def _cause(exc: BaseException) -> BaseException | None:
    if exc.__cause__ is not None or exc.__suppress_context__:
        return exc.__cause__
    return exc.__context__


def one_line(text: str, secrets: Sequence[str] = ()) -> str:
    """Redacted (every configured key, longest first, before anything is cut), on one line,
    and short enough for a table cell and a history row."""
    flat = " ".join(redact(text, secrets).split())
    return flat if len(flat) <= MESSAGE_LIMIT else flat[: MESSAGE_LIMIT - 1] + "…"


def body_message(body: object, fallback: str) -> str:
    """What the server said in an error body the SDK kept: OpenAI and Anthropic put it in
    "message", FastAPI-style servers (vLLM, proxies) in "detail"; else the body itself."""
    if isinstance(body, Mapping):
        error = body.get("error")
        if isinstance(error, Mapping):
            body = error
        for key in ("message", "detail", "error"):
            value = body.get(key)
            if isinstance(value, str) and value.strip():
                return value.strip()
        if body:
            return json.dumps(body, ensure_ascii=False, default=str)
    if isinstance(body, str) and body.strip():
        return body.strip()
    return fallback
