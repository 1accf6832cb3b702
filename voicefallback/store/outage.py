"""The outage policy, one for both backends: whether the state takes work now (up, busy,
away, back), where a write it did not take goes (the spool, else memory, else nowhere), and
the only place those writes are written back in, each once."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Literal

from voicefallback.environment import display_location
from voicefallback.errors import StateError
from voicefallback.store.base import SnapshotUpdate, Store
from voicefallback.store.spool import Spool, SpoolEntry, mtime

log = logging.getLogger("voicefallback.state")

Condition = Literal["up", "busy", "away", "back"]
# While the state is away, work goes straight to the spool and the state is tried again
# after this long (in the background, in a long-lived process: no start waits for it).
RETRY_AFTER_S = 10.0
MEMORY_LIMIT = 10_000  # writes kept in memory when not even the spool takes them


class Outage:
    """The state machine of one process's state.

    - up: the state takes work.
    - busy: it answers, but the owner's thread is held by long work (or a lock) past a
      start's wait; starts go on without it until the thread is free, then it is up again.
    - away: it failed or stopped answering (a database down, a file read-only, full,
      deleted, replaced or newer); writes are kept aside and it is tried again every
      RETRY_AFTER_S.
    - back: reached again; what was kept aside is being written in, then up.

    A long-lived process (`announce`) logs one line when the state goes away and one when it
    is back, never one per start. Transitions come from the owner's thread and its event
    loop alike, so they are made under a lock.
    """

    def __init__(self, location: Path | str, *, announce: bool) -> None:
        self.location = display_location(location)
        self.spool = Spool.for_location(location)
        self._announce = announce
        self._lock = threading.Lock()
        self._condition: Condition = "up"
        self._reason: str | None = None
        self._retry_at = 0.0
        self._memory: list[tuple[float, SpoolEntry]] = []  # (when kept, what)
        self._kept = True  # something may be kept aside (a crash or another process's spool)

    @property
    def condition(self) -> Condition:
        return self._condition

    @property
    def reason(self) -> str | None:
        """Why the state is not up, in one line; None when it is."""
        return self._reason

    @property
    def blocked(self) -> bool:
        """The state is away and not even the spool takes writes: they are held in memory,
        lost if the process stops before the state is back."""
        return self._condition == "away" and bool(self._memory)

    def due(self) -> bool:
        """Whether the state should be tried now: up or back, or away with a retry due (which
        is then claimed: the next one is RETRY_AFTER_S later)."""
        with self._lock:
            if self._condition != "away":
                return True
            if time.monotonic() < self._retry_at:
                return False
            self._retry_at = time.monotonic() + RETRY_AFTER_S
            return True

    def went_away(self, why: str, *, again: bool = False) -> None:
        """Away for `why`; with `again` (the same outage seen once more, say the call it
        broke off failing), an outage keeps the reason it was found by."""
        with self._lock:
            self._retry_at = time.monotonic() + RETRY_AFTER_S
            if again and self._condition in ("away", "back"):
                return
            changed = self._condition not in ("away", "back")
            self._condition, self._reason = "away", why
        if changed and self._announce:  # one line per outage, however its reason evolves
            log.warning("state away: %s; starts go on and keep their writes aside", why)

    def busy(self, why: str) -> None:
        with self._lock:
            if self._condition != "up":
                return
            self._condition, self._reason = "busy", why
        if self._announce:
            log.warning("state busy: %s; starts go on and keep their writes aside", why)

    def free(self) -> None:
        """The owner's thread caught up with the work that kept it busy."""
        with self._lock:
            if self._condition != "busy":
                return
            self._condition, self._reason = "up", None
        if self._announce:
            log.info("state up again: %s", self.location)

    def reached(self) -> None:
        """An away state opened again for writing: back, while what was kept aside is
        written in (`write_in`); up once the write that reached it is done, away again if
        it fails (one outage, one line)."""
        with self._lock:
            if self._condition == "away":
                self._condition = "back"

    def answered(self) -> None:
        """The state took work: up."""
        if self._condition == "up":
            return
        with self._lock:
            was = self._condition
            self._condition, self._reason = "up", None
        if was in ("away", "back") and self._announce:
            log.info("state back: %s", self.location)

    def keep(self, entry: SpoolEntry, why: str) -> str:
        """A write the state did not take: to the spool, else memory (a long-lived process),
        else nowhere. The one line saying what was not recorded, why, and where it went."""
        what = _what(entry)
        try:
            self.spool.add(entry)
        except StateError as exc:
            if not self._announce:
                return f"{what} not recorded: {why}; lost: {exc}"
            with self._lock:
                if len(self._memory) >= MEMORY_LIMIT:
                    return f"{what} not recorded: {why}; lost: {exc}, and memory is full"
                self._memory.append((time.time(), entry))
            self._kept = True  # after it is kept: a write_in under way either saw it or not
            return f"{what} not recorded: {why}; kept in memory until it is back ({exc})"
        self._kept = True
        return f"{what} not recorded: {why}; kept in the spool {self.spool.directory}"

    def write_in(self, store: Store, update: SnapshotUpdate) -> int:
        """Write what was kept aside in, oldest first, each exactly once (its id is kept
        with it); how many writes went in. Run before the state's next write, so history
        stays in order; the only place the spool is written in."""
        if not self._kept:
            return 0
        self._kept = False  # first: a write kept aside from now on is found by the next call
        with self._lock:
            held = list(self._memory)
        # The spool and memory merged by when each write was kept (a spool that failed
        # and came back may hold writes newer than those held in memory meanwhile).
        kept: list[tuple[float, Path | None, SpoolEntry]] = [
            (at, None, entry) for at, entry in held
        ]
        kept += [(mtime(path), path, entry) for path, entry in self.spool.entries()]
        written = 0
        for _, path, entry in sorted(kept, key=lambda item: item[0]):
            _record(store, entry, update)
            if path is not None:
                self.spool.remove(path)
            else:
                with self._lock:
                    self._memory = [m for m in self._memory if m[1] is not entry]
            written += 1
        if written and self._announce:
            log.info("state: %d write(s) kept aside written in, oldest first", written)
        return written

    def forget(self) -> int:
        """At close: how many writes held in memory are lost with the process."""
        with self._lock:
            lost, self._memory = len(self._memory), []
        if lost and self._announce:
            log.warning("state: %d write(s) held in memory were never recorded", lost)
        return lost


def _record(store: Store, entry: SpoolEntry, update: SnapshotUpdate) -> None:
    store.record(entry.results, entry.limits, entry.event, update=update, once=entry.uid)


def _what(entry: SpoolEntry) -> str:
    parts = []
    if entry.results:
        calls = len(entry.results)
        parts.append(f"{calls} call{'s' if calls != 1 else ''}")
    if entry.event is not None:
        parts.append("the fallback event")
    return " and ".join(parts) or "nothing"


def open_writer(location: Path | str, *, update: SnapshotUpdate, connect_timeout_s: float) -> Store:
    """The state opened for writing by a command (`probe`, `report`), with what degraded
    starts kept aside for it written in first, each once."""
    from voicefallback.store import open_store

    store = open_store(location, write=True, connect_timeout_s=connect_timeout_s)
    try:
        Outage(location, announce=False).write_in(store, update)
    except BaseException:
        store.close()
        raise
    return store
