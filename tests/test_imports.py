"""Which modules commands load: no provider SDK without a provider call, and neither rich
nor sqlite-utils where `--json` on an up-to-date state file does not need them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SHIPPED_CONFIG

SDKS = ["openai", "anthropic", "httpx", "httpx2", "pydantic"]
WEB = ["fastapi", "starlette", "uvicorn", "uvloop", "httptools"]  # `serve` alone imports them
FRAMEWORKS = ["livekit", "pipecat"]  # only voicefallback.livekit / .pipecat import them
REPORT = """
import json, sys
from voicefallback.cli import main
watched = set(json.loads(sys.argv[2]))
sys.argv = ["voicefallback", *json.loads(sys.argv[1])]
try:
    main()
except SystemExit:
    pass
loaded = sorted({m.split('.')[0] for m in sys.modules} & watched)
sys.stderr.write("IMPORTED=" + json.dumps(loaded) + "\\n")
"""
START = ["start", "--simulation-id", "s", "--primary", "anthropic:claude-3-5-sonnet-latest"]


def environment(tmp_path: Path) -> dict[str, str]:
    return {
        "VOICEFALLBACK_CONFIG": str(SHIPPED_CONFIG),
        "VOICEFALLBACK_DB": str(tmp_path / "s.db"),
        "HOME": str(tmp_path),
        "PATH": "/usr/bin:/bin",
    }


def imported(args: list[str], watched: list[str], env: dict[str, str]) -> list[str]:
    """Run one command in a fresh interpreter; which of `watched` did it import?"""
    done = subprocess.run(
        [sys.executable, "-c", REPORT, json.dumps(args), json.dumps(watched)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    line = [x for x in done.stderr.splitlines() if x.startswith("IMPORTED=")]
    assert line, done.stderr
    assert done.stdout.strip()  # the command itself worked
    return list(json.loads(line[0].removeprefix("IMPORTED=")))


@pytest.mark.parametrize(
    "args",
    [["health", "--json"], ["fallbacks", "--json"], ["probe", "--json"], [*START, "--json"]],
)
def test_stub_and_read_commands_import_no_provider_sdk_nor_the_web_stack(args, tmp_path):
    assert imported(args, [*SDKS, *WEB, *FRAMEWORKS], environment(tmp_path)) == []


@pytest.mark.parametrize(
    "args",
    [["health", "--json"], ["fallbacks", "--json", "--limit", "50"], [*START, "--json"]],
)
def test_json_commands_on_an_existing_state_file_skip_rich_and_sqlite_utils(args, tmp_path):
    """--json needs no tables and an up-to-date file needs no migrations: both are import
    time a voice session start would otherwise wait for."""
    env = environment(tmp_path)
    subprocess.run(
        [sys.executable, "-m", "voicefallback", "probe", "--json"],
        env=env,
        check=True,
        capture_output=True,
        timeout=60,
    )
    assert imported(args, [*SDKS, "rich", "sqlite_utils", "psycopg"], env) == []


@pytest.mark.parametrize("args", [["health", "--json"], ["fallbacks", "--json"]])
def test_read_commands_start_no_event_loop(args, tmp_path):
    """asyncio costs ~15 ms of import: only commands that call providers pay for it."""
    assert imported(args, ["asyncio", "concurrent"], environment(tmp_path)) == []


def test_the_guard_sees_what_a_table_imports(tmp_path):
    """Without --json the table needs rich: proof the guard above can fail."""
    assert imported(["health"], ["rich"], environment(tmp_path)) == ["rich"]


@pytest.mark.parametrize(
    ("module", "frameworks"),
    [
        ("voicefallback", []),
        ("voicefallback.router", []),
        ("voicefallback.turns", []),
        ("voicefallback.livekit", ["livekit"]),  # proof the guard can see one
        ("voicefallback.pipecat", ["pipecat"]),
    ],
)
def test_the_library_imports_a_voice_framework_only_in_its_binding(module, frameworks):
    code = (
        f"import sys, {module}; "
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {set(FRAMEWORKS)!r}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert json.loads(done.stdout.strip().replace("'", '"')) == frameworks
