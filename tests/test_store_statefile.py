"""State files that are not what they seem: foreign, newer, unwritable. Refused, untouched.
And a long-lived connection keeps its locks while the file is opened again beside it."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, SHIPPED_CONFIG
from voicefallback.config import Thresholds
from voicefallback.health import apply_probe
from voicefallback.records import ProbeResult, utcnow
from voicefallback.store import APPLICATION_ID, SCHEMA_VERSION, open_store

SONNET = "anthropic:claude-3-5-sonnet-latest"
COMMANDS = [
    ("probe", "--json"),
    ("health", "--json"),
    ("start", "--simulation-id", "s", "--primary", SONNET, "--json"),
    ("fallbacks", "--json"),
    ("prune", "--json"),
]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def text_file(db: Path) -> None:
    db.write_text("name,score\nada,10\n")


def other_apps_sqlite(db: Path) -> None:
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE notes (body TEXT)")
    conn.execute("INSERT INTO notes VALUES ('mine')")
    conn.commit()
    conn.close()


def other_apps_sqlite_in_wal_mode(db: Path) -> None:
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE notes (body TEXT)")
    conn.commit()
    conn.close()


def other_application_id(db: Path) -> None:
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA application_id = 1234")
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()


def empty_sqlite_with_a_user_version(db: Path) -> None:
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA user_version = 7")
    conn.close()


def ours_from_a_newer_version(db: Path) -> None:
    from voicefallback.store.sqlite import SQLiteStore

    SQLiteStore.open(db, write=True).close()
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (text_file, "not a voicefallback state file (not SQLite)"),
        (other_apps_sqlite, "not a voicefallback state file (an unrelated SQLite database)"),
        (other_apps_sqlite_in_wal_mode, "not a voicefallback state file (an unrelated SQLite"),
        (other_application_id, "not a voicefallback state file (application id 0x4d2)"),
        (empty_sqlite_with_a_user_version, "not a voicefallback state file"),
        (
            ours_from_a_newer_version,
            f"written by a newer voicefallback (schema {SCHEMA_VERSION + 1}",
        ),
    ],
)
def test_a_file_that_is_not_ours_is_refused_and_left_byte_for_byte(cli, db_file, make, message):
    db_file.parent.mkdir(parents=True)
    make(db_file)
    before, files = digest(db_file), listing(db_file.parent)
    for command in COMMANDS:
        result = cli(*command)
        assert result.exit_code == 2, (command, result.stdout, result.stderr)
        assert result.stdout == ""
        assert result.stderr.count("\n") == 1, result.stderr
        assert str(db_file) in result.stderr and message in result.stderr, result.stderr
        assert digest(db_file) == before, command
        assert listing(db_file.parent) == files, command  # no -wal, -shm or lock file


def test_a_newer_schema_still_in_the_write_ahead_log_is_refused_too(cli, db_file):
    assert cli("probe", "--json").exit_code == 0
    newer = sqlite3.connect(db_file, isolation_level=None)
    try:
        # A newer voicefallback, still running, has migrated; nothing is checkpointed yet.
        newer.execute("PRAGMA wal_autocheckpoint = 0")
        newer.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        before = digest(db_file)
        for command in COMMANDS:
            result = cli(*command)
            assert result.exit_code == 2 and "written by a newer voicefallback" in result.stderr
        assert digest(db_file) == before
    finally:
        newer.close()


@pytest.mark.parametrize("command", [("fallbacks", "--json"), ("health", "--json")])
def test_a_reader_kept_out_by_a_lock_says_how_long_it_really_waited(
    cli, db_file, monkeypatch, command
):
    """Readers give up after the read busy timeout, not the writers' 60 s of retries."""
    from voicefallback.store import statefile

    assert cli("probe", "--json").exit_code == 0
    locker = sqlite3.connect(db_file, isolation_level=None)
    try:
        locker.execute("PRAGMA journal_mode=DELETE")  # no WAL: a writer shuts readers out
        monkeypatch.setattr(statefile, "READ_BUSY_TIMEOUT_S", 0.25)
        locker.execute("BEGIN EXCLUSIVE")
        result = cli(*command)
    finally:
        locker.close()
    assert result.exit_code == 75 and result.stdout == "", result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert "busy: another process kept it locked for over 0.25 s" in result.stderr


def test_a_read_on_an_open_store_kept_out_by_a_lock_says_how_long_it_waited(
    cli, db_file, monkeypatch
):
    from voicefallback.errors import StateError
    from voicefallback.store import statefile
    from voicefallback.store.sqlite import SQLiteStore

    assert cli("probe", "--json").exit_code == 0
    monkeypatch.setattr(statefile, "READ_BUSY_TIMEOUT_S", 0.25)
    locker = sqlite3.connect(db_file, isolation_level=None)
    try:
        locker.execute("PRAGMA journal_mode=DELETE")
        with SQLiteStore.open(db_file, write=False) as reader:
            locker.execute("BEGIN EXCLUSIVE")
            with pytest.raises(StateError, match=r"locked for over 0\.25 s; try again"):
                reader.events()
    finally:
        locker.close()


@pytest.mark.parametrize("kind", ["directory", "fifo", "device"])
def test_a_state_path_that_is_not_a_regular_file_is_refused_at_once(cli, db_file, kind):
    db_file.parent.mkdir(parents=True)
    if kind == "directory":
        db_file.mkdir()
    elif kind == "fifo":
        os.mkfifo(db_file)  # reading it would block forever
    else:
        db_file.parent.rmdir()
        db_file.parent.symlink_to("/dev")
        db_file = db_file.parent / "null"
    os.environ["VOICEFALLBACK_DB"] = str(db_file)  # restored by the db_file fixture
    for command in COMMANDS:
        result = cli(*command)
        assert result.exit_code == 2, (command, result.stderr)
        assert str(db_file) in result.stderr and result.stderr.count("\n") == 1
        expected = "is a directory" if kind == "directory" else "not a regular file"
        assert expected in result.stderr, result.stderr


# -- permissions: root ignores file modes, so these run as an unprivileged user ------------

NOBODY = 65534


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory an unprivileged user can reach (pytest's tmp dirs are private to root)."""
    if os.geteuid() != 0 and os.access("/", os.W_OK):
        pytest.skip("needs root to switch to an unprivileged user, or to run as one")
    path = Path(tempfile.mkdtemp(prefix="vfb-perm-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def reachable_by_others(path: Path) -> bool:
    """Whether a user other than the owner can read this file and reach it."""
    path = path.resolve()
    if not path.stat().st_mode & 0o004:
        return False
    return all(parent.stat().st_mode & 0o001 for parent in path.parents)


def interpreter_for_others() -> tuple[str, str]:
    """A Python of this version the unprivileged user can run, and the PYTHONPATH it needs."""
    packages = os.pathsep.join([sysconfig.get_paths()["purelib"], str(REPO)])
    if reachable_by_others(Path(sys.executable)):
        return sys.executable, packages
    name = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (f"/usr/bin/{name}", f"/usr/local/bin/{name}"):
        if Path(candidate).exists() and reachable_by_others(Path(candidate)):
            return candidate, packages
    pytest.skip(f"no {name} that an unprivileged user may run (this one is private to root)")


@pytest.fixture
def as_user(shared_dir: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    config = shared_dir / "models.toml"
    shutil.copy(SHIPPED_CONFIG, config)
    config.chmod(0o644)
    switch = {"user": NOBODY, "group": NOBODY, "extra_groups": []} if os.geteuid() == 0 else {}
    python, packages = interpreter_for_others() if switch else (sys.executable, str(REPO))
    if switch and not reachable_by_others(REPO / "voicefallback" / "cli" / "__init__.py"):
        pytest.skip("the source tree is private to root")

    def run(*args: str, db: Path) -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(shared_dir),
            "VOICEFALLBACK_CONFIG": str(config),
            "VOICEFALLBACK_DB": str(db),
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONPATH": packages,
        }
        return subprocess.run(
            [python, "-m", "voicefallback", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            cwd=shared_dir,
            **switch,  # type: ignore[arg-type]
        )

    return run


def make_state(db: Path) -> None:
    env = {**os.environ, "VOICEFALLBACK_CONFIG": str(SHIPPED_CONFIG), "VOICEFALLBACK_DB": str(db)}
    for args in (["probe"], ["start", "--simulation-id", "s", "--primary", SONNET]):
        subprocess.run(
            [sys.executable, "-m", "voicefallback", *args, "--json"],
            env=env,
            check=True,
            capture_output=True,
        )


WRITERS = [("probe", "--json"), ("prune", "--json")]
READERS = [("health", "--json"), ("fallbacks", "--json")]
START = ("start", "--simulation-id", "s2", "--primary", SONNET, "--json")


def assert_started_unrecorded(result: subprocess.CompletedProcess[str], *names: str) -> None:
    """The state's fault never fails the session: it starts, says in one line what was not
    recorded and where it went (here nowhere: not even the spool may be written)."""
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["chosen"] == "openai:gpt-4o-mini" and document["degraded"] is True
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert "not recorded" in result.stderr and "lost: " in result.stderr, result.stderr
    for name in names:
        assert name in result.stderr, result.stderr


def assert_refused(result: subprocess.CompletedProcess[str], *names: str) -> None:
    assert result.returncode == 2, result.stderr
    assert result.stdout == "" and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr
    for name in names:
        assert name in result.stderr, result.stderr


def test_unwritable_state_file_writers_refuse_naming_it_readers_still_read(shared_dir, as_user):
    state = shared_dir / "state"
    state.mkdir(mode=0o755)
    db = state / "state.db"
    make_state(db)
    db.chmod(0o644)  # readable by others, writable only by its owner
    before, files = digest(db), listing(state)
    for command in WRITERS:
        assert_refused(as_user(*command, db=db), str(db), "not writable")
    assert_started_unrecorded(as_user(*START, db=db), str(db), "not writable")
    # The directory is not writable either, so no -shm can be made: read the file as it is.
    health = as_user("health", "--json", db=db)
    assert health.returncode == 0, health.stderr
    statuses = {m["model"]: m["status"] for m in json.loads(health.stdout)["models"]}
    assert statuses[SONNET] == "unhealthy"
    events = as_user("fallbacks", "--json", db=db)
    assert events.returncode == 0, events.stderr
    assert [e["simulationId"] for e in json.loads(events.stdout)["events"]] == ["s"]
    assert digest(db) == before and listing(state) == files


def test_unreadable_state_file_fails_the_same_way_for_readers(shared_dir, as_user):
    state = shared_dir / "state"
    state.mkdir(mode=0o755)
    db = state / "state.db"
    make_state(db)  # 0600, owned by someone else
    before = digest(db)
    for command in READERS:
        assert_refused(as_user(*command, db=db), str(db), "not readable")
    for command in (*WRITERS, START):  # a start that cannot even read its state: refused
        assert_refused(as_user(*command, db=db), str(db))
    assert digest(db) == before


def test_unwritable_state_directory_is_named_and_nothing_is_created(shared_dir, as_user):
    state = shared_dir / "state"
    state.mkdir(mode=0o755)
    db = state / "state.db"
    assert_refused(as_user("probe", db=db), str(db), f"directory {state} is not writable")
    assert_started_unrecorded(as_user(*START, db=db), f"directory {state} is not writable")
    nested = state / "deeper" / "state.db"
    assert_refused(as_user("probe", db=nested), str(nested), "cannot create state directory")
    for command in READERS:  # reading a missing file is empty state, as always
        assert as_user(*command, db=db).returncode == 0
    assert listing(state) == []


def test_writable_directory_but_foreign_owned_file(shared_dir, as_user):
    state = shared_dir / "state"
    state.mkdir(mode=0o777)
    db = state / "state.db"
    make_state(db)
    db.chmod(0o644)
    before = digest(db)
    assert_refused(as_user("probe", db=db), str(db), "state file is not writable")
    health = as_user("health", "--json", db=db)
    assert health.returncode == 0, health.stderr
    assert digest(db) == before


def test_application_id_spells_vfb1():
    assert APPLICATION_ID.to_bytes(4, "big") == b"VFB1"


# -- a long-lived connection keeps its locks -----------------------------------------------

# One process with a connection open (a `serve`, a voice worker's router) keeps its SQLite
# locks while it opens the state again and other processes come and go. Closing any descriptor
# of a file drops every POSIX lock the process holds on it; reading the header beside a live
# connection used to do that, and the next process to close its own connection then thought it
# was the last, checkpointed and removed the WAL under the first.


OTHER_PROCESS = (
    "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]);"
    " c.execute('SELECT count(*) FROM probes').fetchone(); c.close()"
)


def test_reads_beside_an_open_writer_keep_its_locks_while_others_come_and_go(db_file):
    db_file.parent.mkdir(parents=True)

    def call() -> ProbeResult:
        return ProbeResult("m", True, utcnow(), latency_ms=1, ttft_ms=1)

    with open_store(db_file, write=True) as writer:
        writer.record([call()], {"m": Thresholds()}, update=apply_probe)
        for _ in range(3):
            with open_store(db_file, write=False) as reader:  # as every read route does
                assert "m" in reader.snapshots(["m"])
            subprocess.run([sys.executable, "-c", OTHER_PROCESS, str(db_file)], check=True)
            writer.record([call()], {"m": Thresholds()}, update=apply_probe)
    with open_store(db_file, write=False) as reader:
        assert len(reader.recent_calls("m", limit=10)) == 4
