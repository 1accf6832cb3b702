"""The probe lock: one `probe` at a time per state file, whoever starts it (cron, systemd, CI).

An advisory `flock` on `<state file>.probe.lock`, created 0600 beside the state file. The
kernel drops the lock when the process dies, however it dies, so a crash never leaves a stale
lock behind. The file itself is left in place: deleting a lock file races with its next user.
`start` never takes this lock: a session must not wait on a cron probe.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from voicefallback.errors import ProbeBusy, StateError

DEFAULT_WAIT_S = 10.0
_POLL_S = 0.05


def lock_path(db: Path) -> Path:
    """Beside the file the path resolves to: the same state file reached through a symlink
    (or `..`) has one lock, not one per spelling of its path."""
    real = Path(os.path.realpath(db))
    return real.with_name(real.name + ".probe.lock")


@contextmanager
def probe_lock(db: Path, wait_s: float = DEFAULT_WAIT_S) -> Iterator[None]:
    """Hold the probe lock of `db`, waiting up to `wait_s` seconds for another probe."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no in-app lock; overlapping probes stay consistent anyway
        yield
        return
    path = lock_path(db)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise StateError(f"{path}: cannot open the probe lock: {exc.strerror}") from None
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = _holder(fd)
                    raise ProbeBusy(
                        f"another probe{holder} is still running on {db}; waited {wait_s:g} s"
                    ) from None
                time.sleep(_POLL_S)
        # Who holds it, for the message the next waiter prints; best effort. Emptied on
        # release, so the file never names a process that no longer holds the lock.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            with suppress(OSError):
                os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the lock


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return ""
    if not text.isdigit():
        return ""
    # `serve` probes on a schedule and on request: a second round waits on the first.
    return " (in this process)" if int(text) == os.getpid() else f" (pid {text})"
