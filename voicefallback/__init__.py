"""voicefallback: keep voice AI agents off dead or slow LLMs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["SessionRouter", "StartOutcome", "VoicefallbackError", "__version__"]

if TYPE_CHECKING:
    from voicefallback.errors import VoicefallbackError
    from voicefallback.router import SessionRouter
    from voicefallback.sessions import StartOutcome


def __getattr__(name: str) -> Any:
    # Lazy, so `voicefallback --version` and read-only commands load nothing extra.
    if name == "SessionRouter":
        from voicefallback.router import SessionRouter

        return SessionRouter
    if name == "StartOutcome":
        from voicefallback.sessions import StartOutcome

        return StartOutcome
    if name == "VoicefallbackError":
        from voicefallback.errors import VoicefallbackError

        return VoicefallbackError
    raise AttributeError(f"module 'voicefallback' has no attribute {name!r}")
