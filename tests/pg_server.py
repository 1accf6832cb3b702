"""A throwaway PostgreSQL server for tests and benchmarks, from Debian's server binaries.

The server runs in a temporary directory as an unprivileged user (`nobody` when we are
root), listens on a unix socket and a free 127.0.0.1 port, and is stopped and deleted at
the end. Each test gets a fresh database owned by a role with a password, reached over TCP
the way a fleet host would reach it.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any

PASSWORD = "vf-test-pw-7Qx9z"  # the role's password: tests check it is never printed
ROLE = "vf"


def server_bin() -> Path | None:
    """The newest /usr/lib/postgresql/*/bin with initdb, or None."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: (
            int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0
        ),
    )
    return Path(found[-1]).parent if found else None


def missing_reason() -> str | None:
    """Why PostgreSQL tests cannot run here, or None when they can."""
    if server_bin() is None:
        return "no PostgreSQL server binaries (apt-get install postgresql)"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "no psycopg (pip install -e '.[postgres]')"
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PostgresServer:
    def __init__(self, *, fsync: bool = False) -> None:
        bin_dir = server_bin()
        assert bin_dir is not None, missing_reason()
        self.bin = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="vf-pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root / "socket"
        self.port = _free_port()
        self._run_as: dict[str, Any] = {}
        if os.geteuid() == 0:  # the server refuses to run as root
            self._run_as = {"user": "nobody", "group": "nogroup", "extra_groups": []}
            shutil.chown(self.root, "nobody", "nogroup")
        self.root.chmod(0o755)
        self._as_server("mkdir", "-m", "700", str(self.data), str(self.socket_dir))
        self._as_server(
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        )
        settings = [
            "listen_addresses = '127.0.0.1'",
            f"port = {self.port}",
            f"unix_socket_directories = '{self.socket_dir}'",
            "max_connections = 200",
            # Without fsync a commit is safe from a crash of the server, not of the machine:
            # enough for tests, which restart the server but never the machine. Commits stay
            # synchronous: an acknowledged commit must survive `pg_ctl stop -m immediate`.
            f"fsync = {'on' if fsync else 'off'}",
            f"full_page_writes = {'on' if fsync else 'off'}",
            "synchronous_commit = on",
        ]
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write("\n".join(settings) + "\n")
        self.start()
        self.admin(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{PASSWORD}'")
        self._databases = itertools.count(1)

    def _as_server(self, *args: str) -> None:
        subprocess.run(args, check=True, capture_output=True, timeout=120, **self._run_as)

    def start(self) -> None:
        self._as_server(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.root / "server.log"),
            "-w",
            "-t",
            "60",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        self._as_server(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self, mode: str = "immediate") -> None:
        self.stop(mode)
        self.start()

    def admin(self, sql: str, dbname: str = "postgres") -> list[tuple[Any, ...]]:
        """Run one statement as the superuser over the unix socket."""
        import psycopg

        with psycopg.connect(
            host=str(self.socket_dir),
            port=self.port,
            user="postgres",
            dbname=dbname,
            autocommit=True,
        ) as conn:
            cursor = conn.execute(sql.encode())
            return list(cursor.fetchall()) if cursor.description else []

    def holder(self, url: str) -> Any:
        """A superuser connection to `url`'s database, in a transaction: what it locks stays
        locked until its rollback (as `VACUUM FULL` or another host would hold it)."""
        import psycopg

        return psycopg.connect(
            host=str(self.socket_dir),
            port=self.port,
            user="postgres",
            dbname=url.rsplit("/", 1)[1],
        )

    def new_database(self) -> str:
        """A fresh database owned by the test role; its URL (TCP, password in the URL)."""
        name = f"vf_{os.getpid()}_{next(self._databases)}"
        self.admin(f"CREATE DATABASE {name} OWNER {ROLE}")
        return self.url(name)

    def url(self, dbname: str, *, password: bool = True) -> str:
        secret = f":{PASSWORD}" if password else ""
        return f"postgresql://{ROLE}{secret}@127.0.0.1:{self.port}/{dbname}"

    def socket_url(self, dbname: str) -> str:
        """The same database over the unix socket (local trust, no password)."""
        return f"postgresql://{ROLE}@/{dbname}?host={self.socket_dir}&port={self.port}"

    def close(self) -> None:
        try:
            self.stop("immediate")
        except subprocess.CalledProcessError:
            pass
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def rows(location: Path | str, sql: str) -> list[tuple[Any, ...]]:
    """Rows of one query on a state, SQLite file or PostgreSQL URL, as plain tuples."""
    if isinstance(location, str) and location.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(location) as conn:
            return [tuple(row) for row in conn.execute(sql.encode()).fetchall()]
    import sqlite3

    with sqlite3.connect(location) as conn:
        return [tuple(row) for row in conn.execute(sql).fetchall()]
