"""The local spool: what `start` would have written while the state database was out of
reach, kept in files under the state directory until a later command writes it in, once.

One file per write (calls, snapshots' thresholds, and the fallback event), named by a
unique id. Writing an entry in records that id in `spool_applied` in the same transaction,
so an entry found by several processes at once, or left behind by a crash between the
commit and the unlink, is still written exactly once.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import uuid
from collections.abc import Callable, Iterable, Mapping
from contextlib import suppress
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from voicefallback.config import Thresholds, display_location, user_state_dir
from voicefallback.errors import StateError, StateUnreachable
from voicefallback.records import (
    Candidate,
    FallbackEvent,
    ProbeResult,
    Snapshot,
    iso,
    parse_iso,
)
from voicefallback.store.base import SessionStore, SnapshotUpdate

_CALL_FIELDS = [f.name for f in fields(ProbeResult) if f.name != "text"]  # text is not stored


@dataclass(frozen=True)
class SpoolEntry:
    uid: str
    results: list[ProbeResult]
    limits: dict[str, Thresholds]
    event: FallbackEvent | None


class Spool:
    """The spool directory of one state location (created 0700 on first use)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @classmethod
    def for_location(cls, location: Path | str) -> Spool:
        """`<state dir>/spool/<hash of the location, password left out>/`."""
        key = hashlib.sha256(display_location(location).encode()).hexdigest()[:16]
        return cls(user_state_dir() / "spool" / key)

    def add(
        self,
        results: Iterable[ProbeResult],
        limits: Mapping[str, Thresholds],
        event: FallbackEvent | None,
        *,
        uid: str | None = None,
    ) -> None:
        """Keep one write, complete or not at all (a private file renamed into place)."""
        results = list(results)
        entry = {
            "uid": uid or uuid.uuid4().hex,
            "results": [_call_json(r) for r in results],
            "limits": {r.model: asdict(limits[r.model]) for r in results},
            "event": _event_json(event) if event is not None else None,
        }
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            final = self.directory / f"{entry['uid']}.json"
            partial = self.directory / f".{entry['uid']}.{secrets.token_hex(4)}.tmp"
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(entry, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(partial, final)
        except OSError as exc:
            raise StateError(
                f"{self.directory}: cannot spool what the unreachable state would have been"
                f" given: {exc.strerror}"
            ) from None

    def pending(self) -> list[Path]:
        """Entries not written in yet, oldest first."""
        try:
            entries = [p for p in self.directory.iterdir() if p.suffix == ".json"]
        except OSError:  # no spool yet (the usual case)
            return []
        return sorted(entries, key=lambda p: (_mtime(p), p.name))

    def drain(
        self, write: Callable[[SpoolEntry, SnapshotUpdate], bool], update: SnapshotUpdate
    ) -> int:
        """Write every pending entry in through `write(entry, update)` (returns whether it
        was new), removing each file once committed; how many were new."""
        written = 0
        for path in self.pending():
            try:
                entry = _load(path)
            except FileNotFoundError:
                continue  # another process wrote it in and removed it meanwhile
            if write(entry, update):
                written += 1
            with suppress(FileNotFoundError):
                path.unlink()
        return written


def _mtime(path: Path) -> float:
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
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
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
        return SpoolEntry(data["uid"], results, limits, event)
    except FileNotFoundError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StateError(f"{path}: a spooled write that cannot be read: {exc}") from None


class SpoolingStore:
    """`start`'s store when the state may be out of reach: reads snapshots when it can, and
    keeps what it cannot write in the spool (then `degraded` is true).

    With no store at all (it could not be opened), every model reads as never checked, so
    the choice rests on just-in-time probes alone.
    """

    def __init__(
        self,
        inner: SessionStore | None,
        spool: Spool,
        write_id: str | None = None,
        interrupted: Callable[[], bool] | None = None,
    ) -> None:
        self._inner = inner
        self._spool = spool
        self._write_id = write_id  # the write's id, if it may be tried twice (see record)
        # Whether the start it writes for was interrupted (Ctrl-C, SIGTERM) while this ran on
        # a thread: then a write broken off is rolled back, not spooled to be written later.
        self._interrupted = interrupted or (lambda: False)
        self.degraded = inner is None
        self.reason: str | None = None  # why it went out of reach mid-session

    def record(
        self,
        results: Iterable[ProbeResult],
        limits: Mapping[str, Thresholds],
        event: FallbackEvent | None = None,
        *,
        update: SnapshotUpdate,
        once: str | None = None,
    ) -> list[tuple[ProbeResult, Snapshot]]:
        results = list(results)
        uid = self._write_id or uuid.uuid4().hex
        if self._inner is not None and not self.degraded:
            try:
                return self._inner.record(results, limits, event, update=update, once=uid)
            except StateUnreachable as exc:
                # Lost mid-write: if the commit did happen after all, `uid` is in the state
                # with it and the spooled copy is skipped when it is written in.
                self.degraded, self.reason = True, str(exc)
        if self._interrupted():
            raise StateUnreachable("interrupted: nothing written")
        self._spool.add(results, limits, event, uid=uid)
        snapshots: dict[str, Snapshot] = {}
        recorded = []
        for result in results:
            snapshots[result.model] = update(
                snapshots.get(result.model), result, limits[result.model]
            )
            recorded.append((result, snapshots[result.model]))
        return recorded

    def snapshots(self, models: Iterable[str] | None = None) -> dict[str, Snapshot]:
        if self._inner is None or self.degraded:
            return {}
        try:
            return self._inner.snapshots(models)
        except StateUnreachable as exc:
            self.degraded, self.reason = True, str(exc)
            return {}
