"""The store as an event loop sees it: called inline, or on one worker thread of its own."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from voicefallback.config import DEFAULT_CONNECT_TIMEOUT_S
from voicefallback.store import Store, open_store

T = TypeVar("T")


class StoreWorker:
    """Runs store work for coroutines.

    A command (`threaded=False`) runs it inline: nothing else shares its loop, and a signal
    must be able to interrupt a wait for the write lock. A library router or `serve`
    (`threaded=True`) runs it on one dedicated thread, so their loop (a voice worker's audio)
    never waits on a disk or a lock; one thread also keeps the connection single-threaded.
    The store is opened on first use, where it will be used.
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

    async def run(self, work: Callable[[Store], T]) -> T:
        if self._thread is None:
            return self._call(work)
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._call, work)

    def _call(self, work: Callable[[Store], T]) -> T:
        if self._store is None:
            self._store = open_store(
                self.location, write=True, connect_timeout_s=self._connect_timeout_s
            )
        return work(self._store)

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
