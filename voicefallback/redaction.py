"""The one place that removes secrets from text before it is stored, printed or logged."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

from voicefallback.config import api_key

REDACTED = "[REDACTED]"

_KEY_SHAPED = re.compile(
    r"""
    (?<![A-Za-z0-9])(?:sk-ant-|sk-|gsk_|xai-)[A-Za-z0-9_\-.*]{6,}   # sk-…, sk-ant-…, Groq, xAI
    | (?<=[Bb]earer\ )[A-Za-z0-9._~+/=\-*]{4,}                      # Authorization: Bearer …
    | (?<=://)[^/\s:@]+:[^/\s@]+(?=@)                               # user:password@ in a URL
    """,
    re.VERBOSE,
)


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """`text` without the literal `secrets` and without anything shaped like an API key.

    Every configured key goes, however short (a garbled word is better than a leaked key),
    longest first, so no key's tail survives another's replacement; blank values are no key.
    """
    for secret in sorted({s for s in secrets if s and s.strip()}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return _KEY_SHAPED.sub(REDACTED, text)


def secrets_from_env(names: Iterable[str | None]) -> list[str]:
    """The configured keys: each named variable's value as sent (stripped, see config.api_key)
    and as set (with the whitespace around it), for variables that hold a key."""
    found: dict[str, None] = {}  # ordered, without repeats
    for name in names:
        key = api_key(name)
        if name and key is not None:
            found[os.environ[name]] = None
            found[key] = None
    return list(found)
