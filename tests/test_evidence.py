"""`report`: a real session's turn as evidence, by the same rules as a probe."""

from __future__ import annotations

import sqlite3

import pytest

MINI = "openai:gpt-4o-mini"


def test_report_json_and_the_history_row(cli, db_file):
    result = cli("report", MINI, "--ttft-ms", "420", "--simulation-id", "sim-1", "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json == {
        "model": MINI,
        "status": "healthy",
        "ok": True,
        "kind": "session",
        "ttftMs": 420,
        "latencyMs": None,
        "error": None,
    }
    with sqlite3.connect(db_file) as conn:
        row = conn.execute("SELECT model, kind, ok, ttft_ms, message FROM probes").fetchall()
    assert row == [(MINI, "session", 1, 420, "session sim-1")]
    history = cli("health", "--history", MINI, "--json").json
    assert [c["kind"] for c in history["probes"]] == ["session"]


def test_a_stall_in_real_traffic_takes_the_model_out_of_rotation(cli):
    assert cli("report", MINI, "--ttft-ms", "300", "--json").json["status"] == "healthy"
    stalled = cli("report", MINI, "--error", "stalled", "--json").json
    assert (stalled["status"], stalled["ok"], stalled["error"]) == ("unhealthy", False, "stalled")
    start = cli("start", "--simulation-id", "s", "--primary", MINI, "--json").json
    assert start["chosen"] != MINI and start["reason"] == "primary_unhealthy"
    # recover_after = 2: two good turns bring it back.
    cli("report", MINI, "--ttft-ms", "300")
    assert cli("report", MINI, "--ttft-ms", "300", "--json").json["status"] == "healthy"


def test_slow_turns_make_a_slow_model(cli):
    slow = cli("report", MINI, "--ttft-ms", "2500", "--latency-ms", "4000", "--json").json
    assert (slow["status"], slow["latencyMs"]) == ("slow", 4000)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ((), "give --ttft-ms (a turn that answered) or --error (one that failed)"),
        (
            ("--ttft-ms", "100", "--error", "stalled"),
            "--ttft-ms and --error: give one, --ttft-ms for a turn that answered or --error",
        ),
        (("--error", "slowish"), "--error: unknown kind 'slowish'; one of: timeout,"),
        (("--error", "timeout", "--latency-ms", "9"), "--latency-ms: goes with --ttft-ms"),
        (("--ttft-ms", "-1"), "--ttft-ms: must be a whole number"),
        (("--ttft-ms", "900", "--latency-ms", "100"), "--latency-ms: 100 is less than"),
        (("--ttft-ms", "99999999999"), "--ttft-ms: at most"),
        (("--ttft-ms", "5", "--simulation-id", "a\u202eb"), "invisible character U+202E"),
    ],
)
def test_bad_reports_are_one_line_exit_2_and_nothing_written(cli, db_file, args, says):
    result = cli("report", MINI, *args)
    assert result.exit_code == 2 and result.stdout == ""
    assert says in result.stderr and result.stderr.count("\n") == 1
    assert not db_file.exists()


def test_unknown_model_is_refused(cli, db_file):
    result = cli("report", "openai:nope", "--ttft-ms", "5")
    assert result.exit_code == 2 and "unknown model 'openai:nope'" in result.stderr
    assert not db_file.exists()
