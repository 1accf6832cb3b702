"""The health snapshot in Prometheus text format, and node_exporter textfiles written atomically."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from voicefallback.errors import InputError
from voicefallback.records import FALLBACK_REASONS, STATUSES

if TYPE_CHECKING:
    from voicefallback.reports import HealthReport, ModelHealth

# Every reason `start` records, so each counter exists (at 0) before its first event.


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def _number(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


class _Family:
    def __init__(self, name: str, kind: str, help_text: str) -> None:
        self.lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        self.name = name

    def add(self, value: float, **labels: str) -> None:
        self.lines.append(f"{self.name}{_labels(**labels)} {_number(value)}")


def _model_labels(row: ModelHealth) -> dict[str, str]:
    return {"model": row.model.id, "provider": row.model.provider.name}


def prometheus_text(report: HealthReport) -> str:
    """One sample per model and figure; a figure nobody has measured yet is left out."""
    up = _Family("voicefallback_model_up", "gauge", "1 if the model is healthy, else 0.")
    state = _Family(
        "voicefallback_model_status",
        "gauge",
        "1 for the model's current status, 0 for the others.",
    )
    ttft = _Family(
        "voicefallback_model_ttft_seconds",
        "gauge",
        "Time to first token of the model's latest call.",
    )
    latency = _Family(
        "voicefallback_model_latency_seconds", "gauge", "Total time of the model's latest call."
    )
    checked = _Family(
        "voicefallback_model_last_probe_timestamp_seconds",
        "gauge",
        "Unix time of the model's latest call.",
    )
    failures = _Family(
        "voicefallback_model_consecutive_failures",
        "gauge",
        "Failed calls in a row, ending with the latest.",
    )
    success = _Family(
        "voicefallback_model_recent_success_ratio",
        "gauge",
        "Share of successful calls in the recent window.",
    )
    quantiles = _Family(
        "voicefallback_model_recent_ttft_seconds",
        "gauge",
        "TTFT percentiles of successful calls in the recent window.",
    )
    for row in report.models:
        labels = _model_labels(row)
        up.add(1 if row.status == "healthy" else 0, **labels)
        for status in STATUSES:
            state.add(1 if row.status == status else 0, **labels, status=status)
        snapshot = row.snapshot
        if snapshot is not None:
            if snapshot.ttft_ms is not None:
                ttft.add(snapshot.ttft_ms / 1000, **labels)
            if snapshot.latency_ms is not None:
                latency.add(snapshot.latency_ms / 1000, **labels)
            checked.add(round(snapshot.last_checked_at.timestamp(), 3), **labels)
        failures.add(snapshot.consecutive_failures if snapshot else 0, **labels)
        if row.recent.success_rate is not None:
            success.add(row.recent.success_rate, **labels)
        for quantile, value in (("0.5", row.recent.ttft_p50_ms), ("0.95", row.recent.ttft_p95_ms)):
            if value is not None:
                quantiles.add(value / 1000, **labels, quantile=quantile)
    families = [up, state, ttft, latency, checked, failures, success, quantiles]
    if report.event_counts is not None:
        events = _Family(
            "voicefallback_fallback_events_total",
            "counter",
            "Sessions that did not start on their primary model, by reason.",
        )
        counts = dict.fromkeys(FALLBACK_REASONS, 0) | report.event_counts
        for reason, count in counts.items():
            events.add(count, reason=reason)
        families.append(events)
    return "".join(line + "\n" for family in families for line in family.lines)


def check_textfile_target(path: Path, protected: Sequence[Path] = ()) -> None:
    """Refuse a textfile path before any probe is spent on it, and again just before the
    rename: only a regular file (or nothing) may be replaced, and never one of `protected`
    (the state file, its side files, the registry), however the path spells it."""
    where = f"--textfile {path}"
    try:
        info: os.stat_result | None = os.lstat(path)
    except FileNotFoundError:
        info = None
    except OSError as exc:
        raise InputError(f"{where}: cannot use: {exc.strerror}") from None
    if info is not None and stat.S_ISDIR(info.st_mode):
        raise InputError(f"{where}: is a directory, expected a file path")
    if info is not None and stat.S_ISLNK(info.st_mode):
        raise InputError(f"{where}: is a symlink; name the file itself (it would be replaced)")
    if info is not None and not stat.S_ISREG(info.st_mode):
        raise InputError(
            f"{where}: not a regular file (a device, FIFO or socket is never replaced)"
        )
    real = os.path.realpath(path)
    for other in protected:
        if real == os.path.realpath(other) or (info is not None and _same_file(path, other)):
            raise InputError(f"{where}: is {other}, which voicefallback reads; name another file")
    directory = path.parent
    if not directory.is_dir():
        raise InputError(f"{where}: directory {directory} does not exist")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise InputError(f"{where}: directory {directory} is not writable")


def _same_file(path: Path, other: Path) -> bool:
    try:
        return os.path.samefile(path, other)  # a hard link to the state file, say
    except OSError:
        return False


def write_textfile(path: Path, text: str, protected: Sequence[Path] = ()) -> None:
    """Write beside the target, then rename over it: a scrape never sees half a file.

    The temporary name does not end in `.prom`, so node_exporter ignores it meanwhile.
    Raises OSError when the file cannot be written, and InputError when the target is no
    longer something it may replace.
    """
    check_textfile_target(path, protected)
    tmp_name: str | None = None
    try:
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, 0o644)  # node_exporter runs as another user; metrics hold no secret
        os.replace(tmp_name, path)
        tmp_name = None
    finally:
        if tmp_name is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)
