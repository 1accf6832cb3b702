"""The state in a PostgreSQL database, shared by a fleet of hosts (through psycopg 3).

One connection per store, in autocommit except inside a write transaction. Writers of the
same model's snapshot queue on a transaction-scoped advisory lock (taken in model order, so
two writers never deadlock); the probe lock and migrations use session-scoped ones, so they
are fleet-wide and vanish with the connection of a process that dies.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row

from voicefallback.config import DEFAULT_CONNECT_TIMEOUT_S
from voicefallback.environment import display_location
from voicefallback.errors import ProbeBusy, StateBusy, StateError, StateUnreachable
from voicefallback.records import iso, utcnow
from voicefallback.redaction import redact
from voicefallback.store.schema import PG_MIGRATIONS, SCHEMA_VERSION, TABLES, newer_schema
from voicefallback.store.sql import SQLStore

# Advisory lock keys: (class, key). Snapshot writers use (MODEL_LOCKS, hashtext(model)).
_LOCKS = 0x56460000  # "VF"
_PROBE_KEY = 1
_MIGRATE_KEY = 2
_MODEL_LOCKS = 0x56460001
_POLL_S = 0.05
MIGRATE_WAIT_S = 60.0
# A read-only connection's statements give up after this long (a table locked by VACUUM
# FULL, say): past `serve`'s 10 s answer, so its read threads are never stuck for good.
READ_STATEMENT_TIMEOUT_S = 15.0
# Data sent and not acknowledged for this long means the server is gone: the connection is
# closed by the kernel instead of waiting for TCP to give up, minutes later.
TCP_USER_TIMEOUT_S = 10.0


# What libpq says when the server answered and refused (wrong password, unknown role or
# database, no pg_hba.conf entry): no retry will help, unlike a server down or starting up.
_REFUSALS = (
    "authentication failed",
    "does not exist",
    "no password supplied",
    "no pg_hba.conf entry",
    "permission denied",
)


def _secrets(url: str) -> list[str | None]:
    try:
        password = conninfo_to_dict(url).get("password")
    except psycopg.ProgrammingError:
        password = None
    return [str(password) if password else None, os.environ.get("PGPASSWORD")]


class PostgresStore(SQLStore):
    """The state in a PostgreSQL database (the current schema of the URL's database)."""

    def __init__(self, url: str, conn: psycopg.Connection[dict[str, Any]] | None) -> None:
        self.url = url
        self.label = display_location(url)
        self._conn = conn
        self._version = 0
        # When the server last answered (monotonic): how a caller on another thread tells a
        # server that stopped answering from one that is merely busy (see `answering`).
        self.answered_at = time.monotonic()
        self._closing = threading.Lock()  # abort never breaks a socket that close() freed

    @classmethod
    def open(
        cls, url: str, *, write: bool, connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    ) -> PostgresStore:
        """Connect and check the schema; for writing, migrate it first if it is older.

        A database that holds tables that are not ours, or our tables from a newer version,
        is refused before anything is written to it.
        """
        store = cls(url, None)
        store._conn = store._connect(connect_timeout_s, write=write)
        try:
            with store._guard("open"):
                store._version = store._check_schema()
                if write and store._version < SCHEMA_VERSION:
                    store._migrate()
        except BaseException:
            store.close()
            raise
        return store

    def close(self) -> None:
        with self._closing:
            if self._conn is not None:
                with suppress(psycopg.Error):
                    self._conn.close()
                self._conn = None

    def answering(self, within_s: float) -> bool:
        return time.monotonic() - self.answered_at < within_s

    def break_off(self) -> None:
        """From another thread: break the connection off under a call that waits on a
        server that no longer answers, so that the call fails at once (StateUnreachable)
        instead of when TCP gives up, minutes later."""
        with self._closing:
            conn = self._conn
            if conn is None or conn.closed:
                return
            with (
                suppress(OSError, psycopg.Error),
                socket.socket(fileno=os.dup(conn.fileno())) as sock,
            ):
                sock.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _connect(self, timeout_s: float, *, write: bool) -> psycopg.Connection[dict[str, Any]]:
        options: dict[str, Any] = {"application_name": "voicefallback"}
        try:
            given = conninfo_to_dict(self.url)
        except psycopg.ProgrammingError as exc:
            raise StateError(f"{self.label}: {self._text(exc)}") from None
        if "connect_timeout" not in given and "PGCONNECT_TIMEOUT" not in os.environ:
            # libpq counts whole seconds (and treats 1 as 2); a URL or PGCONNECT_TIMEOUT wins.
            options["connect_timeout"] = max(1, round(timeout_s))
        if "tcp_user_timeout" not in given:  # what the URL says wins, as above
            options["tcp_user_timeout"] = round(TCP_USER_TIMEOUT_S * 1000)
        if not write and "options" not in given and "PGOPTIONS" not in os.environ:
            ms = round(READ_STATEMENT_TIMEOUT_S * 1000)
            options["options"] = f"-c statement_timeout={ms}"
        try:
            return psycopg.connect(self.url, autocommit=True, row_factory=dict_row, **options)
        except psycopg.OperationalError as exc:
            text = self._text(exc)
            if any(refusal in text for refusal in _REFUSALS):
                # The server answered and said no: configuration to fix, not an outage.
                raise StateError(f"{self.label}: the state database refused: {text}") from None
            raise StateUnreachable(
                f"{self.label}: cannot reach the state database: {text}"
            ) from None

    def _check_schema(self) -> int:
        """Our schema version here (0: none yet); refuse foreign tables or a newer schema."""
        tables = {  # pg_tables, not information_schema: a plain catalog read, ~10x quicker
            row["tablename"]
            for row in self._fetch(
                "SELECT tablename FROM pg_catalog.pg_tables WHERE schemaname = current_schema()"
            )
        }
        foreign = sorted(tables - set(TABLES))
        if foreign or (tables and "migrations" not in tables):
            shown = ", ".join(foreign[:5]) or ", ".join(sorted(tables)[:5])
            raise StateError(
                f"{self.label}: not a voicefallback state database (it holds other tables:"
                f" {shown}); give voicefallback a database or schema of its own"
            )
        if not tables:
            return 0
        version = int(self._fetch("SELECT max(number) AS v FROM migrations")[0]["v"] or 0)
        if version > SCHEMA_VERSION:
            raise newer_schema(self.label, version)
        return version

    def _migrate(self) -> None:
        """Run the missing migrations once, however many hosts start at the same moment."""
        conn = self._require_conn()
        self._advisory_lock(_MIGRATE_KEY, MIGRATE_WAIT_S, "a schema migration")
        try:
            version = self._check_schema()  # another host may have migrated meanwhile
            with conn.transaction():
                self._run(
                    "CREATE TABLE IF NOT EXISTS migrations (number INTEGER PRIMARY KEY,"
                    " name TEXT NOT NULL, applied_at TEXT NOT NULL)"
                )
                for number, (name, statements) in enumerate(PG_MIGRATIONS, start=1):
                    if number > version:
                        for sql in statements:
                            self._run(sql)
                        self._run(
                            "INSERT INTO migrations (number, name, applied_at) VALUES (?, ?, ?)",
                            (number, name, iso(utcnow())),
                        )
            self._version = SCHEMA_VERSION
        finally:
            self._advisory_unlock(_MIGRATE_KEY)

    # -- what the queries run on ----------------------------------------------------------

    def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        found = self._require_conn().execute(sql.replace("?", "%s"), params).fetchall()
        self.answered_at = time.monotonic()
        return found

    def _run(self, sql: str, params: Sequence[Any] = ()) -> int:
        count = self._require_conn().execute(sql.replace("?", "%s"), params).rowcount
        self.answered_at = time.monotonic()
        return count

    def _run_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with self._require_conn().cursor() as cursor:
            cursor.executemany(sql.replace("?", "%s"), rows)
        self.answered_at = time.monotonic()

    def _after_import(self) -> None:
        for table in ("probes", "events", "status_changes"):  # the tables with identity ids
            self._fetch(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
                f" coalesce(max(id), 0) + 1, false) FROM {table}"
            )

    def _readable(self) -> bool:
        return self._conn is not None and self._version > 0

    @contextmanager
    def consistent_read(self) -> Iterator[None]:
        """One repeatable-read transaction: it sees one moment while writers go on."""
        if not self._readable():
            yield
            return
        conn = self._require_conn()
        with self._guard("read"), conn.transaction():
            self._run("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield

    def _schema_version(self) -> int:
        return self._version

    def _check_still_ours(self) -> None:
        version = int(self._fetch("SELECT max(number) AS v FROM migrations")[0]["v"] or 0)
        if version > SCHEMA_VERSION:
            raise newer_schema(self.label, version)

    def _lock_models(self, models: Sequence[str]) -> None:
        for model in models:  # sorted by the caller: no two writers wait on each other
            self._fetch("SELECT pg_advisory_xact_lock(?, hashtext(?))", (_MODEL_LOCKS, model))

    @contextmanager
    def _write(self) -> Iterator[None]:
        """One transaction; an error, Ctrl-C or SIGTERM inside rolls all of it back."""
        conn = self._require_conn()
        with self._guard("write"):
            with conn.transaction():
                self.answered_at = time.monotonic()
                yield
            self.answered_at = time.monotonic()

    @contextmanager
    def _guard(self, action: str) -> Iterator[None]:
        try:
            yield
        except psycopg.errors.QueryCanceled:
            # A read's statement_timeout: something holds what it needs (a table lock).
            raise StateBusy(
                f"{self.label}: the state database kept this {action} waiting for over"
                f" {READ_STATEMENT_TIMEOUT_S:g} s; try again"
            ) from None
        except psycopg.OperationalError as exc:
            if self._conn is not None and (self._conn.closed or self._conn.broken):
                raise StateUnreachable(
                    f"{self.label}: lost the state database while trying to {action}:"
                    f" {self._text(exc)}"
                ) from None
            raise StateError(f"{self.label}: cannot {action} state: {self._text(exc)}") from None
        except psycopg.Error as exc:
            raise StateError(f"{self.label}: cannot {action} state: {self._text(exc)}") from None

    def _text(self, exc: BaseException) -> str:
        """The first line of a driver error, without any password."""
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        return redact(lines[0] if lines else type(exc).__name__, _secrets(self.url))

    def _require_conn(self) -> psycopg.Connection[dict[str, Any]]:
        if self._conn is None:
            raise StateError(f"{self.label}: state database is not open")
        return self._conn

    # -- locks --------------------------------------------------------------------------

    def _advisory_lock(self, key: int, wait_s: float, what: str) -> None:
        deadline = time.monotonic() + wait_s
        with self._guard("lock"):
            while not self._fetch("SELECT pg_try_advisory_lock(?, ?) AS got", (_LOCKS, key))[0][
                "got"
            ]:
                if time.monotonic() >= deadline:
                    raise ProbeBusy(
                        f"{self.label}: {what} is still running on another host or process;"
                        f" waited {wait_s:g} s"
                    )
                time.sleep(_POLL_S)

    def _advisory_unlock(self, key: int) -> None:
        with suppress(psycopg.Error):  # a lost connection has released it already
            self._fetch("SELECT pg_advisory_unlock(?, ?)", (_LOCKS, key))

    @contextmanager
    def probe_lock(self, wait_s: float) -> Iterator[None]:
        """Fleet-wide: one `probe` at a time against this database, from any host."""
        try:
            self._advisory_lock(_PROBE_KEY, wait_s, "another probe")
        except ProbeBusy:
            raise ProbeBusy(
                f"another probe is still running on {self.label} (any host); waited {wait_s:g} s"
            ) from None
        try:
            yield
        finally:
            self._advisory_unlock(_PROBE_KEY)

    # -- the database's own operations ----------------------------------------------------

    def vacuum(self) -> None:
        """VACUUM ANALYZE our tables: the space of deleted rows is reused by new ones.

        Not VACUUM FULL, which would lock every host out while it rewrites the tables.
        """
        if not self._readable():
            return
        with self._guard("vacuum"):
            self._run("VACUUM (ANALYZE) " + ", ".join(TABLES))

    def size_bytes(self) -> int:
        """Our tables with their indexes, as they take space in the database now."""
        if not self._readable():
            return 0
        with self._guard("read"):
            row = self._fetch(
                "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) AS size"
                " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = current_schema() AND c.relkind = 'r'"
                " AND c.relname = ANY(?)",
                (list(TABLES),),
            )[0]
        return int(row["size"])
