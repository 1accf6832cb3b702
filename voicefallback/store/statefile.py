"""Opening the SQLite state file safely: refuse what is not ours from its header, create it
complete or not at all (0600 in a 0700 directory), and turn SQLite errors into one line."""

from __future__ import annotations

import os
import secrets
import sqlite3
import stat
import threading
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

from voicefallback.errors import StateBusy, StateError, StateFull
from voicefallback.store.schema import refuse_foreign

SQLITE_HEADER = b"SQLite format 3\x00"
# A writer waits for the lock in short SQLite waits and retries in Python between them, so
# Ctrl-C and SIGTERM are handled within a second even while another process writes.
BUSY_TIMEOUT_S = 1.0
READ_BUSY_TIMEOUT_S = 10.0  # readers in WAL mode almost never wait; when they do, let them


def user_version(conn: sqlite3.Connection) -> int:
    """Check the file is ours and not from a newer version; return its schema version.

    The header was checked before opening; this sees what the WAL may hold beyond it.
    """
    application_id = conn.execute("PRAGMA application_id").fetchone()[0]
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    path = conn.execute("PRAGMA database_list").fetchone()[2]
    has_tables = application_id == 0 and bool(
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    )
    refuse_foreign(path, application_id, version, has_tables)
    return int(version)


# Closing any descriptor of a file drops every POSIX lock the process holds on it, SQLite's
# included (https://sqlite.org/howtocorrupt.html#posix_close_bug). So the header is read only
# while this process has no connection to the file: a long-running process (`serve`) that
# re-read it beside a live connection would pull that connection's locks from under it.
_connections_lock = threading.Lock()
_connections: dict[tuple[int, int], int] = {}  # (device, inode) -> open connections


def hold(path: Path) -> tuple[int, int]:
    """Count a connection about to be made to `path` (before it is made); `release` after."""
    try:
        info = path.stat()
    except OSError as exc:
        raise StateError(f"{path}: cannot use as state file: {exc.strerror}") from None
    identity = (info.st_dev, info.st_ino)
    with _connections_lock:
        _connections[identity] = _connections.get(identity, 0) + 1
    return identity


def release(identity: tuple[int, int]) -> None:
    with _connections_lock:
        left = _connections.pop(identity, 1) - 1
        if left:
            _connections[identity] = left


def check_file(path: Path) -> bool:
    """Refuse what is not our state file, from its header alone; False if there is none yet.

    The header holds the application id (offset 68), user_version (60) and the schema
    cookie (40, nonzero once any table exists). Ours sets all three in the transaction that
    creates the tables, so "tables but no application id" is someone else's database.
    """
    try:
        info = path.stat()
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise StateError(f"{path}: cannot use as state file: {exc.strerror}") from None
    if stat.S_ISDIR(info.st_mode):
        raise StateError(f"{path}: is a directory, expected a state file")
    if not stat.S_ISREG(info.st_mode):
        raise StateError(f"{path}: not a regular file, expected a state file")
    identity = (info.st_dev, info.st_ino)
    try:
        with _connections_lock:
            if identity in _connections:
                return True  # checked when that connection was made, and in use since
            with open(path, "rb") as handle:
                header = handle.read(100)
    except PermissionError:
        raise StateError(f"{path}: state file is not readable (permission denied)") from None
    except OSError as exc:
        raise StateError(f"{path}: cannot read state file: {exc.strerror}") from None
    if not header:
        return False  # created an instant ago by another process, or by `touch`
    if len(header) < 100 or not header.startswith(SQLITE_HEADER):
        raise StateError(f"{path}: not a voicefallback state file (not SQLite)")
    refuse_foreign(
        path,
        int.from_bytes(header[68:72], "big"),
        int.from_bytes(header[60:64], "big"),
        has_tables=int.from_bytes(header[40:44], "big") != 0,
    )
    return True


def check_writable(path: Path) -> None:
    """Say which path cannot be written before any provider call is spent."""
    if path.exists() and not os.access(path, os.W_OK):
        raise StateError(f"{path}: state file is not writable (permission denied)")
    directory = path.parent
    if directory.is_dir() and not os.access(directory, os.W_OK | os.X_OK):
        # SQLite creates its -wal and -shm files beside the state file.
        raise StateError(f"{path}: cannot write: directory {directory} is not writable")


def create_new(path: Path, prepare: Callable[[sqlite3.Connection], None]) -> None:
    """Create the state file complete, or not at all: directory 0700, file 0600 from birth.

    The file is built (`prepare`: WAL and migrations) under a private name, then
    hard-linked into place; the link fails if another process got there first, and then
    theirs is used. Nobody ever sees a half-made file. Where hard links are not supported,
    the file is created empty in place and migrated under the write lock instead. A dangling
    symlink is followed: the file is made where it points (no link can replace the symlink).
    """
    target = Path(os.path.realpath(path))
    try:
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise StateError(f"{path}: cannot create state directory: {exc.strerror}") from None
    partial = target.with_name(f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}.new")
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise StateError(f"{path}: cannot create state file: {exc.strerror}") from None
    os.close(fd)
    try:
        conn = connect(partial)
        try:
            prepare(conn)
        finally:
            conn.close()  # checkpoints everything into the file and removes its -wal
        try:
            os.link(partial, target)
        except FileExistsError:
            pass  # another process created it first: use theirs
        except OSError:
            _create_empty(path, target)
    finally:
        for leftover in (partial, side_file(partial, "-wal"), side_file(partial, "-shm")):
            with suppress(OSError):
                leftover.unlink()


def adopt_empty(path: Path) -> None:
    """An empty file at the path (`touch`): filled as our state, so made as private as a
    new one (0600) before anything is written into it."""
    with suppress(OSError):
        if stat.S_IMODE(path.stat().st_mode) & 0o077:
            path.chmod(0o600)


def _create_empty(path: Path, target: Path) -> None:
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise StateError(f"{path}: cannot create state file: {exc.strerror}") from None
    os.close(fd)


def side_file(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def connect(
    path: Path, *, readonly: bool = False, immutable: bool = False, any_thread: bool = False
) -> sqlite3.Connection:
    """The one place a connection is made. `any_thread`: opened on one thread, used on
    another (never two at once)."""
    try:
        if readonly:
            query = "?mode=ro&immutable=1" if immutable else "?mode=ro"
            conn = sqlite3.connect(
                path.resolve().as_uri() + query,
                uri=True,
                timeout=READ_BUSY_TIMEOUT_S,
                isolation_level=None,
            )
        else:
            conn = sqlite3.connect(
                path,
                timeout=BUSY_TIMEOUT_S,
                isolation_level=None,
                check_same_thread=not any_thread,
            )
        conn.row_factory = sqlite3.Row
        if not readonly:
            conn.execute("PRAGMA synchronous=NORMAL")  # safe in WAL: consistent after a crash
    except sqlite3.Error as exc:
        waited = READ_BUSY_TIMEOUT_S if readonly else BUSY_TIMEOUT_S
        raise state_error(path, exc, "open", waited) from None
    return conn


def connect_readonly(path: Path) -> tuple[sqlite3.Connection, int]:
    """A read-only connection and the file's schema version, checked before anything else."""
    if not os.access(path, os.R_OK):
        raise StateError(f"{path}: state file is not readable (permission denied)")
    try:
        try:
            return _checked(connect(path, readonly=True))
        except sqlite3.OperationalError:
            # A WAL file needs a -shm file beside it, which a reader may not be allowed to
            # create (read-only directory or filesystem). With no -wal file either, every
            # committed write is in the main file, so it can be read as it stands.
            if side_file(path, "-wal").exists() or os.access(path.parent, os.W_OK):
                raise
        return _checked(connect(path, readonly=True, immutable=True))
    except sqlite3.Error as exc:
        raise state_error(path, exc, "read", READ_BUSY_TIMEOUT_S) from None


def _checked(conn: sqlite3.Connection) -> tuple[sqlite3.Connection, int]:
    try:
        return conn, user_version(conn)
    except BaseException:
        conn.close()
        raise


def _primary_code(exc: sqlite3.Error) -> int | None:
    """SQLite's primary result code (extended codes keep it in the low byte), if it gave one."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else None


def is_busy(exc: sqlite3.Error) -> bool:
    return _primary_code(exc) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def busy_timeout_s(conn: sqlite3.Connection | None) -> float:
    """How long SQLite waits for a lock on this connection before it reports it busy."""
    if conn is not None:
        with suppress(sqlite3.Error):
            return float(conn.execute("PRAGMA busy_timeout").fetchone()[0]) / 1000
    return BUSY_TIMEOUT_S


def state_error(path: Path, exc: sqlite3.Error, action: str, waited_s: float) -> StateError:
    """One line for a failed SQLite call; `waited_s` is how long a lock was waited for."""
    # Classified by SQLite's result code: message text varies with versions and may quote data.
    text = str(exc)
    code = _primary_code(exc)
    if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        # Only after waiting that long (retries, or SQLite's busy timeout): some process
        # holds a transaction open.
        return StateBusy(
            f"{path}: state file busy: another process kept it locked for over"
            f" {waited_s:g} s; try again"
        )
    if code == sqlite3.SQLITE_NOTADB:
        return StateError(f"{path}: not a voicefallback state file (not SQLite)")
    if code == sqlite3.SQLITE_READONLY:
        return StateError(f"{path}: state file is not writable")
    if code == sqlite3.SQLITE_CANTOPEN:
        return StateError(f"{path}: cannot open state file (check the path and permissions)")
    if code == sqlite3.SQLITE_FULL:
        return StateFull(f"{path}: disk full while writing; nothing was written")
    if code == sqlite3.SQLITE_IOERR:
        # What a full disk most often looks like from SQLite (a failed write or sync).
        return StateFull(f"{path}: disk I/O error (is the disk full?); nothing was written")
    if code == sqlite3.SQLITE_CORRUPT:
        return StateError(f"{path}: state file is corrupt ({text})")
    return StateError(f"{path}: cannot {action} state file: {text}")
