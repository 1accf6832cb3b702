"""The writes and reads both backends share, written once over the primitives each
backend provides (backend.py); retention and copying are in upkeep.py."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from voicefallback.config import Thresholds
from voicefallback.records import (
    FallbackEvent,
    ProbeResult,
    Snapshot,
    StatusChange,
    TtftBucket,
    iso,
    parse_iso,
    utcnow,
)
from voicefallback.store.base import SnapshotUpdate
from voicefallback.store.rows import (
    SNAPSHOT_COLUMNS,
    call_from_row,
    call_params,
    event_from_row,
    event_params,
    snapshot_from_row,
    snapshot_params,
)
from voicefallback.store.upkeep import Upkeep


class SQLStore(Upkeep):
    """The queries, over four primitives a backend provides (backend.py)."""

    # -- writes -------------------------------------------------------------------------

    def record(
        self,
        results: Iterable[ProbeResult],
        limits: Mapping[str, Thresholds],
        event: FallbackEvent | None = None,
        *,
        update: SnapshotUpdate,
        once: str | None = None,
    ) -> list[tuple[ProbeResult, Snapshot]]:
        """Write calls (history rows + snapshots) and an optional event in one transaction.

        `once`: a fresh id kept with this write (see Store.record).
        """
        results = list(results)
        with self._write():
            self._check_still_ours()
            if once is not None and not self._mark_written(once):
                # Made before: the copy of this very write kept aside went in first (a
                # start that gave up on a slow database keeps its write with the same id).
                return self._as_written(results)
            return self._record(results, limits, event, update)

    def _as_written(self, results: list[ProbeResult]) -> list[tuple[ProbeResult, Snapshot]]:
        """Inside a write transaction: `results` with their models' snapshots as they are."""
        written = []
        for result in results:
            [row] = self._fetch("SELECT * FROM snapshots WHERE model = ?", (result.model,))
            written.append((result, snapshot_from_row(row)))
        return written

    def _mark_written(self, uid: str) -> bool:
        """Keep `uid` with the write in progress; False if a write kept it before."""
        return bool(
            self._run(
                "INSERT INTO spool_applied (uid, at) VALUES (?, ?) ON CONFLICT (uid) DO NOTHING",
                (uid, iso(utcnow())),
            )
        )

    def _record(
        self,
        results: list[ProbeResult],
        limits: Mapping[str, Thresholds],
        event: FallbackEvent | None,
        update: SnapshotUpdate,
    ) -> list[tuple[ProbeResult, Snapshot]]:
        """Inside a write transaction: what `record` writes."""
        self._lock_models(sorted({r.model for r in results}))
        updated = []
        for result in results:
            rows = self._fetch("SELECT * FROM snapshots WHERE model = ?", (result.model,))
            previous = snapshot_from_row(rows[0]) if rows else None
            self._run(
                "INSERT INTO probes (model, at, kind, ok, latency_ms, ttft_ms, error, message,"
                " http_status, retry_after_s, input_tokens, output_tokens, stub)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                call_params(result),
            )
            if previous is not None and result.at < previous.last_checked_at:
                # Older evidence committed late (a slow probe run finishing after a
                # `start` recorded a newer call): history keeps it, the verdict does not.
                updated.append((result, previous))
                continue
            snapshot = update(previous, result, limits[result.model])
            self._run(
                "INSERT INTO snapshots (model, last_checked_at, ok, latency_ms,"
                " ttft_ms, last_error, consecutive_failures, consecutive_successes, failing,"
                " has_success, success_latency_ms, success_ttft_ms, stub, status_since,"
                " last_status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (model) DO UPDATE SET"
                + ",".join(f" {c} = excluded.{c}" for c in SNAPSHOT_COLUMNS[1:]),
                snapshot_params(snapshot),
            )
            if previous is None or previous.last_status != snapshot.last_status:
                self._run(
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
            inserted = self._run(
                "INSERT INTO events (uid, at, simulation_id, primary_model, chosen,"
                " reason, fallback_source, candidates, error)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (uid) DO NOTHING",
                event_params(event),
            )
            if inserted == 1:  # a retried write of the same event counts once
                self._run(
                    "INSERT INTO event_counts (reason, count) VALUES (?, 1)"
                    " ON CONFLICT (reason) DO UPDATE SET count = event_counts.count + 1",
                    (event.reason,),
                )
        return updated

    # -- reads --------------------------------------------------------------------------

    def snapshots(self, models: Iterable[str] | None = None) -> dict[str, Snapshot]:
        if not self._readable():
            return {}
        with self._guard("read"):
            rows = self._fetch("SELECT * FROM snapshots")
        wanted = set(models) if models is not None else None
        return {
            row["model"]: snapshot_from_row(row)
            for row in rows
            if wanted is None or row["model"] in wanted
        }

    def events(
        self,
        simulation_id: str | None = None,
        since: datetime | None = None,
        limit: int | None = None,
        before: int | None = None,
    ) -> list[FallbackEvent]:
        """Fallback events, newest first; with `before`, only those with a smaller id."""
        if not self._readable():
            return []
        where, params = _event_filter(simulation_id, since)
        if before is not None:
            where.append("id < ?")
            params.append(min(before, 2**63 - 1))
        sql = "SELECT * FROM events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(min(limit, 2**63 - 1))  # 64-bit integers stop there
        with self._guard("read"):
            rows = self._fetch(sql, params)
        return [event_from_row(row) for row in rows]

    def count_events(self, simulation_id: str | None = None, since: datetime | None = None) -> int:
        """How many fallback events `events` would list without a limit."""
        if not self._readable():
            return 0
        where, params = _event_filter(simulation_id, since)
        sql = "SELECT count(*) AS n FROM events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        with self._guard("read"):
            rows = self._fetch(sql, params)
        return int(rows[0]["n"])

    # -- reads for health explanations, history and metrics -------------------------------
    # Each one walks an index backwards under a LIMIT, or reads a table of a few rows, so its
    # cost does not grow with the history (tests/test_store_base.py checks the plans).

    def recent_calls(
        self, model: str, *, limit: int, since: datetime | None = None
    ) -> list[ProbeResult]:
        """A model's calls (probes and session openings), newest first."""
        if not self._readable():
            return []
        return [call_from_row(row) for row in self._newest("probes", model, limit, since)]

    def _newest(self, table: str, model: str, limit: int, since: datetime | None) -> list[Any]:
        """A model's newest rows in `table` (one of ours, indexed on (model, at))."""
        sql = f"SELECT * FROM {table} WHERE model = ?"
        params: list[str | int] = [model]
        if since is not None:
            sql += " AND at >= ?"
            params.append(iso(since))
        sql += " ORDER BY at DESC, id DESC LIMIT ?"
        params.append(limit)
        with self._guard("read"):
            return self._fetch(sql, params)

    def last_failure(self, model: str) -> ProbeResult | None:
        """The model's most recent failed call, however long ago."""
        if not self._readable():
            return None
        # Served by the partial index probes_failures (schema 2), whatever the successes.
        with self._guard("read"):
            rows = self._fetch(
                "SELECT * FROM probes WHERE model = ? AND ok = 0 ORDER BY at DESC, id DESC LIMIT 1",
                (model,),
            )
        return call_from_row(rows[0]) if rows else None

    def status_changes(
        self, model: str, *, limit: int, since: datetime | None = None
    ) -> list[StatusChange]:
        """Changes of the model's recorded verdict, newest first."""
        if not self._readable() or self._schema_version() < 2:
            return []
        rows = self._newest("status_changes", model, limit, since)
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
        if not self._readable():
            return {}
        if self._schema_version() >= 2:
            sql = "SELECT reason, count FROM event_counts"
        else:
            sql = "SELECT reason, count(*) AS count FROM events GROUP BY reason"
        with self._guard("read"):
            rows = self._fetch(sql)
        return {row["reason"]: int(row["count"]) for row in rows}

    # -- reads for the status page (`serve`) -------------------------------------------------
    # Ranges of the (model, at) index; `at` is fixed-width ISO text, so a slice of the day is
    # a prefix of it plus the minute rounded down (substr and integer division: both dialects).

    def call_counts(self, model: str, since: datetime) -> tuple[int, int]:
        """A model's calls at or after `since`, and how many of them succeeded."""
        if not self._readable():
            return 0, 0
        with self._guard("read"):
            rows = self._fetch(
                "SELECT count(*) AS calls, coalesce(sum(ok), 0) AS successes FROM probes"
                " WHERE model = ? AND at >= ?",
                (model, iso(since)),
            )
        return int(rows[0]["calls"]), int(rows[0]["successes"])

    def ttft_series(self, model: str, since: datetime, bucket_minutes: int) -> list[TtftBucket]:
        """A model's calls at or after `since` in slices of `bucket_minutes` (a divisor of
        60), oldest first; empty slices are left out."""
        if not self._readable():
            return []
        sql = (
            "SELECT substr(at, 1, 14) AS hour, CAST(substr(at, 15, 2) AS INTEGER) / ? AS part,"
            " count(*) AS calls, coalesce(sum(ok), 0) AS successes,"
            " avg(CASE WHEN ok = 1 THEN coalesce(ttft_ms, latency_ms) END) AS ttft"
            " FROM probes WHERE model = ? AND at >= ? GROUP BY 1, 2 ORDER BY 1, 2"
        )
        with self._guard("read"):
            rows = self._fetch(sql, (bucket_minutes, model, iso(since)))
        return [
            TtftBucket(
                start=parse_iso(f"{row['hour']}{int(row['part']) * bucket_minutes:02d}:00Z"),
                calls=int(row["calls"]),
                successes=int(row["successes"]),
                ttft_ms=None if row["ttft"] is None else round(row["ttft"]),
            )
            for row in rows
        ]


def _event_filter(
    simulation_id: str | None, since: datetime | None
) -> tuple[list[str], list[str | int]]:
    where: list[str] = []
    params: list[str | int] = []
    if simulation_id is not None:
        where.append("simulation_id = ?")
        params.append(simulation_id)
    if since is not None:
        where.append("at >= ?")
        params.append(iso(since))
    return where, params
