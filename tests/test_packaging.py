"""What would be published: complete metadata, one version, and a CI step that tests the wheel."""

from __future__ import annotations

import re
import tomllib

import voicefallback
from tests.conftest import REPO

PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def test_metadata_is_complete_for_publishing():
    assert PROJECT["license"] == "MIT" and (REPO / "LICENSE").is_file()
    assert "MIT License" in (REPO / "LICENSE").read_text()
    assert PROJECT["authors"] and PROJECT["keywords"]
    assert PROJECT["readme"] == "README.md" and PROJECT["description"]
    assert {"Homepage", "Source", "Issues"} <= set(PROJECT["urls"])
    classifiers = PROJECT["classifiers"]
    assert "Programming Language :: Python :: 3.11" in classifiers
    assert "Typing :: Typed" in classifiers and (REPO / "voicefallback" / "py.typed").exists()
    # A license expression and a License :: classifier together are refused by PyPI tools.
    assert not any(c.startswith("License ::") for c in classifiers)
    assert PROJECT["scripts"] == {"voicefallback": "voicefallback.cli:main"}


def test_the_version_is_written_in_one_place(bare_cli):
    assert "version" not in PROJECT and PROJECT["dynamic"] == ["version"]
    assert re.fullmatch(r"\d+\.\d+\.\d+(?:[ab]\d+|rc\d+)?", voicefallback.__version__)
    result = bare_cli("--version")
    assert result.exit_code == 0 and result.stdout == f"voicefallback {voicefallback.__version__}\n"
