"""`probe`: call models now and record the results (once, or on an interval)."""

from __future__ import annotations

import math
import sys
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from voicefallback.cli.common import (
    CheckOption,
    ConfigOption,
    DbOption,
    JsonOption,
    ModelsArgument,
    ModeOption,
    RequireOption,
    app,
    domain_errors,
    gate_failed,
    select_with,
)
from voicefallback.config import DEFAULT_CONCURRENCY, Model, Registry, load_registry, resolve_mode
from voicefallback.documents import print_json
from voicefallback.environment import config_path, db_path, display_location, file_stamp
from voicefallback.errors import InputError, ProbeBusy, VoicefallbackError
from voicefallback.locking import DEFAULT_WAIT_S
from voicefallback.records import Mode
from voicefallback.tables import print_error


@app.command()
def probe(
    models: ModelsArgument = None,
    config: ConfigOption = None,
    db: DbOption = None,
    mode: ModeOption = None,
    json: JsonOption = False,
    check: CheckOption = False,
    require: RequireOption = None,
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet",
            "-q",
            help="Print nothing when all is well; one line on stderr per model whose status "
            "changed (for cron mail).",
        ),
    ] = False,
    every: Annotated[
        Optional[str],
        typer.Option(
            "--every",
            metavar="SECONDS",
            help="Keep probing on this interval (seconds, or 30s, 5m, 1h) until Ctrl-C or "
            "SIGTERM, then exit 0.",
            show_default=False,
        ),
    ] = None,
    textfile: Annotated[
        Optional[Path],
        typer.Option(
            "--textfile",
            help="Also write every model's health in Prometheus text format to this file, "
            "atomically (for node_exporter's textfile collector).",
            dir_okay=False,
            show_default=False,
        ),
    ] = None,
    lock_timeout: Annotated[
        float,
        typer.Option(
            "--lock-timeout",
            min=0,
            metavar="SECONDS",
            help="How long to wait while another probe holds the state file, before exit 75.",
        ),
    ] = DEFAULT_WAIT_S,
    concurrency: Annotated[
        int, typer.Option("--concurrency", min=1, max=256, help="Models probed at once.")
    ] = DEFAULT_CONCURRENCY,
    if_older: Annotated[
        Optional[str],
        typer.Option(
            "--if-older",
            metavar="SPAN",
            help="Probe only the models whose latest evidence (probe, start or report, from "
            "any host) is older than this (e.g. 60s, 5m): one cron line per host, one probe "
            "per model for the fleet.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Probe models now and record the results.

    Example: voicefallback probe --quiet --textfile /var/lib/node_exporter/voicefallback.prom
    """
    import asyncio  # here, not at the top: read-only commands need no event loop

    from voicefallback import documents, tables
    from voicefallback.durations import parse_duration
    from voicefallback.probing import probe_run
    from voicefallback.records import utcnow

    required = list(require or [])
    with domain_errors():
        if quiet and json:
            raise InputError("--quiet and --json: choose one")
        if not math.isfinite(lock_timeout):  # a NaN wait would never end, nor an infinite one
            raise InputError(f"--lock-timeout: must be a number of seconds, got {lock_timeout}")
        interval = parse_duration(every, "--every") if every is not None else None
        older = parse_duration(if_older, "--if-older") if if_older is not None else None
        if older is not None and (check or required):
            # A model skipped as fresh would pass the gate unseen: gate with `health --check`.
            raise InputError("--if-older: cannot gate an exit code (--check, --require)")
        if interval is not None and (check or required):
            raise InputError("--every: cannot gate an exit code (--check, --require) on a loop")
        plan = _Plan.load(config_path(config), models, required, mode)
        state = db_path(db)
        if textfile is not None:
            from voicefallback.metrics import check_textfile_target

            check_textfile_target(textfile, _protected(state, plan.registry))
    terminal = not json and not quiet and sys.stdout.isatty()

    def one_round() -> dict[str, Any]:
        nonlocal plan
        if interval is not None:
            plan = plan.reloaded(quiet)
        registry, selected, chosen_mode = plan.registry, plan.selected, plan.mode
        by_id = {m.id: m for m in selected}
        progress = terminal and len(selected) > 1
        started = utcnow()
        with tables.probe_progress(len(selected)) if progress else nullcontext() as on_result:
            try:
                probed = asyncio.run(
                    probe_run(
                        registry,
                        selected,
                        state,
                        chosen_mode,
                        concurrency,
                        lock_wait_s=lock_timeout,
                        on_result=on_result,
                        if_older_s=older,
                    )
                )
            except ProbeBusy as exc:
                raise ProbeBusy(f"{exc} (see --lock-timeout)") from None
        rows = [(by_id[p.result.model], p, p.status) for p in probed]
        document = documents.probe_json(started, chosen_mode, rows)
        if json:
            print_json(document)
        elif quiet:
            for line in tables.status_change_lines(probed):
                tables.print_notice(line)
        elif not probed and older is not None:
            tables.print_notice(f"nothing to probe: every model has evidence newer than {if_older}")
        else:
            tables.print_probe_table(document)
            tables.print_files(registry.path, state)
        if textfile is not None:
            _write_textfile(textfile, registry, state)
        return document

    if interval is None:
        with domain_errors():
            document = one_round()
        if gate_failed(document["results"], check, required):
            raise typer.Exit(1)
        return
    from voicefallback.repeat import repeat_every

    with domain_errors():  # main() turns SIGTERM into Terminated, which ends the loop too
        rounds = repeat_every(interval, one_round, lambda exc: print_error(str(exc)))
    if not quiet and not json:
        tables.print_notice(f"stopped after {rounds} rounds")


@dataclass(frozen=True)
class _Plan:
    """What a round probes, from models.toml and the command line.

    `probe --every` re-reads models.toml before a round when the file changed, as `serve`
    does: a model added is probed. A file that does not load (or no longer holds a listed
    model) is reported in one line, once, and the last good registry stays.
    """

    registry: Registry
    selected: list[Model]
    mode: Mode
    stamp: tuple[int, int, int] | None  # the file as it was read: mtime, size, inode
    listed: list[str] | None
    required: list[str]
    mode_option: str | None

    @classmethod
    def load(
        cls, path: Path, listed: list[str] | None, required: list[str], mode_option: str | None
    ) -> _Plan:
        stamp = file_stamp(path)  # before reading: a change made meanwhile is seen next round
        registry = load_registry(path)
        selected = select_with(registry, listed, required)
        mode = resolve_mode(mode_option, registry)
        return cls(registry, selected, mode, stamp, listed, required, mode_option)

    def reloaded(self, quiet: bool) -> _Plan:
        from voicefallback.tables import print_notice

        path = self.registry.path
        if file_stamp(path) == self.stamp:
            return self
        try:
            plan = _Plan.load(path, self.listed, self.required, self.mode_option)
        except VoicefallbackError as exc:
            print_error(f"{path} not reloaded, the previous registry stays: {exc}")
            return replace(self, stamp=file_stamp(path))
        if not quiet:
            print_notice(f"{path} reloaded: {len(plan.selected)} models to probe")
        return plan


def _protected(state: Path | str, registry: Registry) -> list[Path]:
    """What a --textfile must never replace: the state file, its side files, the registry."""
    from voicefallback.locking import lock_path

    if not isinstance(state, Path):  # a postgresql:// URL: no local state file
        return [registry.path]

    sides = [state.with_name(state.name + suffix) for suffix in ("-wal", "-shm", "-journal")]
    return [state, *sides, lock_path(state), registry.path]


def _write_textfile(path: Path, registry: Registry, state: Path | str) -> None:
    """Prometheus text for every registered model, not only the ones just probed.

    The probe is recorded by now: a failure here says so, and exits 74, not 2.
    """
    from voicefallback.errors import PartlyWritten
    from voicefallback.metrics import prometheus_text, write_textfile
    from voicefallback.records import utcnow
    from voicefallback.reports import health_report
    from voicefallback.stats import Window

    report = health_report(
        registry.models,
        state,
        Window(),
        utcnow(),
        with_event_counts=True,
        connect_timeout_s=registry.connect_timeout_s,
        mode=resolve_mode(None, registry),
    )
    try:
        write_textfile(path, prometheus_text(report), _protected(state, registry))
    except (OSError, InputError) as exc:
        if isinstance(exc, OSError):
            why = exc.strerror or str(exc)
        else:
            why = str(exc).removeprefix(f"--textfile {path}: ")
        raise PartlyWritten(
            f"--textfile {path}: not written ({why}), left as it was; the probe results"
            f" were recorded in {display_location(state)}"
        ) from None
