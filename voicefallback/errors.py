"""Domain exceptions; each carries the exit code the CLI turns it into."""

from __future__ import annotations


class VoicefallbackError(Exception):
    """Base class: a problem the user can fix, reported as one line."""

    exit_code = 2


class ConfigError(VoicefallbackError):
    """models.toml is missing, unreadable or invalid."""


class InputError(VoicefallbackError):
    """A command-line option or request body is invalid."""


class StateError(VoicefallbackError):
    """The state file cannot be used (not ours, too new, not writable, ...)."""


class StateBusy(StateError):
    """Another process kept the state file locked past the wait; nothing written, try again."""

    exit_code = 75  # EX_TEMPFAIL, like a busy probe lock: one code for "busy" everywhere


class StateUnreachable(StateError):
    """The state database cannot be reached (down, wrong host, refused login), or stopped
    answering: temporary, like a busy file; nothing written, try again."""

    exit_code = 75


class StateFull(StateError):
    """The disk under the state is full (or failed a write): nothing of the write was kept;
    temporary once space is freed, so not "bad input"."""

    exit_code = 75


class StateMoved(StateError):
    """The state path no longer leads to the file this process has open (deleted, or
    replaced by a backup or another file): nothing was written into the old one."""


class ProbeBusy(VoicefallbackError):
    """Another `probe` holds the state file's probe lock; try again later."""

    exit_code = 75  # EX_TEMPFAIL (sysexits.h): a temporary condition, retrying may work


class PartlyWritten(VoicefallbackError):
    """Something was written and something else could not be (a probe was recorded, its
    --textfile was not); the message says which. Never exit 2, which means nothing written."""

    exit_code = 74  # EX_IOERR (sysexits.h): an error while doing I/O on some file


class Terminated(BaseException):
    """SIGTERM arrived: unwinds like Ctrl-C, so an open transaction rolls back (exit 143).

    Not an Exception, so no `except Exception` swallows it; only the entry point catches it.
    """

    exit_code = 143  # 128 + SIGTERM, as a shell reports it
