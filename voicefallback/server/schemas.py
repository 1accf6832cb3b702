"""The OpenAPI shapes of the documents the HTTP API answers with (the CLI's --json ones).

They describe; they never serialise: every route writes the CLI's own document, and the
schemathesis tests check the two stay the same. Extra keys are refused, so drift is caught.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Status = Literal["healthy", "slow", "unhealthy", "misconfigured", "stale", "unknown"]
Reason = Literal["primary_unhealthy", "primary_slow", "primary_failed_at_start"]
Source = Literal["caller", "auto"]


class _Document(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorDocument(_Document):
    error: str = Field(description="One line saying what is wrong.")


class Candidate(_Document):
    model: str
    status: Status
    error: str | None


class Agent(_Document):
    ok: bool
    stub: bool
    model: str
    latencyMs: int | None
    ttftMs: int | None
    text: str | None
    received_config: dict[str, Any] = Field(description="The request body, as received.")


DEGRADED = Field(
    None,
    description="Present (true) only when a PostgreSQL state was out of reach: the start was "
    "decided on just-in-time probes alone and its writes wait in the local spool.",
)


class StartedDocument(_Document):
    """200: the session started, on its primary or on a fallback."""

    simulationId: str
    primary: str
    chosen: str
    usedFallback: bool
    fallbackSource: Source | None
    reason: Reason | None
    degraded: Literal[True] | None = DEGRADED
    candidates: list[Candidate] = Field(
        description="Every candidate the choice judged but the chosen one, in order: those "
        "passed over and those behind the chosen one, with their status and error."
    )
    agent: Agent


class NotStartedDocument(_Document):
    """503: no candidate could be started (the fallback event is recorded)."""

    simulationId: str
    primary: str
    chosen: None
    usedFallback: Literal[False]
    fallbackSource: Source | None
    reason: Reason | None
    degraded: Literal[True] | None = DEGRADED
    error: str | None
    candidates: list[Candidate]
    agent: None


class ProbeRow(_Document):
    model: str
    provider: str
    ok: bool
    status: Status
    latencyMs: int | None
    ttftMs: int | None
    error: str | None
    stub: bool


class ProbeDocument(_Document):
    probedAt: str
    mode: Literal["stub", "live"]
    results: list[ProbeRow]


class Recent(_Document):
    probes: int
    successes: int
    successRate: float | None
    ttftP50Ms: int | None
    ttftP95Ms: int | None


class LastFailure(_Document):
    at: str
    ageMs: int
    error: str | None
    message: str | None
    httpStatus: int | None


class HealthRow(_Document):
    model: str
    provider: str
    ok: bool
    status: Status
    latencyMs: int | None
    ttftMs: int | None
    lastCheckedAt: str | None
    consecutiveFailures: int
    lastError: str | None
    stub: bool | None
    statusSince: str | None
    recent: Recent
    lastFailure: LastFailure | None


class Window(_Document):
    probes: int
    spanMs: int
    since: str


class HealthDocument(_Document):
    models: list[HealthRow]
    window: Window
    generatedAt: str


class Call(_Document):
    at: str
    kind: str
    ok: bool
    latencyMs: int | None
    ttftMs: int | None
    error: str | None
    message: str | None
    httpStatus: int | None
    stub: bool


class StatusChange(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    at: str
    from_: Status | None = Field(alias="from")
    to: Status
    error: str | None


class HistoryDocument(HealthRow):
    """`GET /health?history=MODEL_ID`: one model's recent calls and status changes."""

    generatedAt: str
    limit: int
    since: str | None
    probes: list[Call]
    statusChanges: list[StatusChange]


class Event(_Document):
    id: int
    at: str
    simulationId: str
    primary: str
    chosen: str | None
    reason: Reason
    fallbackSource: Source | None
    candidates: list[Candidate]


class EventsDocument(_Document):
    events: list[Event]  # newest first: one page
    total: int  # events matching the filters, on all pages
    limit: int
    nextBefore: int | None  # `before` for the next, older page; null on the last


class Liveness(_Document):
    status: Literal["ok"]


class Readiness(_Document):
    status: Literal["ready", "unready"]
    mode: Literal["stub", "live"] | None
    models: int | None
    # up, busy (past a start's wait), away (its writes kept aside), back (writing them in)
    state: Literal["up", "busy", "away", "back"]
    reason: str | None  # why the state is not up (ready or not)
    error: str | None
