"""What the app and its routes share: the settings `serve` started with, and response shapes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi.responses import Response

from voicefallback.redaction import redact


@dataclass(frozen=True)
class ServeSettings:
    """What `serve` was started with, resolved (paths, the token's value) beforehand."""

    config: Path  # models.toml, watched for changes
    db: Path | str  # a SQLite file or a postgresql:// URL
    token: str | None = None  # with a token, every route but /livez requires it
    probe_every_s: float | None = None
    read_timeout_s: float = 10.0  # a request's head and body must arrive within this


def document_response(document: dict[str, Any], status_code: int = 200) -> Response:
    """The CLI's --json bytes exactly: one object, not ASCII-escaped, then a newline."""
    from voicefallback.documents import json_text

    return Response(json_text(document), status_code=status_code, media_type="application/json")


def error_response(status_code: int, message: str) -> Response:
    """`{"error": "<one line>"}`, redacted like every error line the CLI prints."""
    response = document_response({"error": redact(" ".join(message.split()))}, status_code)
    if status_code == 503:
        response.headers["Retry-After"] = "1"
    return response


def one_line(exc: BaseException) -> str:
    return redact(" ".join(str(exc).split()))
