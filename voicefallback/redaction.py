"""The one place that removes secrets from text before it is stored, printed or logged."""

from __future__ import annotations

import re
from collections.abc import Iterable

from voicefallback.errors import InputError

REDACTED = "[REDACTED]"

# A configured key shorter than this (`x`, `none`: set for local servers that need no key) is
# redacted only as a whole token: replaced everywhere, it would garble every word holding it.
SHORT_KEY = 8

_KEY_SHAPED = re.compile(
    r"""
    (?<![A-Za-z0-9])(?:sk-ant-|sk-|gsk_|xai-)[A-Za-z0-9_\-.*]{6,}   # sk-…, sk-ant-…, Groq, xAI
    | (?<=[Bb]earer\ )[A-Za-z0-9._~+/=\-*]{4,}                      # Authorization: Bearer …
    | (?<=://)[^/\s:@]+:[^/\s@]+(?=@)                               # user:password@ in a URL
    """,
    re.VERBOSE,
)

# A query parameter that carries a credential (`?token=…`, `&api-key=…`): its value goes,
# whatever it looks like.
_QUERY_SECRET = re.compile(
    r"([?&;](?:token|key|api[_-]?key|access[_-]?token|auth|password)=)[^&;#\s\"']*", re.IGNORECASE
)


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """`text` without the literal `secrets`, credential query parameters, and anything shaped
    like an API key.

    Configured keys go longest first, so no key's tail survives another's replacement; blank
    values are no key; a key shorter than SHORT_KEY goes only where it stands as a token.
    """
    for secret in sorted({s for s in secrets if s and s.strip()}, key=len, reverse=True):
        if len(secret) >= SHORT_KEY:
            text = text.replace(secret, REDACTED)
        else:
            token = rf"(?<![\w-]){re.escape(secret)}(?![\w-])"
            text = re.sub(token, REDACTED, text)
    text = _QUERY_SECRET.sub(lambda match: match.group(1) + REDACTED, text)
    return _KEY_SHAPED.sub(REDACTED, text)


def is_secret(value: str, secrets: Iterable[str | None]) -> bool:
    """`value` is one of the configured secrets, or shaped like a key: it would be stored or
    shown redacted, so a caller-supplied id like it is refused rather than kept."""
    return any(value == s for s in secrets if s and s.strip()) or redact(value) != value


def refuse_secret(value: str, where: str, secrets: Iterable[str | None]) -> None:
    """A caller-supplied id is stored and shown as given: one that is a configured key or the
    bearer token, or shaped like a key, is refused, in a message that does not repeat it."""
    if is_secret(value, secrets):
        raise InputError(
            f"{where}: looks like an API key or the bearer token; refused, so it is never "
            "stored or shown (pick another id)"
        )
