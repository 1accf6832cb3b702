"""`probe --if-older SPAN`: a fleet of cron lines probes each model once, on both backends."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

from tests.conftest import SHIPPED_CONFIG
from tests.pg_server import rows

SONNET = "anthropic:claude-3-5-sonnet-latest"


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
