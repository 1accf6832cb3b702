"""One process with a connection open (a `serve`, a voice worker's router) keeps its SQLite
locks while it opens the state again and other processes come and go.

Closing any descriptor of a file drops every POSIX lock the process holds on it; reading the
header beside a live connection used to do that, and the next process to close its own
connection then thought it was the last, checkpointed and removed the WAL under the first."""

from __future__ import annotations

import subprocess
import sys

from voicefallback.config import Thresholds
from voicefallback.health import apply_probe
from voicefallback.records import ProbeResult, utcnow
from voicefallback.store import open_store

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
