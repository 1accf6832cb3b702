"""The --json documents: every one a command prints is strict JSON, whatever it echoes."""

from __future__ import annotations

import json
from typing import Any

import pytest

SONNET = "anthropic:claude-3-5-sonnet-latest"
MINI = "openai:gpt-4o-mini"


def strict(text: str) -> Any:
    """Parse as JSON.parse or Go would: NaN and Infinity are not JSON."""

    def refuse(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    lines = text.splitlines()
    assert len(lines) == 1, text  # exactly one object on one line
    document = json.loads(lines[0], parse_constant=refuse)
    assert isinstance(document, dict)
    return document


ODD_BODY = {
    "simulationId": "sim-odd",
    "primary": SONNET,
    "big": 10**300,
    "tiny": 1e-400,
    "huge": 1.7976931348623157e308,
    "negativeZero": -0.0,
    "text": 'quote " backslash \\ newline \n tab \t nul \u0000 emoji \U0001f600',
    "deep": [[[[[[[[[[{"k": [1, 2.5, None, True]}]]]]]]]]]],
}


def test_every_json_document_the_cli_prints_is_strict_json(cli, isolated):
    runs = [
        ("init", "--config", str(isolated / "fresh.toml"), "--json"),
        ("probe", "--json"),
        ("health", "--json"),
        ("health", "--history", SONNET, "--json"),
        ("health", "--format", "json"),
        ("start", "--simulation-id", "sim-auto", "--primary", SONNET, "--json"),
        ("start", "--body", json.dumps(ODD_BODY), "--json"),
        (
            "start",
            "--simulation-id",
            "sim-none",
            "--primary",
            SONNET,
            "--fallback",
            SONNET,
            "--json",
        ),
        ("fallbacks", "--json"),
        ("models", "--json"),
        ("prune", "--json"),
    ]
    for args in runs:
        result = cli(*args)
        assert result.exit_code in (0, 1), (args, result.stderr)
        strict(result.stdout)
    echoed = strict(cli("start", "--body", json.dumps(ODD_BODY), "--json").stdout)
    assert echoed["agent"]["received_config"]["big"] == 10**300
    assert echoed["agent"]["received_config"]["text"] == ODD_BODY["text"]


@pytest.mark.parametrize("number", ["1e999", "-1e999", "1E+400"])
def test_a_number_json_cannot_hold_is_refused_before_anything_is_written(cli, db_file, number):
    body = f'{{"simulationId": "s", "primary": "{MINI}", "x": {{"y": [{number}]}}}}'
    result = cli("start", "--body", body, "--json")
    assert result.exit_code == 2 and result.stdout == ""
    assert f"--body: number {number} is out of range" in result.stderr
    assert not db_file.exists()


def test_print_json_refuses_to_print_a_non_finite_number(capsys):
    from voicefallback.documents import print_json

    with pytest.raises(ValueError):
        print_json({"x": float("inf")})
    assert capsys.readouterr().out == ""
