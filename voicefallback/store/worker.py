"""A shim over StateOwner (owner.py) for callers not yet moved to it: `run_session(work)`
learns from `work` whether it reads snapshots or records calls, and asks the owner."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from voicefallback.config import DEFAULT_CONNECT_TIMEOUT_S, Thresholds
from voicefallback.records import FallbackEvent, ProbeResult, Snapshot
from voicefallback.store import Store
from voicefallback.store.base import SnapshotUpdate
from voicefallback.store.owner import StateOwner

T = TypeVar("T")


class _Asked:
    """Stands in for the store inside `work`: notes the one call it makes."""

    def __init__(self) -> None:
        self.models: list[str] | None = None
        self.write: tuple[list[ProbeResult], Mapping[str, Thresholds], FallbackEvent | None] | None
        self.write = None
        self.update: SnapshotUpdate | None = None

    def snapshots(self, models: Iterable[str] | None = None) -> dict[str, Snapshot]:
        self.models = list(models or [])
        return {}

    def record(
        self,
        results: Iterable[ProbeResult],
        limits: Mapping[str, Thresholds],
        event: FallbackEvent | None = None,
        *,
        update: SnapshotUpdate,
        once: str | None = None,
    ) -> list[tuple[ProbeResult, Snapshot]]:
        self.write, self.update = (list(results), limits, event), update
        return []


class StoreWorker:
    """StateOwner under its former name and calls."""

    def __init__(
        self,
        location: Path | str,
        *,
        threaded: bool,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        alone: bool = False,
    ) -> None:
        self.location = location
        self._rule: SnapshotUpdate | None = None
        self.owner = StateOwner(
            location,
            update=self._update,
            threaded=threaded,
            connect_timeout_s=connect_timeout_s,
            alone=alone,
        )

    def _update(self, *args: Any) -> Snapshot:
        if self._rule is None:  # what was kept aside is written in only after a record
            from voicefallback.health import apply_probe

            self._rule = apply_probe
        return self._rule(*args)

    async def run_session(self, work: Callable[[Any], T]) -> tuple[Any, str | None]:
        asked = _Asked()
        work(asked)
        if asked.write is not None:
            self._rule = asked.update
            results, limits, event = asked.write
            return [], await self.owner.record(results, limits, event)
        return await self.owner.snapshots(asked.models or [])

    async def run(self, work: Callable[[Store], T], *, abandon: bool = False) -> T:
        return await self.owner.run(work, abandon=abandon)

    async def aclose(self) -> None:
        await self.owner.aclose()
