"""voicefallback: keep voice AI agents off dead or slow LLMs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = [
    "AsyncSessionRouter",
    "SessionReport",
    "SessionRouter",
    "StartOutcome",
    "VoicefallbackError",
    "__version__",
]

if TYPE_CHECKING:
    from voicefallback.errors import VoicefallbackError
    from voicefallback.evidence import SessionReport
    from voicefallback.router import AsyncSessionRouter, SessionRouter
    from voicefallback.sessions import StartOutcome

# Lazy, so `voicefallback --version` and read-only commands load nothing extra.
_HOMES = {
    "AsyncSessionRouter": "voicefallback.router",
    "SessionRouter": "voicefallback.router",
    "SessionReport": "voicefallback.evidence",
    "StartOutcome": "voicefallback.sessions",
    "VoicefallbackError": "voicefallback.errors",
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'voicefallback' has no attribute {name!r}")
