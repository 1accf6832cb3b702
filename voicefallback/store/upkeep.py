"""Keeping a state's size in bounds (retention) and moving it whole (`state copy`): the
queries both backends share, over the primitives each provides (backend.py)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any

from voicefallback.errors import StateError
from voicefallback.records import iso
from voicefallback.store.backend import Backend
from voicefallback.store.schema import CONTENT

PRUNE_BATCH = 1000  # rows deleted per transaction, so a prune never holds the lock for long


class Upkeep(Backend):
    """Retention and copying, shared by both backends."""

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
        if self._schema_version() >= 3 and self._has_older("spool_applied", default):
            # ids kept with writes (spool.py), gone with the history those writes made
            self._delete_batches(
                "DELETE FROM spool_applied WHERE uid IN"
                " (SELECT uid FROM spool_applied WHERE at < ? ORDER BY at LIMIT ?)",
                (iso(default),),
                max_rows,
            )
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
        with self._guard("prune"):
            models = self._models_in(table)
        deleted = 0
        for model in models:
            cutoff = iso(cutoffs.get(model, default))
            with self._guard("prune"):
                keep = -1
                if keep_latest:
                    keep = self._fetch(
                        f"SELECT id FROM {table} WHERE model = ? ORDER BY at DESC, id DESC LIMIT 1",
                        (model,),
                    )[0]["id"]
                first = self._fetch(
                    f"SELECT at FROM {table} WHERE model = ? AND id != ? ORDER BY at LIMIT 1",
                    (model, keep),
                )
            if not first or first[0]["at"] >= cutoff:
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

    def _has_older(self, table: str, cutoff: datetime) -> bool:
        with self._guard("prune"):
            return bool(self._fetch(f"SELECT 1 FROM {table} WHERE at < ? LIMIT 1", (iso(cutoff),)))

    def _models_in(self, table: str) -> list[str]:
        """Every model with rows in `table`, one index seek each (a loose index scan)."""
        models: list[str] = []
        row = self._fetch(f"SELECT min(model) AS model FROM {table}")[0]
        while row["model"] is not None:
            models.append(row["model"])
            row = self._fetch(
                f"SELECT min(model) AS model FROM {table} WHERE model > ?", (row["model"],)
            )[0]
        return models

    def prune_events(self, cutoff: datetime) -> int:
        """Delete fallback events older than `cutoff`, in short transactions; return how many."""
        return self._delete_batches(
            "DELETE FROM events WHERE id IN"
            " (SELECT id FROM events WHERE at < ? ORDER BY at LIMIT ?)",
            (iso(cutoff),),
            None,
        )

    def _delete_batches(self, sql: str, params: tuple[str | int, ...], max_rows: int | None) -> int:
        deleted = 0
        while max_rows is None or deleted < max_rows:
            batch = PRUNE_BATCH if max_rows is None else min(PRUNE_BATCH, max_rows - deleted)
            with self._write():
                gone = self._run(sql, (*params, batch))
            deleted += gone
            if gone < batch:
                break
        return deleted

    # -- moving a whole state (`state copy`) -------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Rows in each table of the state's content (schema.CONTENT)."""
        if not self._readable():
            return dict.fromkeys(CONTENT, 0)
        with self._guard("read"):
            return {
                table: int(self._fetch(f"SELECT count(*) AS n FROM {table}")[0]["n"])
                for table in CONTENT
            }

    def export_rows(self, table: str, batch: int) -> Iterator[list[tuple[Any, ...]]]:
        """A table's rows, CONTENT[table] columns in order, `batch` at a time, by key."""
        if not self._readable():
            return
        columns = CONTENT[table]
        key = columns[0]
        select = f"SELECT {', '.join(columns)} FROM {table}"
        last: Any = None
        while True:
            with self._guard("read"):
                if last is None:
                    rows = self._fetch(f"{select} ORDER BY {key} LIMIT ?", (batch,))
                else:
                    rows = self._fetch(
                        f"{select} WHERE {key} > ? ORDER BY {key} LIMIT ?", (last, batch)
                    )
            if not rows:
                return
            yield [tuple(row[c] for c in columns) for row in rows]
            last = rows[-1][key]

    def import_rows(
        self, tables: Mapping[str, Iterable[list[tuple[Any, ...]]]], expected: Mapping[str, int]
    ) -> None:
        """Insert rows, ids kept, into this (empty) state in one transaction, committed only
        if each table then holds exactly `expected` rows."""
        with self._write():
            for table, batches in tables.items():
                columns = CONTENT[table]
                sql = (
                    f"INSERT INTO {table} ({', '.join(columns)})"
                    f" VALUES ({', '.join('?' for _ in columns)})"
                )
                for rows in batches:
                    self._run_many(sql, rows)
            self._after_import()
            for table, count in expected.items():
                found = int(self._fetch(f"SELECT count(*) AS n FROM {table}")[0]["n"])
                if found != count:
                    raise StateError(
                        f"copy check failed: {table} would hold {found} rows, the source"
                        f" {count}; nothing was written"
                    )
