"""The state schema: numbered migrations, append only, and what marks a state as ours.

Both backends build the same tables, indexes and version numbers; migration N means the
same change on SQLite (here, through sqlite-utils) and on PostgreSQL (postgres.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from voicefallback.errors import StateError

if TYPE_CHECKING:
    import sqlite_utils

APPLICATION_ID = 0x56464231  # "VFB1": marks a state file as ours
TABLES = (
    "migrations",
    "probes",
    "snapshots",
    "events",
    "status_changes",
    "event_counts",
    "spool_applied",
)
# What a state holds, table by table (key first), as `state copy` moves it between backends.
CONTENT: dict[str, tuple[str, ...]] = {
    "probes": (
        "id",
        "model",
        "at",
        "kind",
        "ok",
        "latency_ms",
        "ttft_ms",
        "error",
        "message",
        "http_status",
        "retry_after_s",
        "input_tokens",
        "output_tokens",
        "stub",
    ),
    "snapshots": (
        "model",
        "last_checked_at",
        "ok",
        "latency_ms",
        "ttft_ms",
        "last_error",
        "consecutive_failures",
        "consecutive_successes",
        "failing",
        "has_success",
        "success_latency_ms",
        "success_ttft_ms",
        "stub",
        "status_since",
        "last_status",
    ),
    "events": (
        "id",
        "uid",
        "at",
        "simulation_id",
        "primary_model",
        "chosen",
        "reason",
        "fallback_source",
        "candidates",
        "error",
    ),
    "status_changes": ("id", "model", "at", "from_status", "to_status", "error"),
    "event_counts": ("reason", "count"),
}


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


def _m003_spool(db: sqlite_utils.Database) -> None:
    """Writes that may have to be retried from the local spool, by id: so each is written in
    once, however many processes find it, even when the first try's commit went unanswered."""
    db.execute("CREATE TABLE spool_applied (uid TEXT PRIMARY KEY, at TEXT NOT NULL)")
    db.execute("CREATE INDEX spool_applied_at ON spool_applied (at)")  # pruned by age


MIGRATIONS: Sequence[Callable[[sqlite_utils.Database], None]] = (
    _m001_initial,
    _m002_operations,
    _m003_spool,
)
SCHEMA_VERSION = len(MIGRATIONS)


def newer_schema(where: str | Path, version: int) -> StateError:
    return StateError(
        f"{where}: written by a newer voicefallback (schema {version}, this one knows"
        f" {SCHEMA_VERSION}); upgrade voicefallback to use it"
    )


def refuse_foreign(path: str | Path, application_id: int, version: int, has_tables: bool) -> None:
    """Refuse a SQLite file that is not ours, or is from a newer version."""
    if application_id == 0 and (version or has_tables):
        raise StateError(f"{path}: not a voicefallback state file (an unrelated SQLite database)")
    if application_id not in (0, APPLICATION_ID):
        raise StateError(
            f"{path}: not a voicefallback state file (application id {application_id:#x})"
        )
    if version > SCHEMA_VERSION:
        raise newer_schema(path, version)


# -- the same migrations on PostgreSQL ---------------------------------------------------
# Text columns that are sorted or compared use the "C" collation: byte order, as in SQLite,
# whatever the database's locale. Indexes that history is read newest-first through end in
# `id`, which SQLite keeps in every index implicitly.

PG_MIGRATIONS: Sequence[tuple[str, Sequence[str]]] = (
    (
        "m001_initial",
        (
            "CREATE TABLE probes (id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,"
            ' model TEXT COLLATE "C" NOT NULL, at TEXT COLLATE "C" NOT NULL, kind TEXT NOT NULL,'
            " ok INTEGER NOT NULL, latency_ms BIGINT, ttft_ms BIGINT, error TEXT, message TEXT,"
            " http_status INTEGER, retry_after_s DOUBLE PRECISION, input_tokens BIGINT,"
            " output_tokens BIGINT, stub INTEGER NOT NULL)",
            "CREATE INDEX probes_model_at ON probes (model, at, id)",
            "CREATE INDEX probes_at ON probes (at)",
            'CREATE TABLE snapshots (model TEXT COLLATE "C" PRIMARY KEY, last_checked_at TEXT,'
            " ok INTEGER, latency_ms BIGINT, ttft_ms BIGINT, last_error TEXT,"
            " consecutive_failures INTEGER, consecutive_successes INTEGER, failing INTEGER,"
            " has_success INTEGER, success_latency_ms BIGINT, success_ttft_ms BIGINT,"
            " stub INTEGER, status_since TEXT, last_status TEXT)",
            "CREATE TABLE events (id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,"
            ' uid TEXT COLLATE "C" NOT NULL, at TEXT COLLATE "C" NOT NULL,'
            ' simulation_id TEXT COLLATE "C" NOT NULL, primary_model TEXT NOT NULL, chosen TEXT,'
            " reason TEXT NOT NULL, fallback_source TEXT, candidates TEXT NOT NULL, error TEXT)",
            "CREATE UNIQUE INDEX events_uid ON events (uid)",
            "CREATE INDEX events_simulation ON events (simulation_id, id)",
            "CREATE INDEX events_at ON events (at)",
        ),
    ),
    (
        "m002_operations",
        (
            "CREATE TABLE status_changes (id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,"
            ' model TEXT COLLATE "C" NOT NULL, at TEXT COLLATE "C" NOT NULL, from_status TEXT,'
            " to_status TEXT NOT NULL, error TEXT)",
            "CREATE INDEX status_changes_model_at ON status_changes (model, at, id)",
            "INSERT INTO status_changes (model, at, from_status, to_status, error)"
            " SELECT model, status_since, NULL, last_status, last_error FROM snapshots"
            " WHERE last_status IS NOT NULL AND status_since IS NOT NULL",
            "CREATE INDEX probes_failures ON probes (model, at, id) WHERE ok = 0",
            'CREATE TABLE event_counts (reason TEXT COLLATE "C" PRIMARY KEY,'
            " count BIGINT NOT NULL)",
            "INSERT INTO event_counts SELECT reason, count(*) FROM events GROUP BY reason",
        ),
    ),
    (
        "m003_spool",
        (
            'CREATE TABLE spool_applied (uid TEXT COLLATE "C" PRIMARY KEY,'
            ' at TEXT COLLATE "C" NOT NULL)',
            "CREATE INDEX spool_applied_at ON spool_applied (at)",
        ),
    ),
)
assert len(PG_MIGRATIONS) == SCHEMA_VERSION, "each migration is written for both backends"
