"""The SQLite state file: opening it safely, migrations, and every read and write.

All SQL lives here. Writes are short `BEGIN IMMEDIATE` transactions made after any
provider call has finished, so many processes can share one file. The schema is built
by numbered migrations (through sqlite-utils); hot reads and writes are plain SQL so
read-only commands do not pay for importing sqlite-utils.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import sqlite3
import stat
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from voicefallback.config import Thresholds
from voicefallback.errors import StateError
from voicefallback.health import apply_probe
from voicefallback.records import (
    Candidate,
    FallbackEvent,
    ProbeResult,
    Snapshot,
    StatusChange,
    iso,
    parse_iso,
    utcnow,
)

if TYPE_CHECKING:
    import sqlite_utils

APPLICATION_ID = 0x56464231  # "VFB1": marks a state file as ours
SQLITE_HEADER = b"SQLite format 3\x00"
# A writer waits for the lock in short SQLite waits and retries in Python between them, so
# Ctrl-C and SIGTERM are handled within a second even while another process writes.
BUSY_TIMEOUT_S = 1.0
READ_BUSY_TIMEOUT_S = 10.0  # readers in WAL mode almost never wait; when they do, let them
WRITE_DEADLINE_S = 60.0  # give up on the lock after this long
PRUNE_BATCH = 1000  # rows deleted per transaction, so a prune never holds the lock for long

_T = TypeVar("_T")


# -- migrations: append only, never edit one that has shipped -------------------------


def _m001_initial(db: sqlite_utils.Database) -> None:
    db.table("probes").create(
        {
            "id": int,
            "model": str,
            "at": str,
            "kind": str,
            "ok": int,
            "latency_ms": int,
            "ttft_ms": int,
            "error": str,
            "message": str,
            "http_status": int,
            "retry_after_s": float,
            "input_tokens": int,
            "output_tokens": int,
            "stub": int,
        },
        pk="id",
        not_null={"model", "at", "kind", "ok", "stub"},
    )
    db.table("probes").create_index(["model", "at"], index_name="probes_model_at")
    db.table("probes").create_index(["at"], index_name="probes_at")
    db.table("snapshots").create(
        {
            "model": str,
            "last_checked_at": str,
            "ok": int,
            "latency_ms": int,
            "ttft_ms": int,
            "last_error": str,
            "consecutive_failures": int,
            "consecutive_successes": int,
            "failing": int,
            "has_success": int,
            "success_latency_ms": int,
            "success_ttft_ms": int,
            "stub": int,
            "status_since": str,
            "last_status": str,
        },
        pk="model",
    )
    db.table("events").create(
        {
            "id": int,
            "uid": str,
            "at": str,
            "simulation_id": str,
            "primary_model": str,
            "chosen": str,
            "reason": str,
            "fallback_source": str,
            "candidates": str,  # JSON array of {model, status, error}
            "error": str,
        },
        pk="id",
        not_null={"uid", "at", "simulation_id", "primary_model", "reason", "candidates"},
    )
    db.table("events").create_index(["uid"], unique=True, index_name="events_uid")
    db.table("events").create_index(["simulation_id", "id"], index_name="events_simulation")
    db.table("events").create_index(["at"], index_name="events_at")


def _m002_operations(db: sqlite_utils.Database) -> None:
    """What `health` explains itself with, kept cheap to read on a large file."""
    # One row per change of a model's recorded verdict, so history needs no replay.
    db.execute(
        "CREATE TABLE status_changes (id INTEGER PRIMARY KEY, model TEXT NOT NULL,"
        " at TEXT NOT NULL, from_status TEXT, to_status TEXT NOT NULL, error TEXT)"
    )
    db.execute("CREATE INDEX status_changes_model_at ON status_changes (model, at)")
    db.execute(
        "INSERT INTO status_changes (model, at, from_status, to_status, error)"
        " SELECT model, status_since, NULL, last_status, last_error FROM snapshots"
        " WHERE last_status IS NOT NULL AND status_since IS NOT NULL"
    )
    # "Last error and its age" without walking a model's successes.
    db.execute("CREATE INDEX probes_failures ON probes (model, at) WHERE ok = 0")
    # Monotonic counters for Prometheus: pruning events never makes them go down.
    db.execute("CREATE TABLE event_counts (reason TEXT PRIMARY KEY, count INTEGER NOT NULL)")
    db.execute("INSERT INTO event_counts SELECT reason, count(*) FROM events GROUP BY reason")


MIGRATIONS: Sequence[Callable[[sqlite_utils.Database], None]] = (
    _m001_initial,
    _m002_operations,
)
SCHEMA_VERSION = len(MIGRATIONS)


# -- opening ----------------------------------------------------------------------------


class Store:
    """The state file. Reading a missing file behaves as empty state and creates nothing."""

    def __init__(self, path: Path, conn: sqlite3.Connection | None) -> None:
        self.path = path
        self._conn = conn

    @classmethod
    def open(cls, path: Path, *, write: bool) -> Store:
        """Open for reading (never creates anything) or for writing (creates the file).

        A file that is not ours, or is from a newer version, is refused from its header
        before SQLite touches it, so it stays byte-for-byte as it was, with no -wal or
        -shm files added beside it.
        """
        path = Path(path)
        exists = _check_file(path)
        if not write:
            if not exists:
                return cls(path, None)
            conn, version = _connect_readonly(path)
            if version == 0:  # another process is creating it right now: nothing yet
                conn.close()
                return cls(path, None)
            return cls(path, conn)
        _check_writable(path)
        if not exists and not path.exists():
            _create_new(path)
            _check_file(path)
        conn = _connect(path)
        store = cls(path, conn)
        try:
            store._prepare_for_writing()
        except BaseException:
            conn.close()
            raise
        return store

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _prepare_for_writing(self) -> None:
        conn = self._require_conn()
        if self._retry_busy("open", lambda: _user_version(conn)) == SCHEMA_VERSION:
            return
        self._enable_wal()
        self._migrate()

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
            version = _user_version(conn)
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

    # -- writes -------------------------------------------------------------------------

    def record(
        self,
        results: Iterable[ProbeResult],
        limits: Mapping[str, Thresholds],
        event: FallbackEvent | None = None,
    ) -> list[tuple[ProbeResult, Snapshot]]:
        """Write calls (history rows + snapshots) and an optional event in one transaction."""
        results = list(results)
        conn = self._require_conn()
        with self._write():
            updated = []
            for result in results:
                previous = self._snapshot(conn, result.model)
                conn.execute(
                    "INSERT INTO probes (model, at, kind, ok, latency_ms, ttft_ms, error, message,"
                    " http_status, retry_after_s, input_tokens, output_tokens, stub)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        result.model,
                        iso(result.at),
                        result.kind,
                        int(result.ok),
                        result.latency_ms,
                        result.ttft_ms,
                        result.error,
                        result.message,
                        result.http_status,
                        result.retry_after_s,
                        result.input_tokens,
                        result.output_tokens,
                        int(result.stub),
                    ),
                )
                if previous is not None and result.at < previous.last_checked_at:
                    # Older evidence committed late (a slow probe run finishing after a
                    # `start` recorded a newer call): history keeps it, the verdict does not.
                    updated.append((result, previous))
                    continue
                snapshot = apply_probe(previous, result, limits[result.model])
                conn.execute(
                    "INSERT OR REPLACE INTO snapshots (model, last_checked_at, ok, latency_ms,"
                    " ttft_ms, last_error, consecutive_failures, consecutive_successes, failing,"
                    " has_success, success_latency_ms, success_ttft_ms, stub, status_since,"
                    " last_status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        snapshot.model,
                        iso(snapshot.last_checked_at),
                        int(snapshot.ok),
                        snapshot.latency_ms,
                        snapshot.ttft_ms,
                        snapshot.last_error,
                        snapshot.consecutive_failures,
                        snapshot.consecutive_successes,
                        int(snapshot.failing),
                        int(snapshot.has_success),
                        snapshot.success_latency_ms,
                        snapshot.success_ttft_ms,
                        int(snapshot.stub),
                        iso(snapshot.status_since) if snapshot.status_since else None,
                        snapshot.last_status,
                    ),
                )
                if previous is None or previous.last_status != snapshot.last_status:
                    conn.execute(
                        "INSERT INTO status_changes (model, at, from_status, to_status, error)"
                        " VALUES (?, ?, ?, ?, ?)",
                        (
                            result.model,
                            iso(result.at),
                            previous.last_status if previous else None,
                            snapshot.last_status,
                            snapshot.last_error,
                        ),
                    )
                updated.append((result, snapshot))
            if event is not None:
                inserted = conn.execute(
                    "INSERT OR IGNORE INTO events (uid, at, simulation_id, primary_model, chosen,"
                    " reason, fallback_source, candidates, error)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        event.uid,
                        iso(event.at),
                        event.simulation_id,
                        event.primary,
                        event.chosen,
                        event.reason,
                        event.fallback_source,
                        json.dumps([c.as_json() for c in event.candidates]),
                        event.error,
                    ),
                )
                if inserted.rowcount == 1:  # a retried write of the same event counts once
                    conn.execute(
                        "INSERT INTO event_counts (reason, count) VALUES (?, 1)"
                        " ON CONFLICT (reason) DO UPDATE SET count = count + 1",
                        (event.reason,),
                    )
        return updated

    # -- reads --------------------------------------------------------------------------

    def snapshots(self, models: Iterable[str] | None = None) -> dict[str, Snapshot]:
        if self._conn is None:
            return {}
        with self._guard("read"):
            rows = self._conn.execute("SELECT * FROM snapshots").fetchall()
        wanted = set(models) if models is not None else None
        return {
            row["model"]: _snapshot_from_row(row)
            for row in rows
            if wanted is None or row["model"] in wanted
        }

    def events(
        self,
        simulation_id: str | None = None,
        since: datetime | None = None,
        limit: int | None = None,
    ) -> list[FallbackEvent]:
        """Fallback events, newest first."""
        if self._conn is None:
            return []
        where: list[str] = []
        params: list[str | int] = []
        if simulation_id is not None:
            where.append("simulation_id = ?")
            params.append(simulation_id)
        if since is not None:
            where.append("at >= ?")
            params.append(iso(since))
        sql = "SELECT * FROM events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(min(limit, 2**63 - 1))  # SQLite's integers stop there
        with self._guard("read"):
            rows = self._conn.execute(sql, params).fetchall()
        return [_event_from_row(row) for row in rows]

    # -- retention ----------------------------------------------------------------------

    def prune_probes(
        self,
        cutoffs: Mapping[str, datetime],
        default: datetime,
        *,
        max_rows: int | None = None,
    ) -> int:
        """Delete calls older than their model's cutoff, oldest first; return how many.

        `default` applies to models no longer in `cutoffs`. Each transaction deletes at most
        PRUNE_BATCH rows, so writers waiting for the lock are held up for milliseconds;
        `max_rows` bounds the whole run (a probe prunes a little every time). The status
        changes derived from those calls go by the same cutoffs, except each model's latest.
        """
        deleted = self._prune_history("probes", cutoffs, default, max_rows, keep_latest=False)
        self._prune_history("status_changes", cutoffs, default, max_rows, keep_latest=True)
        return deleted

    def _prune_history(
        self,
        table: str,
        cutoffs: Mapping[str, datetime],
        default: datetime,
        max_rows: int | None,
        *,
        keep_latest: bool,
    ) -> int:
        # `table` is one of ours, with an index on (model, at): every lookup is a seek.
        conn = self._require_conn()
        with self._guard("prune"):
            models = _models_in(conn, table)
        deleted = 0
        for model in models:
            cutoff = iso(cutoffs.get(model, default))
            with self._guard("prune"):
                keep = -1
                if keep_latest:
                    keep = conn.execute(
                        f"SELECT id FROM {table} WHERE model = ? ORDER BY at DESC, id DESC LIMIT 1",
                        (model,),
                    ).fetchone()[0]
                first = conn.execute(
                    f"SELECT at FROM {table} WHERE model = ? AND id != ? ORDER BY at LIMIT 1",
                    (model, keep),
                ).fetchone()
            if first is None or first[0] >= cutoff:
                continue
            deleted += self._delete_batches(
                f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table}"
                " WHERE model = ? AND at < ? AND id != ? ORDER BY at LIMIT ?)",
                (model, cutoff, keep),
                None if max_rows is None else max_rows - deleted,
            )
            if max_rows is not None and deleted >= max_rows:
                break
        return deleted

    def prune_events(self, cutoff: datetime) -> int:
        """Delete fallback events older than `cutoff`, in short transactions; return how many."""
        self._require_conn()
        return self._delete_batches(
            "DELETE FROM events WHERE id IN"
            " (SELECT id FROM events WHERE at < ? ORDER BY at LIMIT ?)",
            (iso(cutoff),),
            None,
        )

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
        for path in (self.path, _side_file(self.path, "-wal")):
            with suppress(OSError):
                total += path.stat().st_size
        return total

    def _delete_batches(self, sql: str, params: tuple[str | int, ...], max_rows: int | None) -> int:
        deleted = 0
        while max_rows is None or deleted < max_rows:
            batch = PRUNE_BATCH if max_rows is None else min(PRUNE_BATCH, max_rows - deleted)
            with self._write() as conn:
                gone = conn.execute(sql, (*params, batch)).rowcount
            deleted += gone
            if gone < batch:
                break
        return deleted

    # -- plumbing -----------------------------------------------------------------------

    def _require_conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StateError(f"{self.path}: state file is not open for writing")
        return self._conn

    @staticmethod
    def _snapshot(conn: sqlite3.Connection, model: str) -> Snapshot | None:
        row = conn.execute("SELECT * FROM snapshots WHERE model = ?", (model,)).fetchone()
        return _snapshot_from_row(row) if row else None

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One `BEGIN IMMEDIATE` transaction, retried whole while another writer holds the lock."""
        conn = self._require_conn()
        deadline = time.monotonic() + WRITE_DEADLINE_S
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                break
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() > deadline:
                    raise _state_error(self.path, exc, "write", WRITE_DEADLINE_S) from None
                time.sleep(random.uniform(0.005, 0.05))
        try:
            yield conn
            # Only in rollback-journal mode (no WAL on this filesystem) can COMMIT find
            # readers in the way; the transaction stays open and COMMIT can be retried.
            self._retry_busy("write", lambda: conn.execute("COMMIT"))
        except BaseException as exc:
            # Ctrl-C, SIGTERM (errors.Terminated) and errors alike: nothing of it is kept.
            if conn.in_transaction:
                with suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise _state_error(self.path, exc, "write", _busy_timeout_s(conn)) from None
            raise

    def _retry_busy(self, action: str, operation: Callable[[], _T]) -> _T:
        """Run one statement, retrying while another process holds a lock it needs."""
        deadline = time.monotonic() + WRITE_DEADLINE_S
        while True:
            try:
                return operation()
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() > deadline:
                    raise _state_error(self.path, exc, action, WRITE_DEADLINE_S) from None
            time.sleep(random.uniform(0.005, 0.05))

    @contextmanager
    def _guard(self, action: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            waited = _busy_timeout_s(self._conn)  # a reader's or a writer's connection
            raise _state_error(self.path, exc, action, waited) from None

    # -- reads for health explanations, history and metrics -------------------------------
    # Each one walks an index backwards under a LIMIT, or reads a table of a few rows, so its
    # cost does not grow with the history (tests/test_operations_store.py checks the plans).

    def recent_calls(
        self, model: str, *, limit: int, since: datetime | None = None
    ) -> list[ProbeResult]:
        """A model's calls (probes and session openings), newest first."""
        if self._conn is None:
            return []
        sql = "SELECT * FROM probes WHERE model = ?"
        params: list[str | int] = [model]
        if since is not None:
            sql += " AND at >= ?"
            params.append(iso(since))
        sql += " ORDER BY at DESC, id DESC LIMIT ?"
        params.append(limit)
        with self._guard("read"):
            rows = self._conn.execute(sql, params).fetchall()
        return [_call_from_row(row) for row in rows]

    def last_failure(self, model: str) -> ProbeResult | None:
        """The model's most recent failed call, however long ago."""
        if self._conn is None:
            return None
        # Served by the partial index probes_failures (schema 2), whatever the successes.
        with self._guard("read"):
            row = self._conn.execute(
                "SELECT * FROM probes WHERE model = ? AND ok = 0 ORDER BY at DESC, id DESC LIMIT 1",
                (model,),
            ).fetchone()
        return _call_from_row(row) if row else None

    def status_changes(
        self, model: str, *, limit: int, since: datetime | None = None
    ) -> list[StatusChange]:
        """Changes of the model's recorded verdict, newest first."""
        if self._conn is None or self._schema_version() < 2:
            return []
        sql = "SELECT * FROM status_changes WHERE model = ?"
        params: list[str | int] = [model]
        if since is not None:
            sql += " AND at >= ?"
            params.append(iso(since))
        sql += " ORDER BY at DESC, id DESC LIMIT ?"
        params.append(limit)
        with self._guard("read"):
            rows = self._conn.execute(sql, params).fetchall()
        return [
            StatusChange(
                model=row["model"],
                at=parse_iso(row["at"]),
                from_status=row["from_status"],
                to_status=row["to_status"],
                error=row["error"],
            )
            for row in rows
        ]

    def event_counts(self) -> dict[str, int]:
        """Fallback events ever recorded, by reason (not lowered by pruning events)."""
        if self._conn is None:
            return {}
        if self._schema_version() >= 2:
            sql = "SELECT reason, count FROM event_counts"
        else:
            sql = "SELECT reason, count(*) FROM events GROUP BY reason"
        with self._guard("read"):
            rows = self._conn.execute(sql).fetchall()
        return {row[0]: int(row[1]) for row in rows}

    def _schema_version(self) -> int:
        if self._conn is None:
            return 0
        with self._guard("read"):
            return int(self._conn.execute("PRAGMA user_version").fetchone()[0])


def _user_version(conn: sqlite3.Connection) -> int:
    """Check the file is ours and not from a newer version; return its schema version.

    The header was checked before opening; this sees what the WAL may hold beyond it.
    """
    application_id = conn.execute("PRAGMA application_id").fetchone()[0]
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    path = conn.execute("PRAGMA database_list").fetchone()[2]
    has_tables = application_id == 0 and bool(
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    )
    _refuse_foreign(path, application_id, version, has_tables)
    return int(version)


def _models_in(conn: sqlite3.Connection, table: str) -> list[str]:
    """Every model with rows in `table`, one index seek each (a loose index scan)."""
    models: list[str] = []
    row = conn.execute(f"SELECT min(model) FROM {table}").fetchone()
    while row[0] is not None:
        models.append(row[0])
        row = conn.execute(f"SELECT min(model) FROM {table} WHERE model > ?", (row[0],)).fetchone()
    return models


def _refuse_foreign(path: str | Path, application_id: int, version: int, has_tables: bool) -> None:
    if application_id == 0 and (version or has_tables):
        raise StateError(f"{path}: not a voicefallback state file (an unrelated SQLite database)")
    if application_id not in (0, APPLICATION_ID):
        raise StateError(
            f"{path}: not a voicefallback state file (application id {application_id:#x})"
        )
    if version > SCHEMA_VERSION:
        raise StateError(
            f"{path}: written by a newer voicefallback (schema {version}, this one knows"
            f" {SCHEMA_VERSION}); upgrade voicefallback to use it"
        )


def _check_file(path: Path) -> bool:
    """Refuse what is not our state file, from its header alone; False if there is none yet.

    The header holds the application id (offset 68), user_version (60) and the schema
    cookie (40, nonzero once any table exists). Ours sets all three in the transaction that
    creates the tables, so "tables but no application id" is someone else's database.
    """
    try:
        info = path.stat()
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise StateError(f"{path}: cannot use as state file: {exc.strerror}") from None
    if stat.S_ISDIR(info.st_mode):
        raise StateError(f"{path}: is a directory, expected a state file")
    if not stat.S_ISREG(info.st_mode):
        raise StateError(f"{path}: not a regular file, expected a state file")
    try:
        with open(path, "rb") as handle:
            header = handle.read(100)
    except PermissionError:
        raise StateError(f"{path}: state file is not readable (permission denied)") from None
    except OSError as exc:
        raise StateError(f"{path}: cannot read state file: {exc.strerror}") from None
    if not header:
        return False  # created an instant ago by another process, or by `touch`
    if len(header) < 100 or not header.startswith(SQLITE_HEADER):
        raise StateError(f"{path}: not a voicefallback state file (not SQLite)")
    _refuse_foreign(
        path,
        int.from_bytes(header[68:72], "big"),
        int.from_bytes(header[60:64], "big"),
        has_tables=int.from_bytes(header[40:44], "big") != 0,
    )
    return True


def _check_writable(path: Path) -> None:
    """Say which path cannot be written before any provider call is spent."""
    if path.exists() and not os.access(path, os.W_OK):
        raise StateError(f"{path}: state file is not writable (permission denied)")
    directory = path.parent
    if directory.is_dir() and not os.access(directory, os.W_OK | os.X_OK):
        # SQLite creates its -wal and -shm files beside the state file.
        raise StateError(f"{path}: cannot write: directory {directory} is not writable")


def _create_new(path: Path) -> None:
    """Create the state file complete, or not at all: directory 0700, file 0600 from birth.

    The file is built and migrated under a private name, then hard-linked into place; the
    link fails if another process got there first, and then theirs is used. Nobody ever
    sees a half-made file. Where hard links are not supported, the file is created empty
    in place and migrated under the write lock instead.
    """
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise StateError(f"{path}: cannot create state directory: {exc.strerror}") from None
    partial = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.new")
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise StateError(f"{path}: cannot create state file: {exc.strerror}") from None
    os.close(fd)
    try:
        conn = _connect(partial)
        try:
            store = Store(path, conn)  # errors name the real path
            store._enable_wal()
            store._migrate()
        finally:
            conn.close()  # checkpoints everything into the file and removes its -wal
        try:
            os.link(partial, path)
        except FileExistsError:
            pass  # another process created it first: use theirs
        except OSError:
            _create_empty(path)
    finally:
        for leftover in (partial, _side_file(partial, "-wal"), _side_file(partial, "-shm")):
            with suppress(OSError):
                leftover.unlink()


def _create_empty(path: Path) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise StateError(f"{path}: cannot create state file: {exc.strerror}") from None
    os.close(fd)


def _side_file(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def _connect(path: Path, *, readonly: bool = False, immutable: bool = False) -> sqlite3.Connection:
    """The one place a connection is made."""
    try:
        if readonly:
            query = "?mode=ro&immutable=1" if immutable else "?mode=ro"
            conn = sqlite3.connect(
                path.resolve().as_uri() + query,
                uri=True,
                timeout=READ_BUSY_TIMEOUT_S,
                isolation_level=None,
            )
        else:
            conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        conn.row_factory = sqlite3.Row
        if not readonly:
            conn.execute("PRAGMA synchronous=NORMAL")  # safe in WAL: consistent after a crash
    except sqlite3.Error as exc:
        waited = READ_BUSY_TIMEOUT_S if readonly else BUSY_TIMEOUT_S
        raise _state_error(path, exc, "open", waited) from None
    return conn


def _connect_readonly(path: Path) -> tuple[sqlite3.Connection, int]:
    """A read-only connection and the file's schema version, checked before anything else."""
    if not os.access(path, os.R_OK):
        raise StateError(f"{path}: state file is not readable (permission denied)")
    try:
        try:
            return _checked(_connect(path, readonly=True))
        except sqlite3.OperationalError:
            # A WAL file needs a -shm file beside it, which a reader may not be allowed to
            # create (read-only directory or filesystem). With no -wal file either, every
            # committed write is in the main file, so it can be read as it stands.
            if _side_file(path, "-wal").exists() or os.access(path.parent, os.W_OK):
                raise
        return _checked(_connect(path, readonly=True, immutable=True))
    except sqlite3.Error as exc:
        raise _state_error(path, exc, "read", READ_BUSY_TIMEOUT_S) from None


def _checked(conn: sqlite3.Connection) -> tuple[sqlite3.Connection, int]:
    try:
        return conn, _user_version(conn)
    except BaseException:
        conn.close()
        raise


def _is_busy(exc: sqlite3.Error) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def _busy_timeout_s(conn: sqlite3.Connection | None) -> float:
    """How long SQLite waits for a lock on this connection before it reports it busy."""
    if conn is not None:
        with suppress(sqlite3.Error):
            return float(conn.execute("PRAGMA busy_timeout").fetchone()[0]) / 1000
    return BUSY_TIMEOUT_S


def _state_error(path: Path, exc: sqlite3.Error, action: str, waited_s: float) -> StateError:
    """One line for a failed SQLite call; `waited_s` is how long a lock was waited for."""
    text = str(exc)
    lowered = text.lower()
    if _is_busy(exc):
        # Only after waiting that long (retries, or SQLite's busy timeout): some process
        # holds a transaction open.
        return StateError(
            f"{path}: state file busy: another process kept it locked for over"
            f" {waited_s:g} s; try again"
        )
    if "not a database" in lowered or "file is encrypted" in lowered:
        return StateError(f"{path}: not a voicefallback state file (not SQLite)")
    if "readonly" in lowered or "read-only" in lowered:
        return StateError(f"{path}: state file is not writable")
    if "unable to open" in lowered:
        return StateError(f"{path}: cannot open state file (check the path and permissions)")
    if "database or disk is full" in lowered or "disk is full" in lowered:
        return StateError(f"{path}: disk full while writing; nothing was written")
    if "malformed" in lowered or "corrupt" in lowered:
        return StateError(f"{path}: state file is corrupt ({text})")
    return StateError(f"{path}: cannot {action} state file: {text}")


def _snapshot_from_row(row: sqlite3.Row) -> Snapshot:
    return Snapshot(
        model=row["model"],
        last_checked_at=parse_iso(row["last_checked_at"]),
        ok=bool(row["ok"]),
        latency_ms=row["latency_ms"],
        ttft_ms=row["ttft_ms"],
        last_error=row["last_error"],
        consecutive_failures=row["consecutive_failures"],
        consecutive_successes=row["consecutive_successes"],
        failing=bool(row["failing"]),
        has_success=bool(row["has_success"]),
        success_latency_ms=row["success_latency_ms"],
        success_ttft_ms=row["success_ttft_ms"],
        stub=bool(row["stub"]),
        status_since=parse_iso(row["status_since"]) if row["status_since"] else None,
        last_status=row["last_status"],
    )


def _call_from_row(row: sqlite3.Row) -> ProbeResult:
    return ProbeResult(
        model=row["model"],
        ok=bool(row["ok"]),
        at=parse_iso(row["at"]),
        latency_ms=row["latency_ms"],
        ttft_ms=row["ttft_ms"],
        error=row["error"],
        message=row["message"],
        http_status=row["http_status"],
        retry_after_s=row["retry_after_s"],
        input_tokens=row["input_tokens"],
        output_tokens=row["output_tokens"],
        stub=bool(row["stub"]),
        kind=row["kind"],
    )


def _event_from_row(row: sqlite3.Row) -> FallbackEvent:
    candidates: list[Any] = json.loads(row["candidates"])
    return FallbackEvent(
        id=row["id"],
        uid=row["uid"],
        at=parse_iso(row["at"]),
        simulation_id=row["simulation_id"],
        primary=row["primary_model"],
        chosen=row["chosen"],
        reason=row["reason"],
        fallback_source=row["fallback_source"],
        candidates=[Candidate(c["model"], c["status"], c.get("error")) for c in candidates],
        error=row["error"],
    )
