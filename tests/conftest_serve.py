"""A real `voicefallback serve` process on a free port, and a real HTTP client for it.

Not a conftest.py: a test module that needs it says `pytest_plugins = ["tests.conftest_serve"]`.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

STARTUP_S = 30.0  # generous: a loaded CI machine imports the web stack slowly
_LISTENING = re.compile(r"serving (http://\S+) ")


class ServerProcess:
    """A `voicefallback serve` command line; its stderr is collected line by line (never
    left to fill a pipe), and the URL is read from its first line."""

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            command,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._seen = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.url = self._wait_for_url()
        self.client = httpx.Client(base_url=self.url, timeout=30.0)

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self._seen:
                self.lines.append(line.rstrip("\n"))
                self._seen.notify_all()
        with self._seen:
            self._seen.notify_all()

    def wait_for_line(self, pattern: str, after: int = 0, timeout: float = STARTUP_S) -> str:
        """The first stderr line from index `after` on that matches `pattern`."""
        deadline = time.monotonic() + timeout
        with self._seen:
            while True:
                for line in self.lines[after:]:
                    if re.search(pattern, line):
                        return line
                left = deadline - time.monotonic()
                if left <= 0 or (self.process.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(
                        f"no line matching {pattern!r}; stderr so far:\n" + "\n".join(self.lines)
                    )
                self._seen.wait(min(left, 0.5))

    def _wait_for_url(self) -> str:
        line = self.wait_for_line(_LISTENING.pattern)
        match = _LISTENING.search(line)
        assert match is not None
        return match.group(1)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.client.get(path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.client.post(path, **kwargs)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Signal the server and wait for it; its exit status."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=timeout)
        finally:
            self.client.close()
            self._reader.join(timeout=5)

    @property
    def stderr(self) -> str:
        with self._seen:
            return "\n".join(self.lines)


@pytest.fixture
def serve(config_file: Path, db_file: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start servers on the test's registry and state file; each is stopped afterwards."""
    started: list[ServerProcess] = []

    def start(
        *args: str, env: dict[str, str] | None = None, command: list[str] | None = None
    ) -> ServerProcess:
        """`serve --port 0 ARGS` with the test's environment plus `env`; or, given a whole
        `command` line, that with `env` alone (as systemd would start it)."""
        if command is None:
            command = [sys.executable, "-m", "voicefallback", "serve", "--port", "0", *args]
            env = {**os.environ, **(env or {})}
        server = ServerProcess(command, env or {})
        started.append(server)
        return server

    yield start
    for server in started:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait(timeout=10)
        server.client.close()
