"""Plain data passed between providers, health, selection and the store."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, get_args

# README "Health": every failure is one of these kinds. `over_budget`: on a session's path, no
# first token within ttft_budget_ms and another model answered first (the call was cut);
# `stalled`: on a session's path, content began and then stopped for longer than the budget.
ErrorKind = Literal[
    "timeout",
    "connection",
    "rate_limited",
    "overloaded",
    "server_error",
    "auth",
    "not_found",
    "bad_request",
    "bad_response",
    "missing_key",
    "over_budget",
    "stalled",
]
ERROR_KINDS: tuple[ErrorKind, ...] = get_args(ErrorKind)


def error_kind(value: object) -> ErrorKind | None:
    """`value` as an error kind, or None when it is not one (typed: no cast needed)."""
    return next((kind for kind in ERROR_KINDS if kind == value), None)


# A latest failure of one of these kinds means "fix the config", not "wait".
MISCONFIG_KINDS: frozenset[ErrorKind] = frozenset(
    {"auth", "not_found", "bad_request", "missing_key"}
)

# Why `start` did not start on its primary (README "`start`").
Reason = Literal["primary_unhealthy", "primary_slow", "primary_failed_at_start"]
FALLBACK_REASONS: tuple[Reason, ...] = get_args(Reason)

Status = Literal["healthy", "slow", "unhealthy", "misconfigured", "stale", "unknown"]
STATUSES: tuple[Status, ...] = get_args(Status)

Mode = Literal["stub", "live"]
MODES: tuple[Mode, ...] = get_args(Mode)

# What made a call: a probe, a session's opening call, or a real session's reported outcome.
CallKind = Literal["probe", "start", "session"]
FallbackSource = Literal["caller", "auto"]


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """ISO-8601 UTC with milliseconds and a trailing Z; fixed width, so it sorts."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + (
        f"{moment.microsecond // 1000:03d}Z"
    )


def parse_iso(text: str) -> datetime:
    """Parse an ISO-8601 time; a time without an offset is taken as UTC."""
    moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


@dataclass(frozen=True)
class ProbeResult:
    """One call to a model: a probe, or the opening call of a session."""

    model: str
    ok: bool
    at: datetime
    latency_ms: int | None = None
    ttft_ms: int | None = None
    error: ErrorKind | None = None
    message: str | None = None  # provider's message, already redacted
    http_status: int | None = None
    retry_after_s: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    stub: bool = False
    kind: CallKind = "probe"
    text: str | None = None  # visible text the model produced (opening line)


@dataclass(frozen=True)
class Opening:
    """What a session's opening call sends (built from the start request by `sessions`):
    the system prompt, the user turn, a token limit, and the line stub mode answers with."""

    system: str | None
    prompt: str
    max_tokens: int
    stub_text: str


@dataclass(frozen=True)
class Snapshot:
    """The latest health facts about one model, updated by every probe."""

    model: str
    last_checked_at: datetime
    ok: bool  # latest call succeeded
    latency_ms: int | None
    ttft_ms: int | None
    last_error: ErrorKind | None
    consecutive_failures: int
    consecutive_successes: int
    failing: bool  # entered the unhealthy state and has not recovered yet
    has_success: bool
    success_latency_ms: int | None  # figures of the latest successful call
    success_ttft_ms: int | None
    stub: bool
    status_since: datetime | None = None
    last_status: Status | None = None  # status as judged when this snapshot was written


@dataclass(frozen=True)
class Candidate:
    """A model passed over by `start`, and why."""

    model: str
    status: Status
    error: ErrorKind | None = None

    def as_json(self) -> dict[str, Any]:
        return {"model": self.model, "status": self.status, "error": self.error}


@dataclass(frozen=True)
class FallbackEvent:
    """`start` did not start on its primary, or could not start at all."""

    uid: str  # unique per event, so a retried write never duplicates it
    at: datetime
    simulation_id: str
    primary: str
    chosen: str | None
    reason: Reason
    fallback_source: FallbackSource | None
    candidates: list[Candidate] = field(default_factory=list)
    error: str | None = None
    id: int | None = None  # assigned by the store


@dataclass(frozen=True)
class StatusChange:
    """A model's recorded verdict changed with one call (from_status None: first verdict)."""

    model: str
    at: datetime
    from_status: Status | None
    to_status: Status
    error: ErrorKind | None = None  # the call's error kind, when it failed


@dataclass(frozen=True)
class TtftBucket:
    """A model's calls in one slice of time: the status page's first-token sparkline."""

    start: datetime
    calls: int
    successes: int
    ttft_ms: int | None  # mean first-token time of the successes; None: none succeeded
