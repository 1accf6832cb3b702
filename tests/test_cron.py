"""The README's crontab lines, systemd unit and CI step, run as written (paths mapped to tmp)."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, SHIPPED_CONFIG

README = (REPO / "README.md").read_text(encoding="utf-8")
EXECUTABLE = Path(sys.executable).parent / "voicefallback"
CRON_LINE = re.compile(r"^(?P<schedule>(?:[0-9*/,-]+ ){5})(?P<command>set -a .*)$", re.MULTILINE)
SONNET = "anthropic:claude-3-5-sonnet-latest"


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, re.DOTALL)


@pytest.fixture
def host(tmp_path: Path) -> dict[str, Path]:
    """A fake host: README's absolute paths, each mapped to a place under tmp."""
    (tmp_path / "textfile").mkdir()
    config = tmp_path / "models.toml"
    # The registry says live; only the env file switches to stub. If the env file were not
    # exported, every probe would fail for want of keys instead.
    config.write_text(SHIPPED_CONFIG.read_text().replace('mode = "stub"', 'mode = "live"'))
    env_file = tmp_path / "env"
    env_file.write_text("VOICEFALLBACK_MODE=stub\nOPENAI_API_KEY=sk-test-not-real\n")
    env_file.chmod(0o600)
    return {
        "/etc/voicefallback/env": env_file,
        "/etc/voicefallback/models.toml": config,
        "/var/lib/voicefallback/state.db": tmp_path / "state" / "state.db",
        "/opt/voicefallback/venv/bin/voicefallback": EXECUTABLE,
        "/var/lib/node_exporter/textfile/voicefallback.prom": tmp_path / "textfile" / "v.prom",
    }


def localize(command: str, host: dict[str, Path]) -> str:
    paths = set(re.findall(r"(?<![\w$])/[\w./-]+", command))
    unknown = paths - set(host)
    assert not unknown, f"README uses paths this test does not map: {unknown}"
    for path in sorted(paths, key=len, reverse=True):
        command = command.replace(path, str(host[path]))
    return command


def cron_shell(command: str, home: Path) -> subprocess.CompletedProcess[str]:
    """As cron runs a line: /bin/sh -c, a minimal environment, in the user's home."""
    return subprocess.run(
        ["/bin/sh", "-c", command],
        env={"PATH": "/usr/bin:/bin", "HOME": str(home), "SHELL": "/bin/sh", "LOGNAME": "cron"},
        cwd=home,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_readme_crontab_lines_run_through_sh(host, tmp_path):
    lines = CRON_LINE.findall(README)
    assert len(lines) >= 2 and any("--textfile" in command for _, command in lines)
    for schedule, command in lines:
        assert len(schedule.split()) == 5
        assert "--quiet" in command
        assert command.split(" && ")[-1].startswith("/"), "cron's PATH is minimal: use full paths"
        db = host["/var/lib/voicefallback/state.db"]
        if db.exists():
            db.unlink()
        local = localize(command, host)

        first = cron_shell(local, tmp_path)
        assert first.returncode == 0, first.stderr
        assert first.stdout == ""
        assert first.stderr == f"voicefallback: {SONNET}: new -> unhealthy (overloaded)\n"

        second = cron_shell(local, tmp_path)
        assert (second.returncode, second.stdout, second.stderr) == (0, "", "")

        with sqlite3.connect(db) as conn:
            rows = conn.execute("SELECT stub, count(*) FROM probes GROUP BY stub").fetchall()
        assert rows == [(1, 8)]  # stub mode came from the env file
        if "--textfile" in command:
            text = host["/var/lib/node_exporter/textfile/voicefallback.prom"].read_text()
            assert "voicefallback_model_up{" in text


def test_the_crontab_line_fails_loudly_without_its_env_file(host, tmp_path):
    _schedule, command = CRON_LINE.findall(README)[0]
    host["/etc/voicefallback/env"].unlink()
    done = cron_shell(localize(command, host), tmp_path)
    assert done.returncode != 0 and done.stderr  # cron mails this


def systemd_unit(name: str) -> str:
    for block in code_blocks("ini"):
        if block.startswith(f"# /etc/systemd/system/{name}"):
            return block
    raise AssertionError(f"README has no {name}")


def test_readme_systemd_service_runs_as_written(host, tmp_path):
    service = systemd_unit("voicefallback-probe.service")
    timer = systemd_unit("voicefallback-probe.timer")
    assert "OnCalendar=" in timer and "WantedBy=timers.target" in timer
    settings = dict(
        line.split("=", 1) for line in service.splitlines() if "=" in line and line[0] != "#"
    )
    assert settings["Type"] == "oneshot"
    env_file = host[settings["EnvironmentFile"]]
    # systemd's EnvironmentFile: NAME=value lines, comments ignored.
    environment = dict(
        line.split("=", 1)
        for line in env_file.read_text().splitlines()
        if line and not line.startswith("#")
    )
    argv = shlex.split(localize(settings["ExecStart"], host))
    assert Path(argv[0]).is_absolute()
    done = subprocess.run(
        argv,
        env={"PATH": "/usr/bin:/bin", **environment},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and "unhealthy" in done.stderr


def test_readme_env_file_example_is_plain_name_value_lines():
    block = next(b for b in code_blocks("sh") if b.startswith("# /etc/voicefallback/env"))
    for line in block.splitlines()[1:]:
        assert re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S+", line), line


def test_readme_ci_step_gates_on_the_primary(tmp_path):
    block = code_blocks("yaml")[0]
    run_line = next(line for line in block.splitlines() if line.strip().startswith("run:"))
    command = run_line.split("run:", 1)[1].strip()
    primary = re.search(r"--require (\S+)", command)
    assert primary and "probe" in command
    (tmp_path / "deploy").mkdir()
    shutil.copy(SHIPPED_CONFIG, tmp_path / "deploy" / "models.toml")
    env = {
        "PATH": f"{EXECUTABLE.parent}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "RUNNER_TEMP": str(tmp_path),
        "VOICEFALLBACK_MODE": "stub",  # the step says live; here no network
    }

    def step(text: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["/bin/sh", "-c", text], env=env, cwd=tmp_path, capture_output=True, text=True
        )

    passed = step(command)
    assert passed.returncode == 0, passed.stderr
    assert {r["model"] for r in json.loads(passed.stdout)["results"]} >= {primary.group(1), SONNET}
    # Another model is down (SONNET), yet the deploy goes ahead; it stops only for the primary.
    blocked = step(command.replace(primary.group(1), SONNET))
    assert blocked.returncode == 1
