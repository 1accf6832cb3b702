"""`probe` for cron and people: --quiet, the probe lock, --every, --textfile, progress and
colour, and --if-older for a fleet."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import pty
import select
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import SHIPPED_CONFIG, write_config
from tests.pg_server import rows

MINI = "openai:gpt-4o-mini"
SONNET = "anthropic:claude-3-5-sonnet-latest"


def probe_rows(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM probes").fetchone()[0])


def set_stub(config: Path, model: str, stub: str) -> None:
    """Change one model's stub answer in the test's copy of models.toml."""
    text = config.read_text()
    start = text.index(f'id = "{model}"')
    line_start = text.index("stub = ", start)
    line_end = text.index("\n", line_start)
    config.write_text(text[:line_start] + f"stub = {stub}" + text[line_end:])


# -- --quiet ------------------------------------------------------------------------------


def test_quiet_is_silent_when_nothing_changed_and_one_line_per_change(cli, config_file):
    first = cli("probe", "--quiet")
    assert first.exit_code == 0 and first.stdout == ""
    # A new model found healthy is not news; a new model found down is.
    assert first.stderr == f"voicefallback: {SONNET}: new -> unhealthy (overloaded)\n"

    again = cli("probe", "--quiet")
    assert (again.exit_code, again.stdout, again.stderr) == (0, "", "")

    set_stub(config_file, MINI, '{ error = "auth" }')
    set_stub(config_file, "openai:gpt-4o", "{ latency_ms = 2000 }")
    changed = cli("probe", "--quiet")
    assert changed.exit_code == 0 and changed.stdout == ""
    assert changed.stderr.splitlines() == [
        f"voicefallback: {MINI}: healthy -> misconfigured (auth)",
        "voicefallback: openai:gpt-4o: healthy -> slow",
    ]

    set_stub(config_file, MINI, "{ latency_ms = 180 }")
    fixed = cli("probe", MINI, "--quiet")  # a fixed configuration: one success clears it
    assert fixed.stderr == f"voicefallback: {MINI}: misconfigured -> healthy\n"
    set_stub(config_file, MINI, '{ error = "timeout" }')
    assert (
        cli("probe", MINI, "--quiet").stderr
        == f"voicefallback: {MINI}: healthy -> unhealthy (timeout)\n"
    )
    set_stub(config_file, MINI, "{ latency_ms = 180 }")
    recovering = cli("probe", MINI, "--quiet")  # flakiness: recover_after = 2 successes
    assert recovering.stderr == ""
    recovered = cli("probe", MINI, "--quiet")
    assert recovered.stderr == f"voicefallback: {MINI}: unhealthy -> healthy\n"


def test_a_probe_that_just_succeeded_never_reports_its_model_stale(cli, config_file):
    text = config_file.read_text().replace("stale_after_s = 300", "stale_after_s = 0.000001")
    config_file.write_text(text)
    probed = cli("probe", MINI, "--json", "--check")
    assert probed.exit_code == 0, probed.stderr
    [row] = probed.json["results"]
    assert (row["status"], row["ok"], row["error"]) == ("healthy", True, None)
    # Read a moment later, the same evidence is stale: judged at the time of reading.
    [later] = cli("health", MINI, "--json").json["models"]
    assert later["status"] == "stale" and later["ok"] is False


def test_quiet_still_reports_errors_and_gates(cli, db_file):
    assert cli("probe", "--quiet", "--check").exit_code == 1
    assert cli("probe", "--quiet", "--require", MINI).exit_code == 0
    both = cli("probe", "--quiet", "--json")
    assert both.exit_code == 2 and "--quiet" in both.stderr and both.stdout == ""


# -- the probe lock -------------------------------------------------------------------------


def hold_lock(db: Path) -> int:
    db.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(f"{db}.probe.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def test_a_second_probe_gives_up_with_a_clear_message(cli, db_file):
    cli("probe", "--json")
    before = probe_rows(db_file)
    fd = hold_lock(db_file)
    try:
        started = time.monotonic()
        busy = cli("probe", "--json", "--lock-timeout", "0.3")
        waited = time.monotonic() - started
    finally:
        os.close(fd)
    assert busy.exit_code == 75
    assert busy.stdout == ""
    assert "another probe" in busy.stderr and str(db_file) in busy.stderr
    assert "(see --lock-timeout)" in busy.stderr
    assert busy.stderr.count("\n") == 1
    assert 0.3 <= waited < 5
    assert probe_rows(db_file) == before  # no provider call was recorded


def test_a_busy_lock_never_names_a_process_that_let_it_go(cli, db_file, isolated):
    """The lock file names its holder only while held: a probe that finished is not blamed
    for the lock another holds."""
    env = {**os.environ, "VOICEFALLBACK_DB": str(db_file)}
    finished = spawn(["probe", "--json"], env)
    finished.communicate(timeout=60)
    assert finished.returncode == 0
    fd = hold_lock(db_file)  # a holder that wrote no pid (yet)
    try:
        busy = cli("probe", "--json", "--lock-timeout", "0")
    finally:
        os.close(fd)
    assert busy.exit_code == 75
    assert f"pid {finished.pid}" not in busy.stderr, busy.stderr
    assert "another probe is still running" in busy.stderr


def test_a_probe_waiting_on_its_own_process_says_so(db_file):
    """`serve` probes on a schedule and on request: the message does not blame a stranger."""
    from voicefallback.errors import ProbeBusy
    from voicefallback.locking import probe_lock

    db_file.parent.mkdir(parents=True)
    with probe_lock(db_file), pytest.raises(ProbeBusy) as busy, probe_lock(db_file, wait_s=0):
        pass
    assert "another probe (in this process) is still running" in str(busy.value)
    assert f"pid {os.getpid()}" not in str(busy.value)


def test_the_same_state_file_through_a_symlink_shares_one_lock(cli, db_file, isolated):
    cli("probe", "--json")
    before = probe_rows(db_file)
    link = isolated / "elsewhere.db"
    link.symlink_to(db_file)
    fd = hold_lock(db_file)  # held by a probe that named the real path
    try:
        busy = cli("probe", "--json", "--db", str(link), "--lock-timeout", "0.2")
    finally:
        os.close(fd)
    assert busy.exit_code == 75, busy.stderr
    assert "another probe" in busy.stderr and busy.stdout == ""
    assert probe_rows(db_file) == before
    assert not Path(f"{link}.probe.lock").exists()


def test_a_second_probe_waits_for_the_first(cli, db_file):
    cli("probe", "--json")
    fd = hold_lock(db_file)
    threading.Timer(0.4, os.close, args=(fd,)).start()
    started = time.monotonic()
    result = cli("probe", "--json", "--lock-timeout", "10")
    assert result.exit_code == 0, result.stderr
    assert time.monotonic() - started >= 0.4
    assert probe_rows(db_file) == 8


def test_the_lock_file_is_private_and_start_does_not_take_it(cli, db_file):
    fd = hold_lock(db_file)
    try:
        started = cli("start", "--simulation-id", "s", "--primary", MINI, "--json")
    finally:
        os.close(fd)
    assert started.exit_code == 0  # a session never waits on a cron probe
    cli("probe", "--json")
    lock = Path(f"{db_file}.probe.lock")
    assert stat.S_IMODE(lock.stat().st_mode) == 0o600


def test_a_file_that_is_not_ours_gets_no_lock_file_beside_it(cli, db_file):
    db_file.parent.mkdir(parents=True)
    db_file.write_bytes(b"not a database at all")
    result = cli("probe", "--json")
    assert result.exit_code == 2
    assert sorted(p.name for p in db_file.parent.iterdir()) == ["state.db"]


def test_two_probe_processes_never_overlap(tmp_path):
    """Real processes: each probe run's calls are recorded together, never interleaved."""
    env = {
        **os.environ,
        "VOICEFALLBACK_CONFIG": str(SHIPPED_CONFIG),
        "VOICEFALLBACK_DB": str(tmp_path / "s.db"),
    }
    subprocess.run([sys.executable, "-m", "voicefallback", "probe", "--json"], env=env, check=True)
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "voicefallback", "probe", "--json", "--lock-timeout", "30"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    for run in runs:
        _, err = run.communicate(timeout=60)
        assert run.returncode == 0, err
        assert "locked" not in err
    assert probe_rows(tmp_path / "s.db") == 20


# -- --every --------------------------------------------------------------------------------


def spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "voicefallback", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_lines(proc: subprocess.Popen[str], count: int, timeout: float = 30) -> list[str]:
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while len(lines) < count and time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            lines.append(proc.stdout.readline())
    assert len(lines) == count, lines
    return lines


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_every_keeps_probing_and_stops_cleanly(tmp_path, stop):
    db = tmp_path / "s.db"
    env = {**os.environ, "VOICEFALLBACK_CONFIG": str(SHIPPED_CONFIG), "VOICEFALLBACK_DB": str(db)}
    proc = spawn(["probe", "--every", "0.2", "--json"], env)
    lines = wait_for_lines(proc, 3)
    proc.send_signal(stop)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    documents = [json.loads(line) for line in lines + out.splitlines()]
    assert len(documents) >= 3
    times = [d["probedAt"] for d in documents]
    assert times == sorted(times) and len(set(times)) == len(times)
    # Rounds are whole: a round cut short by the signal wrote nothing.
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = conn.execute("SELECT count(*) FROM probes").fetchone()[0]
    assert rows % 4 == 0 and rows >= 4 * len(documents)


def test_every_fails_at_once_on_a_broken_setup(tmp_path):
    db = tmp_path / "s.db"
    db.write_bytes(b"this is not SQLite")
    env = {**os.environ, "VOICEFALLBACK_CONFIG": str(SHIPPED_CONFIG), "VOICEFALLBACK_DB": str(db)}
    proc = spawn(["probe", "--every", "0.2", "--quiet"], env)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 2 and out == ""
    assert "not a voicefallback state file" in err


def test_every_reports_later_errors_and_goes_on():
    from voicefallback.errors import ProbeBusy
    from voicefallback.repeat import repeat_every

    clock = [0.0]
    calls: list[float] = []
    reported: list[str] = []

    def run_round() -> None:
        calls.append(clock[0])
        if len(calls) == 2:
            raise ProbeBusy("another probe is still running")
        if len(calls) == 4:
            raise KeyboardInterrupt

    def sleep(seconds: float) -> None:
        clock[0] += seconds

    rounds = repeat_every(
        1.0,
        run_round,
        lambda exc: reported.append(str(exc)),
        monotonic=lambda: clock[0],
        sleep=sleep,
    )
    assert rounds == 3
    assert calls == [0.0, 1.0, 2.0, 3.0]
    assert reported == ["another probe is still running"]


def test_every_skips_ticks_a_slow_round_overran():
    from voicefallback.repeat import repeat_every

    clock = [0.0]
    calls: list[float] = []

    def run_round() -> None:
        calls.append(clock[0])
        if len(calls) == 1:
            clock[0] += 2.5
        if len(calls) == 3:
            raise KeyboardInterrupt

    def sleep(seconds: float) -> None:
        assert seconds >= 0
        clock[0] += seconds

    repeat_every(1.0, run_round, print, monotonic=lambda: clock[0], sleep=sleep)
    assert calls == [0.0, 3.0, 4.0]


def test_every_cannot_gate_an_exit_code(cli):
    result = cli("probe", "--every", "60", "--check")
    assert result.exit_code == 2 and "--every" in result.stderr


def read_until(stream, wanted, timeout: float = 30) -> list[str]:
    """Lines from `stream` up to and including the first for which `wanted` is true."""
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([stream], [], [], 0.2)
        if ready:
            lines.append(stream.readline())
            if wanted(lines[-1]):
                return lines
    raise AssertionError(f"not seen within {timeout}s; got {lines}")


def test_every_rereads_models_toml_and_keeps_the_last_good_one(tmp_path):
    """A model added is probed from the next round; a file broken mid-loop is said once, in
    one line, and the rounds go on with the last good registry."""
    config = tmp_path / "models.toml"
    config.write_text(SHIPPED_CONFIG.read_text())
    env = {
        **os.environ,
        "VOICEFALLBACK_CONFIG": str(config),
        "VOICEFALLBACK_DB": str(tmp_path / "s.db"),
    }
    proc = spawn(["probe", "--every", "0.2", "--json"], env)
    assert proc.stdout is not None and proc.stderr is not None

    def models_in(line: str) -> list[str]:
        return [r["model"] for r in json.loads(line)["results"]]

    try:
        assert "openai:gpt-4o-2" not in models_in(read_until(proc.stdout, bool)[0])
        config.write_text(config.read_text() + '\n[[models]]\nid = "openai:gpt-4o-2"\n')
        read_until(proc.stdout, lambda line: "openai:gpt-4o-2" in models_in(line))
        assert f"{config} reloaded: 5 models to probe" in proc.stderr.readline()

        config.write_text(config.read_text() + "[[models]\n")  # invalid TOML
        said = read_until(proc.stderr, lambda line: "not reloaded" in line)[-1]
        assert said.startswith(f"voicefallback: error: {config} not reloaded, the previous")
        assert "invalid TOML" in said
        # Two more rounds on the last good registry, and no second complaint.
        rounds = read_until(proc.stdout, lambda _: True) + read_until(proc.stdout, bool)
        assert all("openai:gpt-4o-2" in models_in(line) for line in rounds)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "not reloaded" not in err and "Traceback" not in err


# -- --textfile ------------------------------------------------------------------------------


def test_textfile_holds_every_registered_model_and_is_replaced_atomically(
    cli, isolated, monkeypatch
):
    target = isolated / "metrics" / "voicefallback.prom"
    target.parent.mkdir()
    target.write_text("# old\n")
    import voicefallback.metrics as metrics

    seen: list[tuple[str, str]] = []
    real_replace = os.replace

    def replace(src: str, dst: str) -> None:
        # At the moment of the rename the new text is complete and the old one untouched.
        seen.append((Path(src).read_text(), Path(dst).read_text()))
        assert Path(src).parent == target.parent and not str(src).endswith(".prom")
        real_replace(src, dst)

    monkeypatch.setattr(metrics.os, "replace", replace)
    result = cli("probe", MINI, "--quiet", "--textfile", str(target))
    assert result.exit_code == 0, result.stderr
    assert len(seen) == 1 and seen[0][1] == "# old\n"
    text = target.read_text()
    assert seen[0][0] == text
    for model in (MINI, SONNET, "openai:gpt-4o", "anthropic:claude-3-5-haiku-latest"):
        assert f'voicefallback_model_up{{model="{model}",' in text
    assert f'voicefallback_model_up{{model="{MINI}",provider="openai"}} 1' in text
    assert 'voicefallback_fallback_events_total{reason="primary_unhealthy"} 0' in text
    assert sorted(p.name for p in target.parent.iterdir()) == ["voicefallback.prom"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


def test_textfile_in_a_missing_directory_fails_before_probing(cli, isolated, db_file):
    result = cli("probe", "--textfile", str(isolated / "nowhere" / "v.prom"))
    assert result.exit_code == 2
    assert "nowhere" in result.stderr and result.stdout == ""
    assert not db_file.exists()


def _fingerprint(path: Path) -> tuple[int, int, int, bytes]:
    info = os.lstat(path)
    content = path.read_bytes() if stat.S_ISREG(info.st_mode) else b""
    return info.st_ino, info.st_mode, info.st_size, content


@pytest.mark.parametrize(
    "kind", ["device", "fifo", "symlink", "state", "state-symlink", "state-hardlink", "registry"]
)
def test_textfile_replaces_only_a_regular_file_never_the_state_or_registry(
    cli, isolated, db_file, config_file, kind
):
    assert cli("probe", "--json").exit_code == 0
    state_before = _fingerprint(db_file)
    rows = probe_rows(db_file)
    target = isolated / "metrics.prom"
    if kind == "device":
        try:
            os.mknod(target, stat.S_IFCHR | 0o600, os.makedev(1, 3))  # a null device of our own
        except PermissionError:
            pytest.skip("creating a device node needs root")
    elif kind == "fifo":
        os.mkfifo(target)
    elif kind == "symlink":
        (isolated / "real.prom").write_text("# real\n")
        target.symlink_to(isolated / "real.prom")
    elif kind == "state":
        target = db_file
    elif kind == "state-symlink":
        target.symlink_to(db_file)
    elif kind == "state-hardlink":
        os.link(db_file, target)
    else:
        target = config_file
    before = _fingerprint(target)
    result = cli("probe", "--json", "--textfile", str(target))
    assert result.exit_code == 2, result.stderr
    assert result.stdout == "" and result.stderr.count("\n") == 1
    assert f"--textfile {target}:" in result.stderr
    assert _fingerprint(target) == before
    assert _fingerprint(db_file) == state_before and probe_rows(db_file) == rows
    assert sorted(p.name for p in target.parent.iterdir() if p.name.endswith(".tmp")) == []


def test_a_textfile_that_cannot_be_written_after_the_probe_exits_74_naming_what_was(
    cli, isolated, db_file, monkeypatch
):
    import errno

    import voicefallback.metrics as metrics

    target = isolated / "voicefallback.prom"
    target.write_text("# old\n")

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(metrics.tempfile, "mkstemp", disk_full)
    result = cli("probe", "--json", "--textfile", str(target))
    assert result.exit_code == 74
    assert json.loads(result.stdout)["results"]  # what was recorded is still reported
    assert result.stderr.count("\n") == 1
    assert f"--textfile {target}: not written (No space left on device)" in result.stderr
    assert f"the probe results were recorded in {db_file}" in result.stderr
    assert probe_rows(db_file) == 4 and target.read_text() == "# old\n"


# -- progress and colour on a terminal --------------------------------------------------------


def run_in_terminal(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run the installed command with stdout on a pseudo-terminal; return its exit and output."""
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "voicefallback", *args],
        env=env,
        stdout=secondary,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    os.close(secondary)
    chunks = []
    while True:
        try:
            data = os.read(primary, 65536)
        except OSError:  # the terminal closed: the process is done
            break
        if not data:
            break
        chunks.append(data)
    os.close(primary)
    return proc.wait(timeout=30), b"".join(chunks).decode("utf-8", "replace")


@pytest.fixture
def terminal_env(tmp_path: Path) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "COLUMNS")
    }
    env.update(
        TERM="xterm-256color",
        COLUMNS="160",
        VOICEFALLBACK_CONFIG=str(SHIPPED_CONFIG),
        VOICEFALLBACK_DB=str(tmp_path / "s.db"),
    )
    return env


def test_progress_shows_on_a_terminal_only(terminal_env, tmp_path):
    code, screen = run_in_terminal(["probe"], terminal_env)
    assert code == 0
    assert "probing 4 models" in screen
    assert "openai:gpt-4o-mini" in screen  # then the table

    code, screen = run_in_terminal(["probe", "--json"], terminal_env)
    assert code == 0 and "probing" not in screen
    assert json.loads(screen.strip())["mode"] == "stub"

    code, screen = run_in_terminal(["probe", "--quiet"], terminal_env)
    assert code == 0 and screen == ""

    piped = subprocess.run(
        [sys.executable, "-m", "voicefallback", "probe"],
        env=terminal_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert piped.returncode == 0 and "probing" not in piped.stdout + piped.stderr
    assert "\x1b[" not in piped.stdout


def test_no_color_is_respected_on_a_terminal(terminal_env):
    run_in_terminal(["probe", "--json"], terminal_env)
    code, coloured = run_in_terminal(["health"], terminal_env)
    assert code == 0 and "\x1b[32m" in coloured  # healthy is green on a terminal
    code, plain = run_in_terminal(["health"], {**terminal_env, "NO_COLOR": "1"})
    assert code == 0 and "healthy" in plain
    colours = [f"\x1b[{n}m" for n in (*range(30, 38), *range(90, 98))]
    assert not any(c in plain for c in colours) and "\x1b[38;" not in plain


def test_progress_callback_sees_every_model(tmp_path):
    from voicefallback.config import load_registry
    from voicefallback.probing import probe_run

    registry = load_registry(write_config(tmp_path / "m.toml", SHIPPED_CONFIG.read_text()))
    finished: list[str] = []
    probed = asyncio.run(
        probe_run(
            registry,
            registry.models,
            tmp_path / "s.db",
            "stub",
            4,
            on_result=lambda r: finished.append(r.model),
        )
    )
    assert sorted(finished) == sorted(m.id for m in registry.models)
    assert [p.result.model for p in probed] == [m.id for m in registry.models]


# -- --if-older --------------------------------------------------------------------------


def registered() -> list[str]:
    import tomllib

    return [m["id"] for m in tomllib.loads(SHIPPED_CONFIG.read_text())["models"]]


def test_ten_hosts_at_once_probe_each_model_once(state, tmp_path):
    env = {
        **os.environ,
        "VOICEFALLBACK_CONFIG": str(SHIPPED_CONFIG),
        "VOICEFALLBACK_DB": str(state),
        "HOME": str(tmp_path),
    }
    command = [sys.executable, "-m", "voicefallback", "probe", "--if-older", "60s", "--json"]
    processes = [
        subprocess.Popen(
            [*command, "--lock-timeout", "60"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(10)
    ]
    outputs = [p.communicate(timeout=120) for p in processes]
    assert [p.returncode for p in processes] == [0] * 10, [err for _, err in outputs]
    assert all(err == "" for _, err in outputs)
    probes = Counter(model for (model,) in rows(state, "SELECT model FROM probes"))
    assert probes == Counter(registered())  # exactly one probe per model, fleet-wide
    probed_by = [len(json.loads(out)["results"]) for out, _ in outputs]
    assert sorted(probed_by) == [0] * 9 + [len(registered())]


def test_evidence_from_a_start_counts_and_only_older_models_are_probed(cli, state):
    # The session's only candidate is its primary, so only gpt-4o-mini gains evidence.
    mini = "openai:gpt-4o-mini"
    started = cli("start", "--simulation-id", "s", "--primary", mini, "--fallback", mini)
    assert started.exit_code == 0
    result = cli("probe", "--if-older", "1h", "--json")
    assert result.exit_code == 0, result.stderr
    probed = [r["model"] for r in result.json["results"]]
    assert probed == [m for m in registered() if m != "openai:gpt-4o-mini"]
    again = cli("probe", "--if-older", "1h", "--json")
    assert again.json["results"] == []
    # Older than a moment ago: everything is probed again.
    assert len(cli("probe", "--if-older", "0.001s", "--json").json["results"]) == len(registered())


def test_nothing_to_probe_is_said_to_people(cli, db_file):
    assert cli("probe", "--json").exit_code == 0
    result = cli("probe", "--if-older", "10m")
    assert result.exit_code == 0
    assert "nothing to probe" in result.stderr


def test_if_older_refuses_to_gate_and_bad_spans(cli, db_file):
    for args, what in (
        (("--if-older", "60s", "--check"), "--if-older"),
        (("--if-older", "soon"), "--if-older"),
    ):
        result = cli("probe", *args)
        assert result.exit_code == 2 and what in result.stderr, result.stderr
    assert not db_file.exists()
