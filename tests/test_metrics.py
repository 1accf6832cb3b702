"""`health --format prometheus`: valid text format, the promised metrics, monotonic counters."""

from __future__ import annotations

import re
import sqlite3

from voicefallback.metrics import prometheus_text
from voicefallback.stats import RecentStats, Window

SONNET = "anthropic:claude-3-5-sonnet-latest"
MINI = "openai:gpt-4o-mini"

SAMPLE = re.compile(
    r'(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)\{(?P<labels>(?:[a-zA-Z_]\w*="(?:[^"\\\n]|\\.)*",?)*)\}'
    r" (?P<value>-?[0-9.e+-]+|NaN|\+Inf|-Inf)"
)


def parse(text: str) -> dict[str, dict[str, float]]:
    """Every sample by metric name and label text; fails on any line that is not valid."""
    assert text.endswith("\n")
    samples: dict[str, dict[str, float]] = {}
    declared: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("gauge", "counter") and name not in declared
            declared[name] = kind
            continue
        match = SAMPLE.fullmatch(line)
        assert match, f"not a valid sample line: {line!r}"
        assert match["name"] in declared, f"sample before its TYPE: {line!r}"
        samples.setdefault(match["name"], {})[match["labels"]] = float(match["value"])
    return samples


def test_health_in_prometheus_format(cli):
    cli("probe")
    cli("start", "--simulation-id", "a", "--primary", SONNET)
    cli("start", "--simulation-id", "b", "--primary", SONNET)
    result = cli("health", "--format", "prometheus")
    assert result.exit_code == 0, result.stderr
    metrics = parse(result.stdout)
    mini = f'model="{MINI}",provider="openai"'
    sonnet = f'model="{SONNET}",provider="anthropic"'
    assert metrics["voicefallback_model_up"][mini] == 1
    assert metrics["voicefallback_model_up"][sonnet] == 0
    assert metrics["voicefallback_model_ttft_seconds"][mini] == 0.18
    assert sonnet not in metrics["voicefallback_model_ttft_seconds"]  # no TTFT on a failure
    assert metrics["voicefallback_model_consecutive_failures"][sonnet] == 1  # start trusts it
    assert metrics["voicefallback_model_consecutive_failures"][mini] == 0
    stamp = metrics["voicefallback_model_last_probe_timestamp_seconds"][mini]
    health = cli("health", MINI, "--json").json["models"][0]
    from voicefallback.records import parse_iso

    assert abs(stamp - parse_iso(health["lastCheckedAt"]).timestamp()) < 0.002
    assert metrics["voicefallback_model_status"][sonnet + ',status="unhealthy"'] == 1
    assert metrics["voicefallback_model_status"][sonnet + ',status="healthy"'] == 0
    events = metrics["voicefallback_fallback_events_total"]
    assert events == {
        'reason="primary_unhealthy"': 2,
        'reason="primary_slow"': 0,
        'reason="primary_failed_at_start"': 0,
    }
    assert "# TYPE voicefallback_fallback_events_total counter" in result.stdout
    assert metrics["voicefallback_model_recent_ttft_seconds"][mini + ',quantile="0.95"'] == 0.18


def test_never_probed_models_are_down_and_unknown(cli, db_file):
    metrics = parse(cli("health", "--format", "prometheus").stdout)
    assert set(metrics["voicefallback_model_up"].values()) == {0}
    unknown = [k for k, v in metrics["voicefallback_model_status"].items() if v == 1]
    assert len(unknown) == 4 and all(k.endswith('status="unknown"') for k in unknown)
    assert "voicefallback_model_last_probe_timestamp_seconds" not in metrics
    assert not db_file.exists()


def test_event_counters_never_go_down_when_events_are_deleted(cli, db_file):
    cli("start", "--simulation-id", "a", "--primary", SONNET)
    with sqlite3.connect(db_file) as conn:
        conn.execute("DELETE FROM events")  # what pruning events would do
    cli("start", "--simulation-id", "b", "--primary", SONNET)
    metrics = parse(cli("health", "--format", "prometheus").stdout)
    assert metrics["voicefallback_fallback_events_total"]['reason="primary_unhealthy"'] == 2
    assert cli("fallbacks", "--json").json["events"][0]["simulationId"] == "b"


def test_label_values_are_escaped():
    from voicefallback.config import Model, Provider, Thresholds
    from voicefallback.records import utcnow
    from voicefallback.reports import HealthReport, ModelHealth

    model = Model(
        id='odd:we"ird\\name', provider=Provider("odd", "openai"), name="x", thresholds=Thresholds()
    )
    report = HealthReport(
        at=utcnow(),
        window=Window(),
        models=[
            ModelHealth(model, None, "unknown", None, RecentStats(0, 0, None, None, None), None)
        ],
        event_counts={"line\nbreak": 1},
    )
    text = prometheus_text(report)
    metrics = parse(text)
    assert metrics["voicefallback_model_up"]['model="odd:we\\"ird\\\\name",provider="odd"'] == 0
    assert metrics["voicefallback_fallback_events_total"]['reason="line\\nbreak"'] == 1


def test_health_gates_still_apply_with_prometheus_output(cli):
    cli("probe")
    result = cli("health", "--format", "prometheus", "--require", SONNET)
    assert result.exit_code == 1 and "voicefallback_model_up" in result.stdout
