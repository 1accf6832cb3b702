"""The store as an event loop sees it: called inline, or on one worker thread of its own
(with a start's SQLite read and write tried on the loop first, where they never wait)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from voicefallback.config import DEFAULT_CONNECT_TIMEOUT_S, display_location, is_database_url
from voicefallback.errors import StateBusy, StateError, StateUnreachable
from voicefallback.health import apply_probe
from voicefallback.store import SessionStore, Store, open_store
from voicefallback.store.spool import Spool, SpoolingStore
from voicefallback.store.sqlite import SQLiteStore

T = TypeVar("T")
# After the state database could not be reached, sessions go straight to the spool for this
# long instead of each waiting connect_timeout_s for a server that is likely still away.
RETRY_AFTER_S = 10.0
# A start's work done on the loop leaves checkpoints to the thread, one per this many calls:
# a start writes about 9 pages in 2 calls, so about SQLite's own 1,000 pages per checkpoint.
CHECKPOINT_EVERY = 200
CLOSE_WAIT_S = 1.0  # closing: how long a call in flight may finish before it is broken off


def _caught_up() -> None:
    """Queued behind the store thread's work: done when the thread has caught up."""


def _retrieved(future: asyncio.Future[Any]) -> None:
    """An abandoned call's outcome is not awaited by anyone: retrieve it, unlogged."""
    if not future.cancelled():
        future.exception()


class StoreWorker:
    """Runs store work for coroutines.

    A command (`threaded=False`) runs it inline: nothing else shares its loop, and a signal
    must be able to interrupt a wait for the write lock. A library router or `serve`
    (`threaded=True`) runs it on one dedicated thread, so their loop (a voice worker's audio)
    never waits on a lock or a network; one thread also keeps the connection single-threaded.

    SQLite, for speed under load: a start's own read and write of a file in WAL mode
    (`run_session`) are first tried on the loop, on a second connection that never waits for
    a lock (about 0.1 ms; in WAL mode a reader never waits for a writer). If the file is
    locked they go to the thread, which waits; the thread also does most of that
    connection's checkpoints (`_after_quick_call`). Each hand-off to the thread costs a
    start a pass of a busy loop, which under 50 concurrent starts was most of its time.

    PostgreSQL, for a server that stops answering: a start waits for the thread at most
    connect_timeout_s, then breaks the connection off and goes on without the database
    (`_session_on_database`); while it is away, starts spool off the thread and other work
    fails at once, and the thread tries to reach it again in the background.

    The stores are opened on first use, on the thread when there is one, and opened again
    after their database was lost.
    """

    def __init__(
        self,
        location: Path | str,
        *,
        threaded: bool,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        alone: bool = False,
    ) -> None:
        self.location = location
        # The one start of a command: while the database answers, a busy thread is waited for.
        self._alone = alone
        self._connect_timeout_s = connect_timeout_s
        self._store: Store | None = None
        self._thread = (
            ThreadPoolExecutor(1, thread_name_prefix="voicefallback-store") if threaded else None
        )
        # Only a database can be out of reach while the session goes on.
        self._spool = Spool.for_location(location) if is_database_url(location) else None
        self._retry_at = 0.0
        self._away = ""  # why the database was out of reach, while it is
        self._quick: SQLiteStore | None = None  # the loop's connection (threaded SQLite only)
        self._quick_calls = 0
        self._first_pass: Future[None] | None = None  # its checkpoint, on the thread
        self._retry: Future[None] | None = None  # reaching an away database again
        self._busy: Future[None] | None = None  # done once a thread too busy for starts is free
        self._spool_thread: ThreadPoolExecutor | None = None
        self._interrupted = False  # a lone start's wait was interrupted (Ctrl-C, SIGTERM)

    async def run(self, work: Callable[[Store], T], *, abandon: bool = False) -> T:
        """Store work other than a start's. With a database known to be away, it raises
        StateUnreachable at once; with `abandon`, also when the database does not answer
        within connect_timeout_s (the work may still be done when it answers)."""
        if self._thread is None:
            return self._call(work)
        loop = asyncio.get_running_loop()
        if self._spool is None:
            return await loop.run_in_executor(self._thread, self._call, work)
        if self._away:
            self._retry_soon()
            raise StateUnreachable(self._away)
        handed = loop.run_in_executor(self._thread, self._call, work)
        if not abandon:
            return await handed
        while True:  # it answers, the thread is only busy: a report may wait, until it stops
            try:
                return await asyncio.wait_for(asyncio.shield(handed), self._connect_timeout_s)
            except TimeoutError:
                stalled = self._stalled()
                if stalled is not None:
                    handed.add_done_callback(_retrieved)
                    raise StateUnreachable(stalled) from None

    async def run_session(self, work: Callable[[SessionStore], T]) -> tuple[T, str | None]:
        """`start`'s reads and writes: with the database out of reach, `work` reads no
        snapshots and its writes go to the local spool. Returns why it was degraded, if so."""
        if self._thread is None:
            return self._call_session(work)
        if self._spool is not None:
            return await self._session_on_database(work)
        quick = self._quick
        if quick is not None:
            try:
                value = work(quick)
            except StateBusy:
                pass  # it would have to wait for the lock: the thread waits instead
            else:
                self._after_quick_call(quick)
                return value, None
        return await asyncio.get_running_loop().run_in_executor(
            self._thread, self._call_session, work
        )

    async def _session_on_database(self, work: Callable[[SessionStore], T]) -> tuple[T, str | None]:
        """A start never waits on the store thread longer than connect_timeout_s.

        Past that, either the server stopped answering: the connection is broken off (the
        call under it fails at once) and the database counts as away until a retry in the
        background reaches it again. Or it answers and the thread is busy with a long piece
        of work (writing a large spool in, a probe's prune): starts go on without it until
        the thread is free (a command's lone start, `alone`, waits for it instead). Either
        way the start decides without the database and spools its write, off the thread.
        """
        loop = asyncio.get_running_loop()
        thread = self._thread
        assert thread is not None
        # One id wherever the write lands (the database late, the spool, both): written once.
        write_id = uuid.uuid4().hex
        why: str | None = self._away
        if not why and self._busy is not None and not self._busy.done():
            why = self._stalled() or self._busy_why
        if not why:
            handed = loop.run_in_executor(thread, self._call_session, work, write_id)
            try:
                while not why:
                    try:
                        return await asyncio.wait_for(
                            asyncio.shield(handed), self._connect_timeout_s
                        )
                    except TimeoutError:
                        why = self._stalled()
                        if why is None and not self._alone:
                            handed.cancel()  # not run if not begun; else `write_id` keeps it once
                            self._busy = thread.submit(_caught_up)  # done once the thread is free
                            why = self._busy_why
            except BaseException:
                if self._alone:
                    # Ctrl-C or SIGTERM (the command's task cancelled, or the exception itself):
                    # as inline, the open transaction is rolled back now, and nothing spooled.
                    self._interrupted = True
                    self._break_off()
                handed.add_done_callback(_retrieved)
                raise
            handed.add_done_callback(_retrieved)
        if self._away and not self._alone:
            self._retry_soon()
        return await loop.run_in_executor(self._spooler(), self._spooled, work, write_id), why

    def _spooler(self) -> ThreadPoolExecutor:
        """A thread of its own for spool writes (local disk only): never queued behind the
        store thread, nor behind the default executor's threads, which `serve`'s read routes
        may all have stuck on the same database."""
        if self._spool_thread is None:
            self._spool_thread = ThreadPoolExecutor(1, thread_name_prefix="voicefallback-spool")
        return self._spool_thread

    @property
    def _busy_why(self) -> str:
        return (
            f"{display_location(self.location)}: the state was busy for over"
            f" {self._connect_timeout_s:g} s"
        )

    def _stalled(self) -> str | None:
        """Past a start's wait: whether the server stopped answering (then it counts as away
        and the connection is broken off, so the thread is free again: a server that hangs
        would keep it for ever), and why; None if it answers and the thread is only busy."""
        store = self._store
        answered_at = getattr(store, "answered_at", None)  # PostgresStore's
        if answered_at is not None and time.monotonic() - answered_at < self._connect_timeout_s:
            return None
        why = f"{display_location(self.location)}: no answer within {self._connect_timeout_s:g} s"
        self._went_away(why)
        self._break_off()
        return why

    def _break_off(self) -> None:
        abort = getattr(self._store, "abort", None)  # PostgresStore's
        if abort is not None:
            abort()

    def _went_away(self, why: str) -> None:
        self._away, self._retry_at = why, time.monotonic() + RETRY_AFTER_S

    def _retry_soon(self) -> None:
        """While the database is away, try to reach it again every RETRY_AFTER_S, on the
        thread, in the background: no start waits for the attempt."""
        if time.monotonic() < self._retry_at or not (self._retry is None or self._retry.done()):
            return
        assert self._thread is not None
        self._retry_at = time.monotonic() + RETRY_AFTER_S
        self._retry = self._thread.submit(self._reach)

    def _reach(self) -> None:
        """Reach an away database again and write the spool in, before starts use it."""
        try:
            self._call(lambda store: store.write_spool_in(apply_probe))
        except StateUnreachable as exc:
            self._went_away(str(exc))
        except StateError:
            # Reached, but something else is wrong (a newer schema, say): no longer away,
            # so that the next start uses the thread again and says what.
            self._away, self._retry_at = "", 0.0
        else:
            # _retry_at too: a start that found it still set would not use the store.
            self._away, self._retry_at = "", 0.0

    def _spooled(self, work: Callable[[SessionStore], T], write_id: str) -> T:
        assert self._spool is not None
        return work(SpoolingStore(None, self._spool, write_id))

    def _after_quick_call(self, quick: SQLiteStore) -> None:
        """The loop's connection is checkpointed in two passes: most of the log on the
        thread while starts go on, then, on the loop between two starts, what they wrote
        meanwhile (nothing at a voice worker's pace, about 1 ms under full load), so that
        with no write of ours beside it the log starts over instead of growing."""
        self._quick_calls += 1
        if self._first_pass is not None:
            if self._first_pass.done():
                self._first_pass = None
                quick.checkpoint()
        elif self._quick_calls % CHECKPOINT_EVERY == 0:
            assert self._thread is not None
            self._first_pass = self._thread.submit(self._checkpoint)

    def _open(self) -> Store:
        if self._store is None:
            self._store = open_store(
                self.location, write=True, connect_timeout_s=self._connect_timeout_s
            )
            if self._thread is not None and isinstance(self._store, SQLiteStore):
                with contextlib.suppress(StateError):  # a speed-up only: the thread still works
                    quick = SQLiteStore.open(self._store.path, write=True, any_thread=True)
                    # Only in WAL mode is a commit made without syncing the disk; with a
                    # rollback journal, each would wait for the disk on the loop.
                    if quick.uses_wal():
                        self._quick = quick.without_waiting()
                    else:
                        quick.close()
        return self._store

    def _checkpoint(self) -> None:
        if isinstance(self._store, SQLiteStore):
            self._store.checkpoint()

    def _call(self, work: Callable[[Store], T]) -> T:
        try:
            return work(self._open())
        except StateUnreachable:
            self._close()  # a lost connection is not used again: the next call reconnects
            raise

    def _call_session(
        self, work: Callable[[SessionStore], T], write_id: str | None = None
    ) -> tuple[T, str | None]:
        if self._spool is None:
            return self._call(work), None
        store: Store | None = None
        why: str | None = self._away or None
        if time.monotonic() >= self._retry_at:
            try:
                store, why = self._open(), None
            except StateUnreachable as exc:
                why = str(exc)
        spooling = SpoolingStore(store, self._spool, write_id, lambda: self._interrupted)
        value = work(spooling)
        if spooling.degraded:
            why = why or spooling.reason
            self._close()
        if why:
            self._went_away(self._away or why)  # an outage keeps the reason it was found by
        else:
            self._away, self._retry_at = "", 0.0
        return value, why

    async def aclose(self) -> None:
        if self._thread is None:
            self._close()
            return
        quick = self._take_quick()
        if quick is not None:
            quick.close()  # on the loop that uses it; the thread's connection is still open
        if self._away:
            self._break_off()  # a call still stuck on it would only delay the closing
        closing = asyncio.get_running_loop().run_in_executor(self._thread, self._close)
        if self._spool is not None:  # a call stuck on a database that hangs is broken off
            try:
                await asyncio.wait_for(asyncio.shield(closing), CLOSE_WAIT_S)
            except TimeoutError:
                self._break_off()
        await closing
        self._thread.shutdown(wait=True)
        if self._spool_thread is not None:
            self._spool_thread.shutdown(wait=True)
        late = self._take_quick()
        if late is not None:  # opened by a start still on the thread when aclose began
            late.close()

    def _take_quick(self) -> SQLiteStore | None:
        quick, self._quick = self._quick, None
        return quick

    def _close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
