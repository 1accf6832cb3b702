"""Commands that need no provider call never import a provider SDK."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import SHIPPED_CONFIG

PROBE = """
import json, sys
from voicefallback.cli import main
sys.argv = ["voicefallback", *json.loads(sys.argv[1])]
try:
    main()
except SystemExit:
    pass
sdks = {"openai", "anthropic", "httpx", "httpx2", "pydantic"}
heavy = sorted({m.split('.')[0] for m in sys.modules} & sdks)
sys.stderr.write("IMPORTED=" + json.dumps(heavy) + "\\n")
"""


@pytest.mark.parametrize(
    "args",
    [
        ["health", "--json"],
        ["fallbacks", "--json"],
        ["probe", "--json"],
        [
            "start",
            "--simulation-id",
            "s",
            "--primary",
            "anthropic:claude-3-5-sonnet-latest",
            "--json",
        ],
    ],
)
def test_stub_and_read_commands_import_no_provider_sdk(args, tmp_path):
    env = {
        "VOICEFALLBACK_CONFIG": str(SHIPPED_CONFIG),
        "VOICEFALLBACK_DB": str(tmp_path / "s.db"),
        "HOME": str(tmp_path),
        "PATH": "/usr/bin:/bin",
    }
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    line = [x for x in done.stderr.splitlines() if x.startswith("IMPORTED=")]
    assert line, done.stderr
    assert json.loads(line[0].removeprefix("IMPORTED=")) == []
    assert json.loads(done.stdout)  # the command itself worked


@pytest.mark.parametrize(
    "args",
    [
        ["health", "--json"],
        ["fallbacks", "--json", "--limit", "50"],
        ["start", "--simulation-id", "s", "--primary", "openai:gpt-4o-mini", "--json"],
    ],
)
def test_json_commands_on_an_existing_state_file_skip_rich_and_sqlite_utils(args, tmp_path):
    """--json needs no tables and an up-to-date file needs no migrations: both are import
    time a voice session start would otherwise wait for."""
    env = {
        "VOICEFALLBACK_CONFIG": str(SHIPPED_CONFIG),
        "VOICEFALLBACK_DB": str(tmp_path / "s.db"),
        "HOME": str(tmp_path),
        "PATH": "/usr/bin:/bin",
    }
    subprocess.run(
        [sys.executable, "-m", "voicefallback", "probe", "--json"],
        env=env,
        check=True,
        capture_output=True,
        timeout=60,
    )
    check = PROBE.replace('"pydantic"}', '"pydantic", "rich", "sqlite_utils"}')
    done = subprocess.run(
        [sys.executable, "-c", check, json.dumps(args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    line = [x for x in done.stderr.splitlines() if x.startswith("IMPORTED=")]
    assert line, done.stderr
    assert json.loads(line[0].removeprefix("IMPORTED=")) == []
    assert json.loads(done.stdout)
