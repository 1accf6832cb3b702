"""models.toml turned into a frozen, validated registry (and the mode it runs in)."""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from voicefallback.durations import MAX_DAYS
from voicefallback.environment import CONFIG_ENV
from voicefallback.errors import ConfigError, InputError
from voicefallback.records import ERROR_KINDS, ErrorKind, Mode, error_kind
from voicefallback.redaction import redact

MODE_ENV = "VOICEFALLBACK_MODE"
MODES = ("stub", "live")
PROVIDER_TYPES = ("openai", "anthropic")
DEFAULT_CONNECT_TIMEOUT_S = 2.0  # how long to wait for a PostgreSQL state to answer
# Live calls in flight at once. They wait on the network, not the CPU: 64 probe a typical
# registry in one round (50 models at 200 ms: ~0.3 s); 16 would take four rounds.
DEFAULT_CONCURRENCY = 64
MAX_CONFIG_BYTES = 1024 * 1024  # a registry is a few KB; refuse to parse a huge file

_PROVIDER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")
# Names only: a pasted key (sk-proj-..., sk_live_..., mixed-case tokens) does not fit, so it
# is refused instead of being shown by `models --json` and stored in "X is not set" messages.
_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]{0,63}\Z")
# Model names are what the API wants: letters, digits and . _ - / : @ + (no spaces, no control).
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-/:@+]*\Z")
MAX_MODEL_ID = 200
MAX_STUB_MS = 600_000  # a stub figure beyond any timeout_s is a typo (and would overflow)
_IDS_SHOWN = 8  # registered ids an "unknown model" error lists


@dataclass(frozen=True)
class Thresholds:
    """The health settings; global in [settings], overridable per model."""

    timeout_s: float = 10.0
    ttft_budget_ms: int = 1500
    stale_after_s: float = 300.0
    fail_after: int = 1
    recover_after: int = 2
    history_days: float = 30.0


_THRESHOLD_KEYS = {f.name: f.type for f in fields(Thresholds)}
_INTEGER_KEYS = {"ttft_budget_ms", "fail_after", "recover_after"}
# Larger values are typos (or would overflow dates and timers); each limit as the message says it.
_THRESHOLD_MAX: dict[str, tuple[float, str]] = {
    "timeout_s": (600, "600 (10 minutes)"),
    "ttft_budget_ms": (600_000, "600000 (10 minutes)"),
    "stale_after_s": (MAX_DAYS * 86_400, f"{MAX_DAYS * 86_400} (100 years)"),
    "fail_after": (1000, "1000"),
    "recover_after": (1000, "1000"),
    "history_days": (MAX_DAYS, f"{MAX_DAYS} (100 years)"),
    "connect_timeout_s": (60, "60 (1 minute)"),  # [settings] only: not a per-model value
}
# Smaller values cannot work: no provider call (nor a connection to PostgreSQL) finishes in
# under 100 ms, and no first token arrives in under 10 ms, so every call would fail as a
# timeout or over budget. 1e-320 and 0.0001 are typos, refused here.
_THRESHOLD_MIN: dict[str, tuple[float, str]] = {
    "timeout_s": (0.1, "0.1 (100 ms)"),
    "ttft_budget_ms": (10, "10"),
    "connect_timeout_s": (0.1, "0.1 (100 ms)"),
}


@dataclass(frozen=True)
class Stub:
    """What the stub adapter answers for a model."""

    latency_ms: int = 100
    ttft_ms: int | None = None  # defaults to latency_ms
    error: ErrorKind | None = None


@dataclass(frozen=True)
class Provider:
    name: str
    type: str
    api_key_env: str | None = None
    base_url: str | None = None


@dataclass(frozen=True)
class Model:
    id: str
    provider: Provider
    name: str  # the model name sent to the API
    thresholds: Thresholds
    stub: Stub = field(default_factory=Stub)


@dataclass(frozen=True)
class Registry:
    path: Path
    mode: Mode
    defaults: Thresholds
    providers: Mapping[str, Provider]
    models: tuple[Model, ...]
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S

    def get(self, model_id: str) -> Model | None:
        for model in self.models:
            if model.id == model_id:
                return model
        return None

    def require(self, model_id: str, where: str) -> Model:
        model = self.get(model_id)
        if model is None:
            if len(model_id) > MAX_MODEL_ID:  # keep the message one readable line
                raise InputError(
                    f"{where}: unknown model ({len(model_id)} characters, longer than any id)"
                )
            ids = [m.id for m in self.models]
            shown = ", ".join(ids[:_IDS_SHOWN])
            if len(ids) > _IDS_SHOWN:  # a registry of hundreds would not fit one line
                shown += f" and {len(ids) - _IDS_SHOWN} more"
            raise InputError(
                f"{where}: unknown model {model_id!r}; registered in {self.path}: {shown}"
            )
        return model

    def key_env_names(self) -> list[str]:
        return [p.api_key_env for p in self.providers.values() if p.api_key_env]


def resolve_mode(option: str | None, registry: Registry, name: str = "--mode") -> Mode:
    """--mode beats VOICEFALLBACK_MODE beats settings.mode. `name`: how the caller spells
    the option in a message (the library routers' parameter is `mode`)."""
    if option is not None:
        value, where = option, name
    elif os.environ.get(MODE_ENV):
        value, where = os.environ[MODE_ENV], MODE_ENV
    else:
        return registry.mode
    if value not in MODES:
        raise InputError(f"{where}: mode must be 'stub' or 'live', got {value!r}")
    return "live" if value == "live" else "stub"


# -- parsing ----------------------------------------------------------------


def load_registry(path: Path) -> Registry:
    """Read and validate models.toml completely; raise ConfigError naming what is wrong."""
    where = str(path)
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(
            f"{where}: no such file; give --config (config= from Python), set {CONFIG_ENV},"
            " or run `voicefallback init` to write a starter models.toml"
        ) from None
    except IsADirectoryError:
        raise ConfigError(f"{where}: is a directory, expected a models.toml file") from None
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read: {exc.strerror}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{where}: larger than {MAX_CONFIG_BYTES // 1024} KiB, refusing to parse")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{where}: not UTF-8 (byte {exc.start})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: invalid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{where}: invalid TOML: nested too deeply") from None
    return _build_registry(path, data)


def _check_keys(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    for key in table:
        if key not in allowed:
            raise ConfigError(
                f"{where}: unknown key {key!r}; expected one of {', '.join(sorted(allowed))}"
            )


def _table(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a table, got {_type_name(value)}")
    return value


def _type_name(value: Any) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "a table",
    }.get(type(value), type(value).__name__)


def _threshold(key: str, value: Any, where: str) -> float | int:
    integer = key in _INTEGER_KEYS
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or (integer and not isinstance(value, int))
    ):
        expected = "a positive integer" if integer else "a positive number"
        raise ConfigError(f"{where}: {key} must be {expected}, got {_type_name(value)}")
    if not math.isfinite(value) or value <= 0:
        expected = "a positive integer" if integer else "a positive number"
        raise ConfigError(f"{where}: {key} must be {expected}, got {value!r}")
    limit, shown = _THRESHOLD_MAX[key]
    if value > limit:
        raise ConfigError(f"{where}: {key} must be at most {shown}, got {value!r}")
    floor, shown = _THRESHOLD_MIN.get(key, (0, ""))
    if value < floor:
        raise ConfigError(f"{where}: {key} must be at least {shown}, got {value!r}")
    return int(value) if integer else float(value)


def _thresholds(table: Mapping[str, Any], base: Thresholds, where: str) -> Thresholds:
    changes = {k: _threshold(k, v, where) for k, v in table.items() if k in _THRESHOLD_KEYS}
    return replace(base, **changes)  # type: ignore[arg-type]


def _build_registry(path: Path, data: Mapping[str, Any]) -> Registry:
    where = str(path)
    _check_keys(data, {"settings", "providers", "models"}, where)

    settings = _table(data.get("settings", {}), f"{where}: [settings]")
    _check_keys(
        settings, set(_THRESHOLD_KEYS) | {"mode", "connect_timeout_s"}, f"{where}: [settings]"
    )
    mode = settings.get("mode", "stub")
    if mode not in MODES:
        raise ConfigError(f"{where}: [settings] mode must be 'stub' or 'live', got {mode!r}")
    defaults = _thresholds(settings, Thresholds(), f"{where}: [settings]")

    providers: dict[str, Provider] = {}
    for name, value in _table(data.get("providers", {}), f"{where}: [providers]").items():
        at = f"{where}: [providers.{name}]"
        if not _PROVIDER_NAME.match(name):
            raise ConfigError(f"{at}: provider name must be letters, digits, '.', '_' or '-'")
        table = _table(value, at)
        _check_keys(table, {"type", "api_key_env", "base_url"}, at)
        kind = table.get("type")
        if kind not in PROVIDER_TYPES:
            raise ConfigError(f"{at}: type must be 'openai' or 'anthropic', got {kind!r}")
        key_env = table.get("api_key_env")
        if key_env is not None and (not isinstance(key_env, str) or not _ENV_NAME.match(key_env)):
            # Never repeat the value: it is often the key itself, pasted in by mistake.
            raise ConfigError(
                f"{at}: api_key_env must be the NAME of an environment variable such as"
                " OPENAI_API_KEY (A-Z, 0-9 and _, at most 64 characters), not the key itself"
            )
        base_url = table.get("base_url")
        if isinstance(base_url, str) and _has_credentials(base_url):
            raise ConfigError(
                f"{at}: base_url must not carry credentials (user:password@);"
                " put the key in the environment variable api_key_env names"
            )
        if base_url is not None:
            _check_base_url(base_url, at)
        providers[name] = Provider(name=name, type=kind, api_key_env=key_env, base_url=base_url)

    raw_models = data.get("models", [])
    if not isinstance(raw_models, list):
        raise ConfigError(f"{where}: models must be an array of tables ([[models]])")
    if not raw_models:
        raise ConfigError(f"{where}: no models declared; add at least one [[models]] table")
    models: list[Model] = []
    seen: set[str] = set()
    for index, value in enumerate(raw_models, start=1):
        at = f"{where}: models[{index}]"
        table = _table(value, at)
        model_id = table.get("id")
        if not isinstance(model_id, str):
            raise ConfigError(
                f'{at}: id must be a string "PROVIDER:MODEL", got {_type_name(model_id)}'
            )
        at = f"{where}: model {model_id!r}"
        _check_keys(table, {"id", "stub"} | (set(_THRESHOLD_KEYS)), at)
        provider_name, name = split_model_id(model_id, at, ConfigError)
        provider = providers.get(provider_name)
        if provider is None:
            raise ConfigError(
                f"{at}: provider {provider_name!r} is not declared; add [providers.{provider_name}]"
            )
        if model_id in seen:
            raise ConfigError(f"{at}: duplicate model id")
        seen.add(model_id)
        models.append(
            Model(
                id=model_id,
                provider=provider,
                name=name,
                thresholds=_thresholds(table, defaults, at),
                stub=_stub(table.get("stub", {}), f"{at}: stub"),
            )
        )
    connect_timeout = settings.get("connect_timeout_s", DEFAULT_CONNECT_TIMEOUT_S)
    return Registry(
        path=path,
        mode=mode,
        defaults=defaults,
        providers=providers,
        models=tuple(models),
        connect_timeout_s=_threshold("connect_timeout_s", connect_timeout, f"{where}: [settings]"),
    )


def _has_credentials(url: str) -> bool:
    try:
        parts = urlsplit(url)
    except ValueError:
        return "@" in url
    return "@" in parts.netloc


def _check_base_url(url: Any, where: str) -> None:
    """An http(s) URL with a host and a valid port, checked when the registry loads, so a
    typo is one line here and not a traceback or a "misconfigured" model at call time.

    Messages show the URL redacted (a key pasted into it stays out of every line), and a URL
    holding anything key-shaped, or a query string, is refused: the SDKs append their paths to
    base_url, so a query would end up mid-path, and `models` would print whatever it holds."""
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        shown = repr(redact(url) if isinstance(url, str) else url)
        raise ConfigError(f"{where}: base_url must be an http(s) URL, got {shown}")
    if any(ch.isspace() or not ch.isprintable() for ch in url):
        raise ConfigError(f"{where}: base_url must not hold spaces or control characters")
    if "?" in url or "#" in url:
        raise ConfigError(
            f"{where}: base_url must not have a query string or fragment (?…, #…); a key "
            "belongs in the environment variable api_key_env names"
        )
    shown = redact(url)
    if shown != url:
        raise ConfigError(
            f"{where}: base_url {shown!r} holds something shaped like an API key; "
            "a key belongs in the environment variable api_key_env names"
        )
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port  # .port raises for a port out of range
    except ValueError as exc:
        raise ConfigError(f"{where}: base_url {shown!r} is not a valid URL ({exc})") from None
    if not host:
        raise ConfigError(f"{where}: base_url {shown!r} has no host")
    if port == 0:
        raise ConfigError(f"{where}: base_url {shown!r}: port must be 1-65535")


def _stub(value: Any, where: str) -> Stub:
    table = _table(value, where)
    _check_keys(table, {"latency_ms", "ttft_ms", "error"}, where)
    latency = table.get("latency_ms", Stub.latency_ms)
    ttft = table.get("ttft_ms")
    for key, number in (("latency_ms", latency), ("ttft_ms", ttft)):
        if number is not None and (
            isinstance(number, bool) or not isinstance(number, int) or number < 0
        ):
            raise ConfigError(f"{where}: {key} must be a non-negative integer, got {number!r}")
        if number is not None and number > MAX_STUB_MS:
            raise ConfigError(
                f"{where}: {key} must be at most {MAX_STUB_MS} (10 minutes), got {number!r}"
            )
    error = table.get("error")
    kind = error_kind(error)
    if error is not None and kind is None:
        raise ConfigError(f"{where}: error must be one of {', '.join(ERROR_KINDS)}, got {error!r}")
    return Stub(latency_ms=latency, ttft_ms=ttft, error=kind)


def split_model_id(
    model_id: str, where: str, error: type[ConfigError] | type[InputError] = InputError
) -> tuple[str, str]:
    """Split "PROVIDER:MODEL" on the first colon, refusing malformed ids."""
    provider, sep, name = model_id.partition(":")
    if len(model_id) > MAX_MODEL_ID:
        raise error(f"{where}: model id longer than {MAX_MODEL_ID} characters")
    if not sep or not provider or not name:
        raise error(f'{where}: model id {model_id!r} must look like "PROVIDER:MODEL"')
    if not _PROVIDER_NAME.match(provider) or not _MODEL_NAME.match(name):
        raise error(
            f"{where}: model id {model_id!r} may hold only letters, digits and . _ - / : @ +"
        )
    return provider, name
