"""The state store: one interface (`Store`) over a SQLite file or a PostgreSQL database."""

from __future__ import annotations

from pathlib import Path

from voicefallback.store.base import PRUNE_BATCH, SnapshotUpdate, Store
from voicefallback.store.schema import APPLICATION_ID, SCHEMA_VERSION

__all__ = [
    "APPLICATION_ID",
    "PRUNE_BATCH",
    "SCHEMA_VERSION",
    "SnapshotUpdate",
    "Store",
    "open_store",
]


def open_store(location: Path | str, *, write: bool) -> Store:
    """Open the state at `location` for reading (never creates anything) or for writing."""
    from voicefallback.store.sqlite import SQLiteStore

    return SQLiteStore.open(Path(location), write=write)
