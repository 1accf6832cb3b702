"""`state copy`: a whole state (history, snapshots, events) from one location to another,
SQLite to PostgreSQL or back, ids kept, counts checked before it is committed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from voicefallback.environment import display_location
from voicefallback.errors import InputError
from voicefallback.store import open_store
from voicefallback.store.schema import CONTENT

BATCH = 5000  # rows read and inserted at a time: memory stays flat on a large history


@dataclass(frozen=True)
class CopyReport:
    source: str  # as shown: never a password
    target: str
    copied: dict[str, int]  # rows per table


def copy_state(source: Path | str, target: Path | str, *, connect_timeout_s: float) -> CopyReport:
    """Copy everything at `source` into `target`, which must hold no state yet.

    The source is read as of one moment (writers there may go on); the target gets it all
    in one transaction, committed only once each table's row count matches the source's,
    so a failed or interrupted copy leaves it empty.
    """
    shown_source, shown_target = display_location(source), display_location(target)
    with (
        open_store(source, write=False, connect_timeout_s=connect_timeout_s) as reader,
        reader.consistent_read(),
    ):
        counts = reader.counts()
        if not any(counts.values()):
            raise InputError(f"--from {shown_source}: no state there to copy")
        with open_store(target, write=False, connect_timeout_s=connect_timeout_s) as check:
            held = check.counts()
        if any(held.values()):
            raise InputError(
                f"--to {shown_target}: already holds state ({held['probes']} probes,"
                f" {held['events']} events); copy only into an empty state"
            )
        with open_store(target, write=True, connect_timeout_s=connect_timeout_s) as writer:
            writer.import_rows(
                {table: reader.export_rows(table, BATCH) for table in CONTENT}, counts
            )
    return CopyReport(shown_source, shown_target, counts)
