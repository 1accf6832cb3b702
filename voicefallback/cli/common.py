"""What every command shares: the Typer app, common options, domain errors, model selection."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from typer.core import TyperGroup

from voicefallback import __version__
from voicefallback.config import Model, Registry, load_registry
from voicefallback.environment import config_path
from voicefallback.errors import VoicefallbackError
from voicefallback.tables import print_error, print_notice

# The order `--help` lists commands in: the daily ones first, whatever the import order.
COMMAND_ORDER = (
    "probe",
    "health",
    "start",
    "report",
    "fallbacks",
    "models",
    "init",
    "prune",
    "state",
)


class _Commands(TyperGroup):
    def list_commands(self, ctx: Any) -> list[str]:
        names = super().list_commands(ctx)
        rank = {name: i for i, name in enumerate(COMMAND_ORDER)}
        return sorted(names, key=lambda name: rank.get(name, len(rank)))


app = typer.Typer(
    cls=_Commands,
    name="voicefallback",
    help="Keep voice AI agents off dead or slow LLMs: probe models, start sessions on a "
    "healthy one, and record every fallback.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfigOption = Annotated[
    Optional[Path],
    typer.Option(
        "--config",
        help="models.toml to use (env: VOICEFALLBACK_CONFIG; default: ./models.toml, "
        "else the user config dir).",
        show_default=False,
        dir_okay=False,
    ),
]
DbOption = Annotated[
    Optional[str],  # not a Path: a postgresql:// URL must reach the store untouched
    typer.Option(
        "--db",
        metavar="FILE|URL",
        help="State: a SQLite file, or a postgresql:// URL shared by many hosts"
        " (env: VOICEFALLBACK_DB; default: the user state dir).",
        show_default=False,
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print exactly one JSON object on stdout.")
]
ModeOption = Annotated[
    Optional[str],
    typer.Option(
        "--mode",
        metavar="stub|live",
        help="stub (deterministic fake calls) or live (real provider calls) "
        "(env: VOICEFALLBACK_MODE; default: settings.mode).",
        show_default=False,
    ),
]
CheckOption = Annotated[
    bool, typer.Option("--check", help="Exit 1 if any listed model is not healthy.")
]
ModelsArgument = Annotated[
    Optional[list[str]],
    typer.Argument(
        help="Model ids (PROVIDER:MODEL); default: every registered model.", show_default=False
    ),
]
RequireOption = Annotated[
    Optional[list[str]],
    typer.Option(
        "--require",
        metavar="MODEL_ID",
        help="Exit 1 if this model is not healthy, whatever the others are; repeat for more "
        "(a CI gate on the primary).",
        show_default=False,
    ),
]


class OutputFormat(StrEnum):
    table = "table"
    json = "json"
    prometheus = "prometheus"


def _version(value: bool) -> None:
    if value:
        print(f"voicefallback {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    """Keep voice AI agents off dead or slow LLMs."""


@contextmanager
def domain_errors() -> Iterator[None]:
    """A domain error becomes one line on stderr and its exit code; Ctrl-C exits 130."""
    try:
        yield
    except VoicefallbackError as exc:
        print_error(str(exc))
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        print_error("interrupted")
        raise typer.Exit(130) from None


def registry_from(config: Path | None) -> Registry:
    return load_registry(config_path(config))


def select(registry: Registry, ids: list[str] | None) -> list[Model]:
    if not ids:
        return list(registry.models)
    return [registry.require(model_id, "MODEL_ID") for model_id in dict.fromkeys(ids)]


def select_with(registry: Registry, ids: list[str] | None, required: list[str]) -> list[Model]:
    """The listed models (default: all), plus every --require model not among them."""
    selected = select(registry, ids)
    extra = [registry.require(m, "--require") for m in dict.fromkeys(required)]
    return selected + [m for m in extra if m not in selected]


def gate_failed(rows: list[dict[str, Any]], check: bool, required: list[str]) -> bool:
    """--check: any listed model not healthy; --require: any required model not healthy.

    A failed gate names the models on stderr, so a CI log says what blocked the deploy.
    """
    gated = [r for r in rows if check or r["model"] in required]
    failing = [f"{r['model']} is {r['status']}" for r in gated if not r["ok"]]
    if failing:
        print_notice("check failed: " + ", ".join(failing))
    return bool(failing)
