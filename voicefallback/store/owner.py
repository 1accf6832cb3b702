"""The one owner of a process's state: the only async way in, on one thread of its own (or
inline, for a command whose loop has nothing else to do), under the outage policy."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from voicefallback.config import DEFAULT_CONNECT_TIMEOUT_S, Thresholds
from voicefallback.environment import display_location
from voicefallback.errors import StateBusy, StateError, StateMoved, StateUnreachable
from voicefallback.records import FallbackEvent, ProbeResult, Snapshot
from voicefallback.store import Store, open_store
from voicefallback.store.base import SnapshotUpdate
from voicefallback.store.outage import Condition, Outage, log
from voicefallback.store.spool import SpoolEntry

T = TypeVar("T")
CLOSE_WAIT_S = 0.5  # closing: how long a call in flight may finish before it is broken off


def _retrieved(future: asyncio.Future[Any]) -> None:
    """An abandoned call's outcome is awaited by no one: retrieve it, unlogged."""
    if not future.cancelled():
        future.exception()


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


class StateOwner:
    """Reads and writes of the state for coroutines.

    A command (`threaded=False`) runs them inline: nothing else shares its loop, and a
    signal must be able to interrupt a wait for a lock. A library router or `serve`
    (`threaded=True`) runs them on one thread of the owner's, so their loop (a voice
    worker's audio) never waits on a lock or a network, and one connection serves them all.

    A session's own reads and writes (`snapshots`, `record`) never fail for a fault of the
    state: a start waits for the thread at most connect_timeout_s, and what could not be
    written is kept aside by the outage policy, which says where in one line. A command's
    lone start (`alone`) waits as long as the state answers, and is refused (exit 2) only
    when the state cannot even be read (not ours, newer, unreadable).

    `update` is the snapshot rule (health.apply_probe), handed in so that storage does not
    depend on how health is judged.
    """

    def __init__(
        self,
        location: Path | str,
        *,
        update: SnapshotUpdate,
        threaded: bool,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        alone: bool = False,
    ) -> None:
        self.location = location
        self._update = update
        self._wait_s = connect_timeout_s
        self._alone = alone
        self._thread = (
            ThreadPoolExecutor(1, thread_name_prefix="voicefallback-state") if threaded else None
        )
        self._spooler: ThreadPoolExecutor | None = None
        self._long_lived = threaded and not alone
        self.outage = Outage(location, announce=self._long_lived)
        self._store: Store | None = None  # opened, used and closed on the thread only
        self._opened = False  # a file once open and then deleted is not made again
        self._last_error: StateError | None = None
        self._remembered: dict[str, Snapshot] = {}  # a long-lived process's last read
        self._busy_until: Future[None] | None = None  # done once the thread caught up
        self._reaching: Future[None] | None = None  # trying an away state in the background
        self._stopping = False  # a stop has begun: a session's write waits less (stop_waiting)
        self._closed = False

    # -- what callers see -----------------------------------------------------------------

    @property
    def state(self) -> Condition:
        """up, busy, away or back. Cheap (no I/O): an away state's retry, when due, is
        started in the background, so that a process asked only this (/readyz) still
        finds the state back."""
        self._unusable()
        return self.outage.condition

    @property
    def reason(self) -> str | None:
        """Why the state is not up, in one line."""
        return self.outage.reason

    @property
    def refusing(self) -> str | None:
        """Why starts cannot be recorded where they should be, or None: the state is away
        for a fault of its own (read-only, full, replaced, newer), or a database is away
        and not even the spool takes its writes. /readyz turns it into 503."""
        if self.state != "away":
            return None
        if isinstance(self._last_error, StateUnreachable) and not self.outage.blocked:
            return None  # a database outage: starts go on, their writes spooled
        return self.outage.reason

    async def snapshots(self, model_ids: Iterable[str]) -> tuple[dict[str, Snapshot], str | None]:
        """The models' snapshots, and why they are not the state's, if so (then a
        long-lived process gets the ones it last read, a command none). Never raises for
        a fault of the state, except a lone start's state that cannot even be read."""
        ids = list(model_ids)
        why = self._unusable()
        if why is None:
            try:
                found = await self._call(
                    lambda: self._read_snapshots(ids), self._patience(), writes=False
                )
            except StateError as exc:
                if self._alone and exc.exit_code == 2:
                    raise  # not even readable: configuration, said before any call is spent
                why = _one_line(exc)
            else:
                if self._long_lived:
                    self._remembered.update(found)
                return found, None
        remembered = {m: s for m, s in self._remembered.items() if m in ids}
        basis = "the snapshots last read and " if remembered else ""
        return remembered, f"state not read: {why}; decided on {basis}just-in-time probes"

    async def record(
        self,
        calls: Iterable[ProbeResult],
        limits: Mapping[str, Thresholds],
        event: FallbackEvent | None = None,
    ) -> str | None:
        """Write the calls and the optional event once. Never raises for a fault of the
        state: None when recorded, else one line naming what was not recorded, why, and
        where it went (the spool, memory, nowhere)."""
        results = list(calls)
        if not results and event is None:
            return None
        entry = SpoolEntry(
            uuid.uuid4().hex, results, {r.model: limits[r.model] for r in results}, event
        )
        why = self._unusable()
        if why is None:
            try:
                await self._call(lambda: self._write(entry), self._patience())
                return None
            except StateError as exc:
                why = _one_line(exc)
            except asyncio.CancelledError:
                if self._long_lived:
                    # Cut by a stop (`serve`'s grace ended): what finished is kept, on the
                    # loop (one small local file); if the write went in after all, its id
                    # keeps it once. A command cut by Ctrl-C keeps nothing, as inline.
                    self.outage.keep(entry, "the process stopped before it was written")
                raise
        if self._thread is None or self._closed:
            return self.outage.keep(entry, why)  # (closed: its spool thread is gone too)
        if self._spooler is None:
            # Local disk only: never queued behind the state's thread, nor the default
            # executor, which a caller's own blocking work may fill.
            self._spooler = ThreadPoolExecutor(1, thread_name_prefix="voicefallback-spool")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._spooler, self.outage.keep, entry, why)

    async def run(
        self,
        work: Callable[[Store], T],
        *,
        abandon: bool = False,
        wait_s: float | None = None,
        read_only: bool = False,
    ) -> T:
        """Any other work (reports, probe rounds, `serve`'s reads), raising the state's
        errors (StateUnreachable, StateBusy, StateFull: exit 75 / 503; others exit 2).

        With the state away it raises at once. `abandon`: give up on a state that stops
        answering within connect_timeout_s (keep waiting while it answers); `wait_s`: give
        up after that long whatever it does. `read_only` work never opens the state for
        writing (nothing is created): it uses the open state, else a reader of its own.
        """
        self._refuse_if_unusable()
        patience = wait_s if wait_s is not None else self._wait_s if abandon else None
        if read_only:
            reading = lambda: self._reading(work)  # noqa: E731
            return await self._call(reading, patience, hold_on=False, writes=False)
        return await self._call(lambda: work(self._open()), patience, hold_on=abandon)

    async def check(self, *, wait_s: float) -> None:
        """Open the state for writing if it is not open yet (that is what a start needs;
        nothing is written), raising its error as `run` does; /readyz asks this."""
        self._refuse_if_unusable()
        await self._call(self._open, wait_s, hold_on=False, writes=False)

    async def stop_waiting(self) -> None:
        """A stop has begun (`serve`'s SIGTERM): from now on a session's write waits for the
        state at most CLOSE_WAIT_S, and a call stuck on it now (a lock, a hung server) is
        broken off after that long, so that the writes still queued finish at once, kept
        aside where they cannot be written. Healthy writes still go in."""
        self._stopping = True
        if self._thread is None:
            return
        caught_up = asyncio.wrap_future(self._thread.submit(lambda: None))
        done, _ = await asyncio.wait({caught_up}, timeout=CLOSE_WAIT_S)
        if not done:
            self._break_off()

    async def aclose(self) -> None:
        """Close the state within about 2 * CLOSE_WAIT_S, whatever it does: a call still
        stuck on it is broken off. What is recorded after it is kept aside."""
        self._stopping = self._closed = True
        if self._thread is None:
            self._close()
            self.outage.forget()
            return
        if self.outage.condition == "away":
            self._break_off()  # a call still stuck on it would only delay the closing
        loop = asyncio.get_running_loop()
        closing = loop.run_in_executor(self._thread, self._close)
        done, _ = await asyncio.wait({closing}, timeout=CLOSE_WAIT_S)
        if not done:
            self._break_off()
            done, _ = await asyncio.wait({closing}, timeout=CLOSE_WAIT_S)
        if not done:
            closing.add_done_callback(_retrieved)
        self._thread.shutdown(wait=False, cancel_futures=True)
        if self._spooler is not None:
            self._spooler.shutdown(wait=True)  # local files: quick
        self.outage.forget()

    # -- the policy's decisions -------------------------------------------------------------

    def _patience(self) -> float | None:
        """How long a session's read or write waits for the thread (inline: no limit)."""
        if self._thread is None:
            return None
        return min(self._wait_s, CLOSE_WAIT_S) if self._stopping else self._wait_s

    def _free_if_caught_up(self) -> None:
        if self._busy_until is not None and self._busy_until.done():
            self._busy_until = None
            self.outage.free()

    def _unusable(self) -> str | None:
        """Why work should not go to the state now, or None. An away state is tried again
        when its retry is due: by a command itself, by a long-lived process in the
        background (no start waits for it)."""
        if self._closed:
            return "the state was closed (the process is stopping)"
        self._free_if_caught_up()
        if self._busy_until is not None:
            return self.outage.reason
        if not self.outage.due():
            return self.outage.reason
        if self.outage.condition == "away" and self._long_lived:
            if self._reaching is None or self._reaching.done():
                assert self._thread is not None
                self._reaching = self._thread.submit(self._reach)
            return self.outage.reason
        return None

    def _refuse_if_unusable(self) -> None:
        """Work other than a session's fails at once while the state is busy or away, with
        the error that made it so (its exit code: 75 for an outage, a full disk, a lock)."""
        why = self._unusable()
        if why is None:
            return
        error = self._last_error
        if self._busy_until is not None or error is None:
            raise StateBusy(why)
        raise type(error)(why)

    async def _call(
        self,
        fn: Callable[[], T],
        patience: float | None,
        *,
        hold_on: bool | None = None,
        writes: bool = True,
    ) -> T:
        """`fn` on the thread (or inline), waiting at most `patience`. Past it the state
        either stopped answering (away: the call is broken off, so the thread is free
        again) or answers and the thread is busy (busy, or waited for with `hold_on`)."""
        if self._thread is None:
            return self._guarded(fn, writes)
        hold_on = self._alone if hold_on is None else hold_on
        loop = asyncio.get_running_loop()
        handed = loop.run_in_executor(self._thread, self._guarded, fn, writes)
        try:
            if patience is None:
                return await handed
            while True:
                # asyncio.wait, not wait_for(shield()): one pass of the loop fewer between the
                # thread's answer and the caller, which under load is a start's whole wait.
                await asyncio.wait((handed,), timeout=patience)
                if handed.done():
                    return handed.result()
                if not (hold_on and self._answering()):
                    break
        except BaseException:
            if self._alone:
                # Ctrl-C or SIGTERM: as inline, the open transaction is rolled back now.
                self._break_off()
            handed.add_done_callback(_retrieved)
            raise
        handed.cancel()  # not run if not begun; if begun, its id keeps it written once
        handed.add_done_callback(_retrieved)
        where = display_location(self.location)
        store = self._store  # the one the stuck call uses: never one opened after this
        if store is None or not store.answering(self._wait_s):
            why = f"{where}: no answer within {self._wait_s:g} s"
            error: StateError = StateUnreachable(why)
            self._failed(error)
            if store is not None:
                store.break_off()
            raise error
        why = f"{where}: the state was busy for over {patience:g} s"
        assert self._thread is not None
        if self._busy_until is None:
            self._busy_until = self._thread.submit(lambda: None)
        self.outage.busy(why)
        raise StateBusy(why)

    def _answering(self) -> bool:
        store = self._store
        return store is not None and store.answering(self._wait_s)

    def _failed(self, exc: StateError) -> None:
        again = isinstance(exc, StateUnreachable) and self.outage.condition in ("away", "back")
        if not again:
            self._last_error = exc
        self.outage.went_away(_one_line(exc), again=again)

    # -- on the thread ----------------------------------------------------------------------

    def _guarded(self, fn: Callable[[], T], writes: bool) -> T:
        """`fn`, its outcome told to the outage policy. A read that succeeds shows only that
        the state answers (an outage is over), not that it takes writes again (a full disk
        or a read-only file): only a write does."""
        try:
            value = fn()
        except StateBusy:
            raise  # a lock held elsewhere past its wait: the state itself is fine
        except StateError as exc:
            if isinstance(exc, StateUnreachable | StateMoved):
                self._close()  # not used again: the next call reconnects, or reopens
            self._failed(exc)
            raise
        if writes or self._last_error is None or isinstance(self._last_error, StateUnreachable):
            self.outage.answered()
        return value

    def _open(self) -> Store:
        if self._store is None:
            self._store = open_store(
                self.location,
                write=True,
                connect_timeout_s=self._wait_s,
                create=not self._opened,
            )
            self._opened = True
        return self._store

    def _reading(self, work: Callable[[Store], T]) -> T:
        if self._store is not None:
            return work(self._store)
        with open_store(self.location, write=False, connect_timeout_s=self._wait_s) as reader:
            return work(reader)

    def _read_snapshots(self, ids: list[str]) -> dict[str, Snapshot]:
        try:
            return self._open().snapshots(ids)
        except (StateUnreachable, StateBusy):
            raise
        except StateError:
            # Not writable (read-only, full, gone): read it as it stands, if it can be.
            with open_store(self.location, write=False, connect_timeout_s=self._wait_s) as reader:
                return reader.snapshots(ids)

    def _write(self, entry: SpoolEntry) -> None:
        """What was kept aside first (history stays in order), then this write. A state
        replaced at the path is closed and the one there now used, if it is ours."""
        stale = self._store is not None  # open: it may no longer be the one at the path
        try:
            self._write_once(entry)
        except StateMoved as exc:
            if not stale:
                raise
            self._close()
            self._write_once(entry)
            log.warning("%s; writing into the state now at the path", _one_line(exc))

    def _write_once(self, entry: SpoolEntry) -> None:
        store = self._open()
        self.outage.reached()
        self.outage.write_in(store, self._update)
        store.record(entry.results, entry.limits, entry.event, update=self._update, once=entry.uid)

    def _reach(self) -> None:
        """An away state, tried again in the background: reached, what was kept aside is
        written in before the next start uses it."""
        with contextlib.suppress(StateError):  # still away: _guarded recorded why
            self._guarded(self._catch_up_with_kept, True)

    def _catch_up_with_kept(self) -> None:
        store = self._open()
        self.outage.reached()
        self.outage.write_in(store, self._update)

    def _close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    def _break_off(self) -> None:
        store = self._store
        if store is not None:
            store.break_off()
