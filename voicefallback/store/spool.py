"""The local spool: writes the state could not take (a database away, a file read-only or
full), kept as files under the user state dir until the outage policy writes them in, once.

One file per write (calls, their models' thresholds, the fallback event), named by the
write's unique id. Writing an entry in keeps that id in `spool_applied` in the same
transaction, so an entry found by several processes at once, or left behind by a crash
between the commit and the unlink, is still written exactly once.

An entry never blocks the others: one that cannot be read is moved aside to `unreadable/`
(one log line names it), one written by a newer voicefallback is left for it, and a
temporary file left by a crash between write and rename is finished or removed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import time
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from voicefallback.config import Thresholds
from voicefallback.environment import display_location, is_database_url, user_state_dir
from voicefallback.errors import StateError
from voicefallback.records import Candidate, FallbackEvent, ProbeResult, iso, parse_iso

log = logging.getLogger("voicefallback.state")

FORMAT = 1  # an entry's layout; a newer voicefallback writes a larger number
# A temporary file this old is not being written any more (a write takes milliseconds).
ABANDONED_AFTER_S = 60.0
_CALL_FIELDS = [f.name for f in fields(ProbeResult) if f.name != "text"]  # text is not stored
_EVENT_FIELDS = {f.name for f in fields(FallbackEvent)}
_THRESHOLD_FIELDS = {f.name for f in fields(Thresholds)}


@dataclass(frozen=True)
class SpoolEntry:
    """One write the state could not take: written in with `uid`, so only once."""

    uid: str
    results: list[ProbeResult]
    limits: dict[str, Thresholds]
    event: FallbackEvent | None


class NewerEntry(Exception):
    """An entry a newer voicefallback wrote: left in place for it."""


class Spool:
    """The spool directory of one state location (0700, like every directory above it that
    it creates)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @classmethod
    def for_location(cls, location: Path | str) -> Spool:
        """`<state dir>/spool/<hash of the location, password left out>/`; a file's by its
        absolute path, so that commands run from any directory find the same spool."""
        shown = display_location(location)
        if not is_database_url(location):
            shown = os.path.abspath(shown)
        key = hashlib.sha256(shown.encode()).hexdigest()[:16]
        return cls(user_state_dir() / "spool" / key)

    def add(self, entry: SpoolEntry) -> None:
        """Keep one write, complete or not at all (a private file renamed into place)."""
        document = {
            "format": FORMAT,
            "uid": entry.uid,
            "results": [_call_json(r) for r in entry.results],
            "limits": {r.model: asdict(entry.limits[r.model]) for r in entry.results},
            "event": _event_json(entry.event) if entry.event is not None else None,
        }
        try:
            _private_dirs(self.directory)
            final = self.directory / f"{entry.uid}.json"
            partial = self.directory / f".{entry.uid}.{secrets.token_hex(4)}.tmp"
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as handle:
                    json.dump(document, handle)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(partial, final)
            except BaseException:
                partial.unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise StateError(f"{self.directory}: cannot spool: {exc.strerror}") from None

    def pending(self) -> list[Path]:
        """Entries not written in yet, oldest first (temporary files left by a crash are
        finished or removed on the way)."""
        try:
            names = list(self.directory.iterdir())
        except OSError:  # no spool yet (the usual case)
            return []
        for path in names:
            if path.suffix == ".tmp":
                self._finish(path)
        entries = [p for p in self.directory.glob("*.json")]
        return sorted(entries, key=lambda p: (mtime(p), p.name))

    def entries(self) -> Iterator[tuple[Path, SpoolEntry]]:
        """Each readable pending entry, oldest first. One that cannot be read is moved
        aside; one from a newer version is skipped."""
        for path in self.pending():
            try:
                yield path, _load(path)
            except FileNotFoundError:
                continue  # another process wrote it in and removed it meanwhile
            except NewerEntry:
                continue
            except (OSError, ValueError, KeyError, TypeError) as exc:
                self._set_aside(path, exc)

    def remove(self, path: Path) -> None:
        path.unlink(missing_ok=True)

    def _finish(self, partial: Path) -> None:
        """A temporary file nobody writes any more: renamed into place when it holds a
        whole entry (it was fsynced before the rename a crash prevented), else removed."""
        if time.time() - mtime(partial) < ABANDONED_AFTER_S:
            return  # maybe still being written by another process
        try:
            uid = _load(partial).uid
        except NewerEntry:
            return
        except (OSError, ValueError, KeyError, TypeError):
            partial.unlink(missing_ok=True)
            return
        try:
            os.replace(partial, self.directory / f"{uid}.json")
        except OSError:
            partial.unlink(missing_ok=True)

    def _set_aside(self, path: Path, exc: BaseException) -> None:
        aside = self.directory / "unreadable"
        try:
            _private_dirs(aside)
            os.replace(path, aside / path.name)
            where = f"moved to {aside}"
        except OSError as error:
            where = f"and cannot be moved aside ({error.strerror}); skipped"
        log.warning("spooled write %s cannot be read (%s), %s", path, _why(exc), where)


def _why(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]


def _private_dirs(directory: Path) -> None:
    """Create `directory` and any missing parent 0700 (mkdir's mode covers only the last)."""
    missing = []
    for parent in (directory, *directory.parents):
        if parent.exists():
            break
        missing.append(parent)
    for parent in reversed(missing):
        with suppress(FileExistsError):  # made by another process meanwhile
            parent.mkdir(mode=0o700)


def mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _call_json(result: ProbeResult) -> dict[str, Any]:
    data = {name: getattr(result, name) for name in _CALL_FIELDS}
    data["at"] = iso(result.at)
    return data


def _event_json(event: FallbackEvent) -> dict[str, Any]:
    data = asdict(event)
    data["at"] = iso(event.at)
    data["candidates"] = [c.as_json() for c in event.candidates]
    return data


def _load(path: Path) -> SpoolEntry:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    if not isinstance(data.get("format", FORMAT), int) or data.get("format", FORMAT) > FORMAT:
        raise NewerEntry(path)
    if _unknown_fields(data):
        raise NewerEntry(path)  # a field this version does not know: a newer one wrote it
    results = [ProbeResult(**{**call, "at": parse_iso(call["at"])}) for call in data["results"]]
    limits = {model: Thresholds(**values) for model, values in data["limits"].items()}
    event = None
    if data["event"] is not None:
        raw = data["event"]
        event = FallbackEvent(
            **{
                **raw,
                "at": parse_iso(raw["at"]),
                "candidates": [Candidate(**c) for c in raw["candidates"]],
            }
        )
    return SpoolEntry(str(data["uid"]), results, limits, event)


def _unknown_fields(data: dict[str, Any]) -> bool:
    try:
        calls = data["results"]
        event = data["event"]
        return (
            any(set(call) - {*_CALL_FIELDS, "text"} for call in calls)
            or any(set(values) - _THRESHOLD_FIELDS for values in data["limits"].values())
            or (event is not None and bool(set(event) - _EVENT_FIELDS))
        )
    except (KeyError, TypeError, AttributeError):
        return False  # malformed: _load's own reading says how
