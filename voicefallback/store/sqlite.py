"""The state in one SQLite file: the embedded default.

Writes are short `BEGIN IMMEDIATE` transactions made after any provider call has finished,
so many processes can share one file. Hot reads and writes are plain SQL, so read-only
commands do not pay for importing sqlite-utils (only migrations use it).
"""

from __future__ import annotations

import os
import random
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

from voicefallback.errors import StateError, StateMoved
from voicefallback.locking import probe_lock
from voicefallback.records import iso, utcnow
from voicefallback.store import statefile
from voicefallback.store.schema import APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION, newer_schema
from voicefallback.store.sql import SQLStore

WRITE_DEADLINE_S = 60.0  # give up on the lock after this long

_T = TypeVar("_T")


class SQLiteStore(SQLStore):
    """The state file. Reading a missing file behaves as empty state and creates nothing."""

    def __init__(
        self,
        path: Path,
        conn: sqlite3.Connection | None,
        held: tuple[int, int] | None = None,
    ) -> None:
        self.path = path
        self._conn = conn
        self._held = held  # counted in statefile while the connection is open
        self._patience_s = WRITE_DEADLINE_S  # how long a lock held elsewhere is waited for
        self._broken = False  # broken off from another thread: no more waiting for locks
        self._moved = False  # the path leads to another file than this one (or none)

    @classmethod
    def open(
        cls, path: Path, *, write: bool, any_thread: bool = False, create: bool = True
    ) -> SQLiteStore:
        """Open for reading (never creates anything) or for writing (creates the file,
        unless `create` is false: then a missing file is StateMoved).

        A file that is not ours, or is from a newer version, is refused from its header
        before SQLite touches it, so it stays byte-for-byte as it was, with no -wal or
        -shm files added beside it. `any_thread`: the store may be used on another thread
        than the one that opened it (one at a time).
        """
        path = Path(path)
        exists = statefile.check_file(path)
        if write and not create and not exists:
            raise StateMoved(
                f"{path}: the state file was deleted; nothing is written until a state"
                " file is back at that path"
            )
        if not write:
            if not exists:
                return cls(path, None)
            held = statefile.hold(path)
            try:
                conn, version = statefile.connect_readonly(path)
            except BaseException:
                statefile.release(held)
                raise
            if version == 0:  # another process is creating it right now: nothing yet
                conn.close()
                statefile.release(held)
                return cls(path, None)
            return cls(path, conn, held)
        statefile.check_writable(path)
        if not exists and not path.exists():
            statefile.create_new(path, lambda conn: cls(path, conn)._prepare_new())
            statefile.check_file(path)
        elif not exists:
            statefile.adopt_empty(path)
        store = cls(path, None, statefile.hold(path))
        try:
            store._conn = statefile.connect(path, any_thread=any_thread)
            store._prepare_for_writing()
        except BaseException:
            store.close()
            raise
        return store

    def close(self) -> None:
        if self._conn is not None:
            if self._moved:
                # Our log is still at the path (`state.db-wal`), beside another file: copied
                # into our own file and emptied first, so that the file now at the path
                # never replays it as its own (a backup restored with `mv` would be
                # corrupted by it).
                with suppress(sqlite3.Error):
                    self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            self._conn.close()
            self._conn = None
        if self._held is not None:
            statefile.release(self._held)
            self._held = None

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def without_waiting(self) -> SQLiteStore:
        """From now on a lock held elsewhere is reported at once (StateBusy) instead of
        waited for, and checkpoints are left to other connections (see `checkpoint`): for
        work done on an event loop, which must never wait. In WAL mode readers never wait
        for a writer, so only a write can find the file busy."""
        conn = self._require_conn()
        conn.execute("PRAGMA busy_timeout = 0")
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        self._patience_s = 0.0
        return self

    def uses_wal(self) -> bool:
        """Whether the file is in WAL mode. Without it (a filesystem that has no WAL), a
        reader can find the file busy and every commit syncs the disk."""
        with suppress(sqlite3.Error):
            mode = self._require_conn().execute("PRAGMA journal_mode").fetchone()[0]
            return str(mode).lower() == "wal"
        return False

    def checkpoint(self) -> None:
        """Copy the write-ahead log into the file (the next write then starts the log over),
        as SQLite does itself after a commit that a `without_waiting` connection makes.
        Never waits: with a reader in the way, as much is copied as can be now."""
        with suppress(sqlite3.Error):
            self._require_conn().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def answering(self, within_s: float) -> bool:
        return True  # a local file: a call that takes long waits for a lock (busy)

    def break_off(self) -> None:
        self._broken = True
        conn = self._conn
        if conn is not None:
            with suppress(sqlite3.ProgrammingError):  # closed meanwhile on its own thread
                conn.interrupt()  # safe from any thread; a statement running fails at once

    def _check_still_ours(self) -> None:
        if self._held is None:
            return  # a file being built under its private name (statefile.create_new)
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            self._moved = True
            raise StateMoved(f"{self.path}: the state file was deleted while in use") from None
        except OSError as exc:
            raise StateError(f"{self.path}: cannot check the state file: {exc.strerror}") from None
        if (info.st_dev, info.st_ino) != self._held:
            self._moved = True
            raise StateMoved(f"{self.path}: the state file was replaced while in use")
        version = int(self._require_conn().execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise newer_schema(self.path, version)

    def probe_lock(self, wait_s: float) -> AbstractContextManager[None]:
        """A `flock` beside the state file (see voicefallback.locking)."""
        return probe_lock(self.path, wait_s)

    def _prepare_new(self) -> None:
        self._enable_wal()
        self._migrate()

    def _prepare_for_writing(self) -> None:
        conn = self._require_conn()
        if self._retry_busy("open", lambda: statefile.user_version(conn)) == SCHEMA_VERSION:
            return
        self._prepare_new()

    def _enable_wal(self) -> None:
        """WAL lets readers work while one process writes; the mode persists in the file.

        Switching needs a moment alone with the file, so it is retried while others use it;
        a filesystem without WAL support keeps the rollback journal, which is still safe.
        """
        conn = self._require_conn()
        self._retry_busy("open", lambda: conn.execute("PRAGMA journal_mode=WAL").fetchone())

    def _migrate(self) -> None:
        import sqlite_utils

        conn = self._require_conn()
        db = sqlite_utils.Database(conn, execute_plugins=False)  # no third-party code here
        # Many processes may open a new file at once: the version is re-read under the
        # write lock, so each migration runs exactly once.
        with self._write():
            version = statefile.user_version(conn)
            conn.execute(
                "CREATE TABLE IF NOT EXISTS migrations (number INTEGER PRIMARY KEY,"
                " name TEXT NOT NULL, applied_at TEXT NOT NULL)"
            )
            for number, migration in enumerate(MIGRATIONS, start=1):
                if number > version:
                    migration(db)
                    conn.execute(
                        "INSERT INTO migrations (number, name, applied_at) VALUES (?, ?, ?)",
                        (number, migration.__name__.lstrip("_"), iso(utcnow())),
                    )
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    # -- what the queries run on ----------------------------------------------------------

    def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return self._require_conn().execute(sql, params).fetchall()

    def _run(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self._require_conn().execute(sql, params).rowcount

    def _run_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._require_conn().executemany(sql, rows)

    def _readable(self) -> bool:
        return self._conn is not None

    @contextmanager
    def consistent_read(self) -> Iterator[None]:
        """One read transaction: in WAL mode it sees one moment while writers go on."""
        if self._conn is None:
            yield
            return
        conn = self._conn
        with self._guard("read"):
            conn.execute("BEGIN")
        try:
            yield
        finally:
            with suppress(sqlite3.Error):
                conn.execute("COMMIT")

    def _schema_version(self) -> int:
        if self._conn is None:
            return 0
        with self._guard("read"):
            return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    # -- the file's own operations --------------------------------------------------------

    def vacuum(self) -> None:
        """Rewrite the file without its free pages, giving the space back to the disk.

        It holds the write lock while it runs (other writers wait), and needs free disk
        space about the size of the file.
        """
        conn = self._require_conn()
        self._retry_busy("vacuum", lambda: conn.execute("VACUUM"))
        with suppress(sqlite3.Error):  # readers may hold the WAL; it shrinks later then
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def size_bytes(self) -> int:
        """The file and its write-ahead log, as they take space on disk now."""
        total = 0
        for path in (self.path, statefile.side_file(self.path, "-wal")):
            with suppress(OSError):
                total += path.stat().st_size
        return total

    # -- plumbing -----------------------------------------------------------------------

    def _require_conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StateError(f"{self.path}: state file is not open for writing")
        return self._conn

    @contextmanager
    def _write(self) -> Iterator[None]:
        """One `BEGIN IMMEDIATE` transaction, retried whole while another writer holds the lock."""
        conn = self._require_conn()
        deadline = time.monotonic() + self._patience_s
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                break
            except sqlite3.OperationalError as exc:
                if not statefile.is_busy(exc) or time.monotonic() >= deadline or self._broken:
                    raise statefile.state_error(self.path, exc, "write", self._patience_s) from None
                time.sleep(random.uniform(0.005, 0.05))
        try:
            yield
            # Only in rollback-journal mode (no WAL on this filesystem) can COMMIT find
            # readers in the way; the transaction stays open and COMMIT can be retried.
            self._retry_busy("write", lambda: conn.execute("COMMIT"))
        except BaseException as exc:
            # Ctrl-C, SIGTERM (errors.Terminated) and errors alike: nothing of it is kept.
            if conn.in_transaction:
                with suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                waited = statefile.busy_timeout_s(conn)
                raise statefile.state_error(self.path, exc, "write", waited) from None
            raise

    def _retry_busy(self, action: str, operation: Callable[[], _T]) -> _T:
        """Run one statement, retrying while another process holds a lock it needs."""
        deadline = time.monotonic() + self._patience_s
        while True:
            try:
                return operation()
            except sqlite3.OperationalError as exc:
                if not statefile.is_busy(exc) or time.monotonic() >= deadline or self._broken:
                    raise statefile.state_error(self.path, exc, action, self._patience_s) from None
            time.sleep(random.uniform(0.005, 0.05))

    @contextmanager
    def _guard(self, action: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            waited = statefile.busy_timeout_s(self._conn)  # a reader's or a writer's connection
            raise statefile.state_error(self.path, exc, action, waited) from None
