"""What a person reads: ids print as given, never as markup or emoji, and are never cut."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import write_config

REGISTRY = """
[settings]
mode = "stub"
[providers.ollama]
type = "openai"
base_url = "http://localhost:11434/v1"
[[models]]
id = "ollama:tiger:"
stub = { error = "overloaded" }
[[models]]
id = "ollama:a-rather-long-model-name-that-would-not-fit-an-80-column-table:latest"
"""
SIM = "[bold red]sim[/] :fire: [/x]"


def test_ids_with_brackets_and_colons_print_as_themselves(cli):
    write_config(Path("models.toml"), REGISTRY)
    started = cli(
        "start", "--config", "models.toml", "--simulation-id", SIM, "--primary", "ollama:tiger:"
    )
    assert started.exit_code == 0, started.stderr
    assert SIM in started.stdout and "ollama:tiger:" in started.stdout
    assert "\N{TIGER FACE}" not in started.stdout and "\N{FIRE}" not in started.stdout
    listing = cli("fallbacks", "--config", "models.toml")
    assert listing.exit_code == 0, listing.stderr
    assert "ollama:tiger:" in listing.stdout and "[/x]" in listing.stdout.replace("\n", "")


def test_piped_tables_keep_whole_model_ids(tmp_path):
    config = write_config(tmp_path / "models.toml", REGISTRY)
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    env |= {"VOICEFALLBACK_CONFIG": str(config), "VOICEFALLBACK_DB": str(tmp_path / "s.db")}
    long_id = "ollama:a-rather-long-model-name-that-would-not-fit-an-80-column-table:latest"
    for command in (["probe"], ["health"], ["models"]):
        done = subprocess.run(
            [sys.executable, "-m", "voicefallback", *command],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert long_id in done.stdout, done.stdout
        assert "…" not in done.stdout
