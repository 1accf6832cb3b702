"""`health` explains itself: recent window, last failure, status since; `--history`; gates."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import SHIPPED_CONFIG
from voicefallback.config import load_registry
from voicefallback.health import apply_probe
from voicefallback.records import ProbeResult, parse_iso
from voicefallback.store.sqlite import SQLiteStore

MINI = "openai:gpt-4o-mini"
SONNET = "anthropic:claude-3-5-sonnet-latest"
GPT4O = "openai:gpt-4o"


def record(config: Path, db: Path, *results: ProbeResult) -> None:
    """Write calls with chosen times, as if they had been made then."""
    registry = load_registry(config)
    with SQLiteStore.open(db, write=True) as store:
        for result in results:
            store.record(
                [result], {m.id: m.thresholds for m in registry.models}, update=apply_probe
            )


def ago(**delta: float) -> datetime:
    return datetime.now(UTC) - timedelta(**delta)


def ok(model: str, ttft: int, at: datetime) -> ProbeResult:
    return ProbeResult(model=model, ok=True, at=at, ttft_ms=ttft, latency_ms=ttft + 50, stub=True)


def fail(model: str, error: str, at: datetime) -> ProbeResult:
    return ProbeResult(
        model=model, ok=False, at=at, latency_ms=90, error=error, message=f"HTTP {error}", stub=True
    )


def row(doc: dict, model: str) -> dict:
    return next(m for m in doc["models"] if m["model"] == model)


def test_health_json_keeps_spec_keys_and_adds_the_evidence(cli, config_file, db_file):
    # Ten minutes of history for the mini model: 2 failures, then 8 successes.
    record(
        config_file,
        db_file,
        fail(MINI, "timeout", ago(minutes=10)),
        fail(MINI, "overloaded", ago(minutes=9)),
        *[ok(MINI, ttft, ago(minutes=8 - i)) for i, ttft in enumerate([100, 200, 300, 400] * 2)],
    )
    result = cli("health", MINI, "--json")
    assert result.exit_code == 0, result.stderr
    mini = row(result.json, MINI)
    spec_keys = {
        "model",
        "provider",
        "ok",
        "status",
        "latencyMs",
        "ttftMs",
        "lastCheckedAt",
        "consecutiveFailures",
        "lastError",
        "stub",
    }
    assert spec_keys <= set(mini)
    assert mini["status"] == "healthy" and mini["ok"] is True and mini["lastError"] is None
    assert mini["recent"] == {
        "probes": 10,
        "successes": 8,
        "successRate": 0.8,
        "ttftP50Ms": 200,  # nearest rank: a value that was measured
        "ttftP95Ms": 400,
    }
    # The latest failure, even though the latest call succeeded, and how long ago it was.
    failure = mini["lastFailure"]
    assert failure["error"] == "overloaded" and failure["message"] == "HTTP overloaded"
    assert 9 * 60_000 - 5_000 <= failure["ageMs"] <= 9 * 60_000 + 60_000
    # Healthy since the second success after the failures (recover_after = 2).
    changes = cli("health", "--history", MINI, "--json").json["statusChanges"]
    assert [(c["from"], c["to"]) for c in changes] == [
        ("unhealthy", "healthy"),
        (None, "unhealthy"),
    ]
    assert mini["statusSince"] == changes[0]["at"]
    healthy_for = (datetime.now(UTC) - parse_iso(mini["statusSince"])).total_seconds()
    assert 6.5 * 60 < healthy_for < 7.5 * 60
    window = result.json["window"]
    assert window["probes"] == 20 and window["spanMs"] == 24 * 3600 * 1000


def test_window_size_and_span_are_settable(cli, config_file, db_file):
    record(
        config_file,
        db_file,
        fail(MINI, "timeout", ago(hours=3)),
        ok(MINI, 500, ago(hours=2)),
        ok(MINI, 100, ago(minutes=20)),
        ok(MINI, 300, ago(minutes=10)),
    )
    everything = row(cli("health", "--json").json, MINI)["recent"]
    assert everything["probes"] == 4 and everything["successRate"] == 0.75
    last_two = row(cli("health", "--window", "2", "--json").json, MINI)["recent"]
    assert last_two == {
        "probes": 2,
        "successes": 2,
        "successRate": 1.0,
        "ttftP50Ms": 100,
        "ttftP95Ms": 300,
    }
    last_hour = row(cli("health", "--span", "1h", "--json").json, MINI)["recent"]
    assert last_hour["probes"] == 2
    nothing = row(cli("health", "--span", "5m", "--json").json, MINI)["recent"]
    assert nothing == {
        "probes": 0,
        "successes": 0,
        "successRate": None,
        "ttftP50Ms": None,
        "ttftP95Ms": None,
    }
    bad = cli("health", "--span", "soon", "--json")
    assert bad.exit_code == 2 and "--span" in bad.stderr and bad.stdout == ""


def test_a_never_probed_model_explains_nothing_and_creates_nothing(cli, db_file):
    doc = cli("health", "--json").json
    for model in doc["models"]:
        assert model["status"] == "unknown"
        assert model["statusSince"] is None and model["lastFailure"] is None
        assert model["recent"]["probes"] == 0
    assert not db_file.exists()


def test_stale_status_dates_from_when_the_evidence_expired(cli, config_file, db_file):
    checked = ago(minutes=30)
    record(config_file, db_file, ok(MINI, 100, checked))
    mini = row(cli("health", MINI, "--json").json, MINI)
    assert mini["status"] == "stale"
    assert parse_iso(mini["statusSince"]) == parse_iso(mini["lastCheckedAt"]) + timedelta(
        seconds=300
    )


def test_human_table_shows_the_evidence(cli):
    cli("probe")
    cli("probe")
    table = cli("health").stdout
    assert "last 20 probes" in table
    assert "100% of 2" in table and "0% of 2" in table
    assert "180/180 ms" in table
    assert "overloaded 0s ago" in table


def test_history_lists_probes_and_changes_newest_first(cli, config_file, db_file):
    record(
        config_file,
        db_file,
        ok(GPT4O, 200, ago(hours=5)),
        fail(GPT4O, "overloaded", ago(hours=4)),
        fail(GPT4O, "overloaded", ago(hours=3)),
        ok(GPT4O, 210, ago(hours=2)),
        ok(GPT4O, 220, ago(hours=1)),
        fail(GPT4O, "auth", ago(minutes=1)),
    )
    cli("start", "--simulation-id", "s", "--primary", MINI)  # another model's calls stay out
    result = cli("health", "--history", GPT4O, "--json")
    assert result.exit_code == 0, result.stderr
    doc = result.json
    assert doc["model"] == GPT4O and doc["status"] == "misconfigured" and doc["ok"] is False
    probes = doc["probes"]
    assert [p["ok"] for p in probes] == [False, True, True, False, False, True]
    assert [p["at"] for p in probes] == sorted((p["at"] for p in probes), reverse=True)
    assert probes[0] == {
        "at": probes[0]["at"],
        "kind": "probe",
        "ok": False,
        "latencyMs": 90,
        "ttftMs": None,
        "error": "auth",
        "message": "HTTP auth",
        "httpStatus": None,
        "stub": True,
    }
    assert [(c["from"], c["to"], c["error"]) for c in doc["statusChanges"]] == [
        ("healthy", "misconfigured", "auth"),
        ("unhealthy", "healthy", None),
        ("healthy", "unhealthy", "overloaded"),
        (None, "healthy", None),
    ]

    limited = cli("health", "--history", GPT4O, "--limit", "2", "--json").json
    assert len(limited["probes"]) == 2 and len(limited["statusChanges"]) == 2
    assert limited["probes"] == probes[:2]

    recent = cli("health", "--history", GPT4O, "--since", "150m", "--json").json
    assert len(recent["probes"]) == 3
    assert [c["to"] for c in recent["statusChanges"]] == ["misconfigured", "healthy"]
    since_iso = probes[2]["at"]
    assert (
        len(cli("health", "--history", GPT4O, "--since", since_iso, "--json").json["probes"]) == 3
    )

    table = cli("health", "--history", GPT4O).stdout
    assert "misconfigured" in table and "status changes" in table and "HTTP auth" in table


def test_history_includes_session_openings(cli):
    cli("start", "--simulation-id", "s1", "--primary", MINI)
    probes = cli("health", "--history", MINI, "--json").json["probes"]
    # The unknown primary's opening call was its probe: one call.
    assert [p["kind"] for p in probes] == ["start"]


@pytest.mark.parametrize(
    "args, message",
    [
        (("health", "--history", "openai:nope"), "--history"),
        (("health", "--limit", "5"), "--history"),
        (("health", "--since", "1h"), "--history"),
        (("health", "--history", MINI, "--since", "yesterday"), "--since"),
        (("health", "--history", MINI, "--limit", "0"), "--limit"),
        (("health", "--history", MINI, SONNET), "drop the MODEL_ID arguments"),
        (("health", "--history", MINI, "--require", SONNET), f"--require {SONNET}: --history"),
        (("health", "--history", MINI, "--format", "prometheus"), "--history"),
        (("health", "--json", "--format", "prometheus"), "--json"),
        (("health", "--format", "xml"), "--format"),
        (("health", "--require", "openai:nope"), "--require"),
    ],
)
def test_bad_health_options_exit_2(cli, db_file, args, message):
    result = cli(*args)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert message in result.stderr
    assert not db_file.exists()


def test_history_gates_on_the_model_it_shows(cli, db_file):
    cli("probe")
    healthy = cli("health", "--history", MINI, "--require", MINI)
    assert healthy.exit_code == 0, healthy.stderr
    assert "drop the MODEL_ID" not in healthy.stderr
    down = cli("health", "--history", SONNET, "--require", SONNET, "--json")
    assert down.exit_code == 1 and down.json["model"] == SONNET
    assert f"check failed: {SONNET} is unhealthy" in down.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["health", "--limit", "5"],
        ["health", "--format", "xml"],
        ["health", "--history", MINI, "--limit", "0"],
        ["probe", "--every", "never"],
    ],
)
def test_bad_options_are_one_line_from_the_installed_command(args, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "voicefallback", *args],
        env={
            **os.environ,
            "VOICEFALLBACK_CONFIG": str(SHIPPED_CONFIG),
            "VOICEFALLBACK_DB": str(tmp_path / "s.db"),
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("voicefallback") and done.stderr.count("\n") == 1
    assert not (tmp_path / "s.db").exists()


def test_require_fails_only_for_the_required_model(cli):
    cli("probe")
    assert cli("health", "--require", MINI).exit_code == 0
    assert cli("health", "--require", SONNET).exit_code == 1
    assert cli("health", "--require", MINI, "--require", GPT4O, "--json").exit_code == 0
    assert cli("health", "--require", MINI, "--require", SONNET, "--json").exit_code == 1
    # A required model outside the listed ones is still judged, and shown.
    result = cli("health", GPT4O, "--require", SONNET, "--json")
    assert result.exit_code == 1
    assert [m["model"] for m in result.json["models"]] == [GPT4O, SONNET]
    # --check still looks at every listed model.
    assert cli("health", "--check", "--require", MINI).exit_code == 1
    assert cli("health", "--check", MINI, "--require", GPT4O).exit_code == 0


def test_require_on_probe_gates_a_deploy(cli, db_file):
    assert cli("probe", "--require", MINI, "--json").exit_code == 0
    failed = cli("probe", "--require", SONNET, "--json")
    assert failed.exit_code == 1
    assert {r["model"] for r in failed.json["results"]} >= {MINI, SONNET}
    # Probing one model while requiring another probes both.
    both = cli("probe", GPT4O, "--require", MINI, "--json")
    assert both.exit_code == 0
    assert [r["model"] for r in both.json["results"]] == [GPT4O, MINI]
    with sqlite3.connect(db_file) as conn:
        assert (
            conn.execute("SELECT count(*) FROM probes WHERE model = ?", (MINI,)).fetchone()[0] == 3
        )


def test_history_on_a_state_file_written_before_status_changes_existed(cli, config_file, db_file):
    """Schema 1 files: history still works (read-only), and the next write migrates them."""
    cli("probe")
    with sqlite3.connect(db_file) as conn:
        conn.execute("DROP TABLE status_changes")
        conn.execute("DROP TABLE event_counts")
        conn.execute("DROP INDEX probes_failures")
        conn.execute("DROP TABLE spool_applied")  # schema 3
        conn.execute("DELETE FROM migrations WHERE number >= 2")
        conn.execute("PRAGMA user_version = 1")
    old = cli("health", "--history", SONNET, "--json")
    assert old.exit_code == 0, old.stderr
    assert old.json["statusChanges"] == [] and len(old.json["probes"]) == 1
    assert old.json["lastFailure"]["error"] == "overloaded"
    cli("probe", SONNET)  # a write applies migration 2, seeding one change per model
    changes = cli("health", "--history", SONNET, "--json").json["statusChanges"]
    assert [(c["from"], c["to"]) for c in changes] == [(None, "unhealthy")]
