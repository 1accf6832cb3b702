"""Spans of time as people type them (`90s`, `15m`, `24h`, `7d`) and ages as people read them."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from voicefallback.errors import InputError
from voicefallback.records import parse_iso

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
# Longer spans are typos, and dates that far back (or a sleep that long) overflow.
MAX_DAYS = 36_500  # a century
MAX_DURATION_S = MAX_DAYS * 86_400.0
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?|\.\d+)\s*([smhd]?)\s*\Z", re.IGNORECASE)


def parse_duration(text: str, where: str) -> float:
    """Seconds in `text`: a number of seconds, or a number with s, m, h or d."""
    match = _DURATION.match(text)
    if match is None:
        raise InputError(f"{where}: not a duration: {text!r} (e.g. 90s, 15m, 24h, 7d)")
    seconds = float(match.group(1)) * _UNITS[(match.group(2) or "s").lower()]
    if seconds <= 0:
        raise InputError(f"{where}: duration must be more than zero, got {text!r}")
    if seconds > MAX_DURATION_S:  # also catches 400 digits, which float() makes infinite
        raise InputError(f"{where}: duration must be at most {MAX_DAYS}d (100 years), got {text!r}")
    return seconds


def parse_since(text: str, now: datetime, where: str = "--since") -> datetime:
    """An ISO-8601 time, or a duration meaning that long before `now`."""
    if _DURATION.match(text):
        return now - timedelta(seconds=parse_duration(text, where))
    try:
        return parse_iso(text)
    except ValueError:
        raise InputError(
            f"{where}: not an ISO-8601 time or a duration such as 1h: {text!r}"
        ) from None
    except OverflowError:  # a valid local time whose UTC lies outside year 1..9999
        raise InputError(f"{where}: time out of range: {text!r}") from None


def format_age(seconds: float) -> str:
    """A short, rounded-down age: `45s`, `12m`, `3h 20m`, `2d 4h`."""
    whole = max(0, int(seconds))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m"
    if whole < 86400:
        hours, minutes = divmod(whole // 60, 60)
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    days, hours = divmod(whole // 3600, 24)
    return f"{days}d {hours}h" if hours else f"{days}d"


def format_span(seconds: float) -> str:
    """A span as typed back to the user: `24h`, `15m`, `90s`."""
    for unit in ("d", "h", "m"):
        size = _UNITS[unit]
        if seconds >= size * (2 if unit == "d" else 1) and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"  # 24h, not 1d: hours read better up to 2d
    return f"{seconds:g}s"
