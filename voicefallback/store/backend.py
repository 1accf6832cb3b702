"""What each backend provides to the queries they share and to the state's owner."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any


class Backend:
    """A SQLite file or a PostgreSQL database, as the shared queries (sql.py, upkeep.py)
    use it. The SQL is in the dialect both share (`?` placeholders, translated by the
    PostgreSQL backend); a backend supplies only connections, transactions and errors."""

    def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Rows (readable by column name) of one statement on the open connection."""
        raise NotImplementedError

    def _run(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement on the open connection; the number of rows it changed."""
        raise NotImplementedError

    def _guard(self, action: str) -> AbstractContextManager[None]:
        """Turn the backend's errors inside into one-line StateErrors."""
        raise NotImplementedError

    def _write(self) -> AbstractContextManager[None]:
        """One transaction, committed whole or not at all, retried while the state is busy."""
        raise NotImplementedError

    def _readable(self) -> bool:
        """False when there is no state to read yet (reads return empty results)."""
        raise NotImplementedError

    def _schema_version(self) -> int:
        raise NotImplementedError

    def _run_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run one statement once per row, on the open connection."""
        raise NotImplementedError

    def _check_still_ours(self) -> None:
        """Inside `_write`, before anything is written: raise StateError (StateMoved when the
        location now leads elsewhere) if the state is no longer the one opened, or a newer
        voicefallback migrated it meanwhile. A long-lived process then writes nothing."""
        raise NotImplementedError

    def answering(self, within_s: float) -> bool:
        """See Store.answering."""
        raise NotImplementedError

    def break_off(self) -> None:
        """See Store.break_off."""
        raise NotImplementedError

    def _after_import(self) -> None:
        """Inside the import transaction: make new rows' ids follow the imported ones."""

    def _lock_models(self, models: Sequence[str]) -> None:
        """Inside `_write`: keep other writers off these models' snapshots until commit.

        A backend whose transactions already exclude each other needs nothing here.
        """
