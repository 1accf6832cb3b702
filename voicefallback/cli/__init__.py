"""The command line: parse options, call the core, render. No SQL and no SDK calls here.

One module per command group; importing this package registers every command on `app`.
"""

from __future__ import annotations

import signal
import sys
from typing import Any

import typer

from voicefallback.cli import (  # noqa: F401 (registers)
    admin,
    fallbacks,
    health,
    probe,
    report,
    serve,
    start,
    state,
)
from voicefallback.cli.common import app
from voicefallback.errors import Terminated
from voicefallback.tables import print_error

__all__ = ["app", "main"]


def _terminate(signum: int, frame: object) -> None:
    raise Terminated()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    """Entry point: usage errors become one line on stderr (exit 2), like domain errors.

    SIGTERM unwinds like Ctrl-C (rolling back any open transaction): exit 143, or 130.
    Ctrl-C interrupts at once, even in a wait for the write lock: asyncio.run's own handler
    (which only cancels at the next await) is kept out by installing an equivalent first.
    """
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _terminate)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _interrupt)
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
        if type(exc).__name__ == "NoArgsIsHelpError":
            code = 0  # bare `voicefallback` (or a bare group): the help is printed, not an error
        else:
            print_error(f"{_where(exc, sys.argv[1:])}{exc.format_message()}")
            code = exc.exit_code
    sys.exit(code or 0)


def _where(exc: Exception, argv: list[str]) -> str:
    """The command a usage error belongs to, as "start: " (nothing for the root)."""
    context = getattr(exc, "ctx", None)
    if context is not None:
        if context.parent is None:
            return ""
        return str(context.command_path).partition(" ")[2] + ": "
    # Some errors (an option missing its value) carry no context: read the command from argv.
    from typer.main import get_command

    group: Any = get_command(app)
    names = []
    for token in argv:
        group = getattr(group, "commands", {}).get(token)
        if group is None:
            break
        names.append(token)
    return " ".join(names) + ": " if names else ""
