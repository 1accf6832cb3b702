"""The command line: parse options, call the core, render. No SQL and no SDK calls here.

One module per command group; importing this package registers every command on `app`.
"""

from __future__ import annotations

import signal
import sys

import typer

from voicefallback.cli import admin, fallbacks, health, probe, start  # noqa: F401 (registers)
from voicefallback.cli.common import app
from voicefallback.errors import Terminated
from voicefallback.tables import print_error

__all__ = ["app", "main"]


def _terminate(signum: int, frame: object) -> None:
    raise Terminated()


def main() -> None:
    """Entry point: usage errors become one line on stderr (exit 2), like domain errors.

    SIGTERM unwinds like Ctrl-C (rolling back any open transaction): exit 143, or 130.
    """
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _terminate)
    try:
        code = app(prog_name="voicefallback", standalone_mode=False)
    except Terminated:
        print_error("terminated")
        code = Terminated.exit_code
    except KeyboardInterrupt:  # outside a command's own handling, e.g. while printing
        print_error("interrupted")
        code = 130
    except typer.Abort:
        code = 130
    except Exception as exc:
        # Typer's bundled Click raises its UsageError family here; the rest are bugs.
        if not hasattr(exc, "format_message") or not hasattr(exc, "exit_code"):
            raise
        context = getattr(exc, "ctx", None)
        command = getattr(getattr(context, "command", None), "name", None)
        where = f"{command}: " if command and context.parent is not None else ""  # type: ignore[union-attr]
        print_error(f"{where}{exc.format_message()}")
        code = exc.exit_code
    sys.exit(code or 0)
