"""A session start as asked (the old service's request) and as answered (its outcome)."""

from __future__ import annotations

import json
import math
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from voicefallback.config import Registry
from voicefallback.errors import InputError
from voicefallback.records import (
    Candidate,
    FallbackEvent,
    FallbackSource,
    Opening,
    ProbeResult,
    Reason,
)


@dataclass(frozen=True)
class InputNames:
    """How a caller spells the inputs an error message names: the command line's options,
    or the library's parameters (`serve` turns those into its body's keys)."""

    simulation_id: str
    primary: str
    fallbacks: str
    body: str
    model: str
    ttft_ms: str
    latency_ms: str
    error: str


CLI_NAMES = InputNames(
    "--simulation-id", "--primary", "--fallback", "--body", "MODEL_ID", "--ttft-ms",
    "--latency-ms", "--error",
)  # fmt: skip
PYTHON_NAMES = InputNames(
    "simulation_id", "primary", "fallbacks", "body", "model", "ttft_ms", "latency_ms", "error"
)


@dataclass(frozen=True)
class StartRequest:
    simulation_id: str
    primary: str
    fallbacks: tuple[str, ...]
    config: Mapping[str, Any]  # the whole request body; reaches the opening call

    def opening(self) -> Opening:
        """The opening call this request asks for."""
        return opening_call(self.config)


def opening_call(config: Mapping[str, Any]) -> Opening:
    """A session's opening call, from its request body: the body's details (not the routing
    keys) in the system prompt, the agent's first line as the answer."""
    details = {k: v for k, v in config.items() if k not in _ROUTING_KEYS}
    details_json = json.dumps(details, ensure_ascii=False, default=str, sort_keys=True)
    if len(details_json) > 4000:
        details_json = details_json[:4000] + "…"
    simulation = config.get("simulationId")
    named = f" (simulation {simulation})" if simulation else ""
    system = (
        f"You are the interviewer in a live voice interview simulation{named}. "
        f"Session details as JSON: {details_json}\n"
        "The candidate has just joined the call. Say your opening line exactly as you would "
        "speak it: greet the candidate, say in one sentence what the interview is about, and "
        "ask your first question. At most three short sentences, plain text, no stage "
        "directions."
    )
    return Opening(
        system=system,
        prompt=OPENING_CUE,
        max_tokens=OPENING_MAX_TOKENS,
        stub_text=f"Hello, I'm your interviewer for {simulation or 'this session'}.",
    )


OPENING_CUE = "(The candidate has joined the call.)"
OPENING_MAX_TOKENS = 200
_ROUTING_KEYS = ("primary", "fallbacks", "fallback")


@dataclass(frozen=True)
class StartOutcome:
    request: StartRequest
    chosen: str | None
    fallback_source: FallbackSource | None
    reason: Reason | None
    agent: ProbeResult | None
    event: FallbackEvent | None
    # Every candidate this choice judged but the chosen one, in order: those passed over, and
    # those behind the chosen one (so a caller never hands a model just found down on).
    candidates: list[Candidate]
    error: str | None
    # The state database was out of reach: decided by just-in-time probes alone, writes
    # spooled locally. Why (one line naming the host, never a password), else None.
    degraded: str | None = None

    @property
    def used_fallback(self) -> bool:
        return self.chosen is not None and self.chosen != self.request.primary


MAX_SIMULATION_ID = 256
MAX_BODY_BYTES = 256 * 1024  # the old service's bodies are a few hundred bytes


MAX_BODY_DEPTH = 64  # nesting; the old service's bodies are two or three levels deep
_JSON_TYPES = {
    type(None): "null",
    bool: "a boolean",
    int: "a number",
    float: "a number",
    str: "a string",
    list: "an array",
    dict: "an object",
}


def parse_body(text: str, where: str) -> dict[str, Any]:
    """The old service's JSON request body: one object, no duplicate keys, only finite
    numbers, nested at most MAX_BODY_DEPTH deep; whatever it holds can be printed back as
    strict JSON (`received_config`)."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_BODY_BYTES:
        raise InputError(f"{where}: body larger than {MAX_BODY_BYTES // 1024} KiB")

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in pairs:
            if key in result:
                raise InputError(f"{where}: duplicate key {key!r} in JSON body")
            result[key] = value
        return result

    def no_constants(name: str) -> Any:
        raise InputError(f"{where}: {name} is not valid JSON")

    def finite(literal: str) -> float:
        number = float(literal)
        if not math.isfinite(number):  # 1e999: Infinity, which strict JSON cannot print
            raise InputError(f"{where}: number {literal[:40]} is out of range")
        return number

    try:
        body = json.loads(
            text,
            object_pairs_hook=no_duplicates,
            parse_constant=no_constants,
            parse_float=finite,
        )
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{where}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from None
    except RecursionError:
        raise InputError(f"{where}: JSON nested deeper than {MAX_BODY_DEPTH} levels") from None
    except ValueError:  # an integer of thousands of digits
        raise InputError(f"{where}: a number in the JSON body is too long") from None
    if not isinstance(body, dict):
        got = _JSON_TYPES.get(type(body), type(body).__name__)
        raise InputError(f"{where}: JSON body must be an object, got {got}")
    if _depth(body) > MAX_BODY_DEPTH:
        raise InputError(f"{where}: JSON nested deeper than {MAX_BODY_DEPTH} levels")
    return body


def check_body(body: Mapping[str, Any], where: str = "body") -> dict[str, Any]:
    """A body given from Python (the library routers): what a JSON body could hold, as
    `parse_body` would accept it, so `received_config` can be printed back as strict JSON."""
    if _depth(dict(body)) > MAX_BODY_DEPTH:
        raise InputError(f"{where}: nested deeper than {MAX_BODY_DEPTH} levels")
    try:
        json.dumps(body, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise InputError(f"{where}: not JSON ({exc})") from None
    return dict(body)


def _depth(value: Any) -> int:
    """How deeply arrays and objects nest (an object of scalars is 1), without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in children)
    return deepest


def check_simulation_id(value: Any, where: str) -> str:
    """A session id people can read back: a non-empty string of at most MAX_SIMULATION_ID
    printable characters. Control, format (bidi overrides such as U+202E, zero-width) and
    line-separator characters are refused: they would print as something else."""
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{where}: must be a non-empty string")
    hidden = next((ch for ch in value if unicodedata.category(ch) in _HIDDEN_CATEGORIES), None)
    if len(value) > MAX_SIMULATION_ID or hidden is not None:
        if hidden is None:
            got = f"{len(value)} characters"
        elif unicodedata.category(hidden) == "Cc":
            got = f"a control character {hidden!r}"
        else:
            got = f"an invisible character U+{ord(hidden):04X}"
        raise InputError(f"{where}: at most {MAX_SIMULATION_ID} printable characters (got {got})")
    return value


_HIDDEN_CATEGORIES = ("Cc", "Cf", "Zl", "Zp")


def build_request(
    body: Mapping[str, Any],
    simulation_id: str | None,
    primary: str | None,
    fallbacks: list[str] | None,
    names: InputNames,
) -> StartRequest:
    """Options given beside --body (arguments beside `body`) override the body's keys."""
    where = names.body
    config = dict(body)
    if simulation_id is not None:
        config["simulationId"] = simulation_id
    if primary is not None:
        config["primary"] = primary
    if fallbacks:
        config["fallbacks"] = list(fallbacks)
    sim = config.get("simulationId")
    sim_where = names.simulation_id if simulation_id is not None else f"{where} simulationId"
    if sim is None:
        raise InputError(f"{names.simulation_id}: required (or simulationId in {where})")
    check_simulation_id(sim, sim_where)
    # A lone surrogate (a "\ud800" escape, or bytes that were not UTF-8 in argv) can be
    # neither stored nor printed: refuse it here, before anything is called or written.
    for culprit, value in (
        (names.simulation_id, simulation_id),
        (names.primary, primary),
        (names.fallbacks, fallbacks),
        (where, body),
    ):
        if value and not _is_unicode(value):
            raise InputError(f"{culprit}: holds text that is not valid Unicode")
    first = config.get("primary")
    if first is None:
        raise InputError(f"{names.primary}: required (or primary in {where})")
    if not isinstance(first, str):
        raise InputError(f"{where}: primary must be a model id string")
    others = config.get("fallbacks")
    if others is None:  # absent: the request keeps no "fallbacks" key it did not send
        others = []
    if not isinstance(others, list) or not all(isinstance(m, str) for m in others):
        raise InputError(f"{where}: fallbacks must be an array of model id strings")
    return StartRequest(sim, first, tuple(others), config)


def _is_unicode(value: object) -> bool:
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def validate_request(registry: Registry, request: StartRequest, names: InputNames) -> None:
    """Every named model must be registered (raises InputError, exit 2)."""
    registry.require(request.primary, names.primary)
    for model in request.fallbacks:
        registry.require(model, names.fallbacks)
