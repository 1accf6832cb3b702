"""What the package imports is what pyproject.toml declares, and floors are what CI installs."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def _names(requirements: list[str]) -> set[str]:
    return {
        re.match(r"[A-Za-z0-9._-]+", r).group().lower().replace("_", "-")  # type: ignore[union-attr]
        for r in requirements
    }


def _imported_top_level_modules() -> set[str]:
    found: set[str] = set()
    for path in (REPO / "voicefallback").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found |= {alias.name.partition(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.partition(".")[0])
    return found - set(sys.stdlib_module_names) - {"voicefallback", "__future__"}


def test_every_imported_package_is_declared():
    declared = _names(PYPROJECT["dependencies"])
    for extra in PYPROJECT["optional-dependencies"].values():
        declared |= _names(extra)
    owners = packages_distributions()
    undeclared = {
        module: owners.get(module, ["(not installed)"])
        for module in _imported_top_level_modules()
        if not {d.lower().replace("_", "-") for d in owners.get(module, [])} & declared
    }
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"


def test_what_every_command_imports_is_a_core_dependency():
    """The SDKs and their HTTP client are imported by live calls, which need no extra."""
    core = _names(PYPROJECT["dependencies"])
    assert {"typer", "rich", "sqlite-utils", "openai", "anthropic", "httpx2"} <= core


def test_every_core_dependency_has_a_floor_ci_can_install_exactly():
    """.ci/run installs each `>=X` as `==X` and runs the smoke and live-adapter tests there."""
    floor = re.compile(r"[A-Za-z0-9._-]+>=[0-9][^,;\s]*(,<[^,;\s]+)?")
    assert all(floor.fullmatch(r) for r in PYPROJECT["dependencies"]), PYPROJECT["dependencies"]
    assert "tests/test_providers_live.py" in (REPO / ".ci" / "run").read_text()
