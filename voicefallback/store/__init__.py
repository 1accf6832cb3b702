"""The state store: one interface (`Store`) over a SQLite file or a PostgreSQL database;
an async process reaches it through its one owner (owner.py)."""

from __future__ import annotations

from pathlib import Path

from voicefallback.config import DEFAULT_CONNECT_TIMEOUT_S
from voicefallback.environment import is_database_url
from voicefallback.errors import StateError
from voicefallback.store.base import SessionStore, SnapshotUpdate, Store
from voicefallback.store.schema import APPLICATION_ID, SCHEMA_VERSION
from voicefallback.store.upkeep import PRUNE_BATCH

__all__ = [
    "APPLICATION_ID",
    "PRUNE_BATCH",
    "SCHEMA_VERSION",
    "SessionStore",
    "SnapshotUpdate",
    "Store",
    "is_database_url",
    "open_store",
]

DRIVER_HINT = (
    "a postgresql:// state needs the PostgreSQL driver: pip install 'voicefallback[postgres]'"
)


def open_store(
    location: Path | str,
    *,
    write: bool,
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
    create: bool = True,
) -> Store:
    """Open the state at `location` for reading (never creates anything) or for writing
    (creates it, unless `create` is false: a SQLite file then must exist).

    `location` is a path to a SQLite file, or a postgresql:// URL (the driver is imported
    only then; `connect_timeout_s` bounds the wait for its server).
    """
    if is_database_url(location):
        assert isinstance(location, str)
        try:
            from voicefallback.store.postgres import PostgresStore
        except ModuleNotFoundError as exc:
            if (exc.name or "").partition(".")[0] != "psycopg":
                raise
            raise StateError(DRIVER_HINT) from None
        return PostgresStore.open(location, write=write, connect_timeout_s=connect_timeout_s)
    from voicefallback.store.sqlite import SQLiteStore

    return SQLiteStore.open(Path(location), write=write, create=create)
