"""The store as an event loop sees it: called inline, or on one worker thread of its own."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from voicefallback.config import DEFAULT_CONNECT_TIMEOUT_S, is_database_url
from voicefallback.errors import StateUnreachable
from voicefallback.store import SessionStore, Store, open_store
from voicefallback.store.spool import Spool, SpoolingStore

T = TypeVar("T")
# After the state database could not be reached, sessions go straight to the spool for this
# long instead of each waiting connect_timeout_s for a server that is likely still away.
RETRY_AFTER_S = 10.0


class StoreWorker:
    """Runs store work for coroutines.

    A command (`threaded=False`) runs it inline: nothing else shares its loop, and a signal
    must be able to interrupt a wait for the write lock. A library router or `serve`
    (`threaded=True`) runs it on one dedicated thread, so their loop (a voice worker's audio)
    never waits on a disk or a lock; one thread also keeps the connection single-threaded.
    The store is opened on first use, where it will be used, and opened again after its
    database was lost.
    """

    def __init__(
        self,
        location: Path | str,
        *,
        threaded: bool,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
    ) -> None:
        self.location = location
        self._connect_timeout_s = connect_timeout_s
        self._store: Store | None = None
        self._thread = (
            ThreadPoolExecutor(1, thread_name_prefix="voicefallback-store") if threaded else None
        )
        # Only a database can be out of reach while the session goes on.
        self._spool = Spool.for_location(location) if is_database_url(location) else None
        self._retry_at = 0.0
        self._away = ""  # why the database was out of reach, while it is

    async def run(self, work: Callable[[Store], T]) -> T:
        if self._thread is None:
            return self._call(work)
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._call, work)

    async def run_session(self, work: Callable[[SessionStore], T]) -> tuple[T, str | None]:
        """`start`'s reads and writes: with the database out of reach, `work` reads no
        snapshots and its writes go to the local spool. Returns why it was degraded, if so."""
        if self._thread is None:
            return self._call_session(work)
        return await asyncio.get_running_loop().run_in_executor(
            self._thread, self._call_session, work
        )

    def _open(self) -> Store:
        if self._store is None:
            self._store = open_store(
                self.location, write=True, connect_timeout_s=self._connect_timeout_s
            )
        return self._store

    def _call(self, work: Callable[[Store], T]) -> T:
        try:
            return work(self._open())
        except StateUnreachable:
            self._close()  # a lost connection is not used again: the next call reconnects
            raise

    def _call_session(self, work: Callable[[SessionStore], T]) -> tuple[T, str | None]:
        if self._spool is None:
            return self._call(work), None
        store: Store | None = None
        why: str | None = self._away or None
        if time.monotonic() >= self._retry_at:
            try:
                store, why = self._open(), None
            except StateUnreachable as exc:
                why = str(exc)
        spooling = SpoolingStore(store, self._spool)
        value = work(spooling)
        if spooling.degraded:
            why = why or spooling.reason
            self._close()
        if why:
            self._away, self._retry_at = why, time.monotonic() + RETRY_AFTER_S
        else:
            self._away, self._retry_at = "", 0.0
        return value, why

    async def aclose(self) -> None:
        if self._thread is None:
            self._close()
            return
        await asyncio.get_running_loop().run_in_executor(self._thread, self._close)
        self._thread.shutdown(wait=True)

    def _close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
