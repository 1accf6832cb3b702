"""One call on a session's path: its clocks, what counts as content (text or a tool call,
never a role-only, empty or keep-alive frame), its deadline (first-token budget, stall,
`timeout_s`) and its result. The rules that run attempts against each other are in race.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol

from voicefallback.config import Model
from voicefallback.records import CallKind, ErrorKind, ProbeResult, utcnow

Runner = Callable[["Attempt"], Awaitable[ProbeResult]]


class Referee(Protocol):
    """What an attempt tells the race it runs in (race.Race), and asks of it."""

    def others_could_serve(self, attempt: Attempt) -> bool: ...

    def changed(self) -> None: ...

    def budget_passed(self, attempt: Attempt) -> None: ...


class Attempt:
    """One call in progress: its clocks, what came back, and what the race decided about it.

    A runner makes the call inside `async with attempt.deadline():`, reports what arrives
    (`text`, `tool_call` or `content`, and `event` for anything else), and returns a result
    built by `success()` or `failure()`, or `timed_out()` when the deadline fired. Runners
    never raise.
    """

    def __init__(
        self, model: Model, kind: CallKind, race: Referee | None = None, stub: bool = False
    ) -> None:
        self.model = model
        self.kind = kind
        self.stub = stub
        self._race = race
        self._loop = asyncio.get_running_loop()
        self.began = time.perf_counter()
        self._began_loop = self._loop.time()
        self.sent: float | None = None  # when the request left (perf_counter), if known
        self.first_content: float | None = None
        self.last_content: float | None = None
        self._last_content_loop = 0.0
        self.last_event: float | None = None
        self.headers = False
        self.complete = False  # the stream's proper end arrived
        self.parts: list[str] = []
        self.chunks = 0  # content pieces
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        self._scope: asyncio.Timeout | None = None
        self.cut = False  # the race gave up on it: another attempt answered first
        self.evidence = True  # what it ends with says something about its model
        self.recorded_elsewhere = False  # a view of a call another owner records
        self.on_first_content: Callable[[], None] | None = None
        self.on_start: Callable[[], None] | None = None
        self.past_budget_declared = False
        self._preparing = False
        self.eager = False  # called beside the next candidate, not before it
        self._turn: asyncio.Future[bool] | None = None
        self.virtual_start_ms = 0  # when it started on the race's virtual clock (stub mode)
        self.arrival_ms = 0  # when its late answer arrives on that clock
        self.result: asyncio.Future[ProbeResult | None] = self._loop.create_future()

    def preparing(self) -> None:
        """Its call is not ready to start (an SDK being imported, a pool slot waited for):
        until `start_clock`, its budget does not run and the race does not hedge it."""
        self._preparing = True

    def start_clock(self) -> None:
        """The call really starts now: time spent before is not the model's."""
        if self.first_content is None and self._scope is None:
            self.began = time.perf_counter()
            self._began_loop = self._loop.time()
        self._started()

    def follow_clock(self, other: Attempt) -> None:
        """Time this attempt by `other`'s clock: a view of a call made by someone else (a
        shared probe) is as old as that call, however late it joined."""
        self.began, self._began_loop, self.sent = other.began, other._began_loop, other.sent
        self._started()

    def _started(self) -> None:
        if self.on_start is not None:
            self.on_start()
        if self._preparing:
            self._preparing = False
            if self._race is not None:
                self._race.changed()  # its budget runs from now

    # -- limits ----------------------------------------------------------------------------

    @property
    def budget_s(self) -> float:
        return self.model.thresholds.ttft_budget_ms / 1000

    @property
    def timeout_s(self) -> float:
        return self.model.thresholds.timeout_s

    def within_budget(self) -> bool:
        """Still inside its first-token budget, with no content yet: the race waits for it."""
        if self.first_content is not None or self.past_budget_declared:
            return False
        return self._preparing or self._loop.time() < self._began_loop + self.budget_s

    def budget_ends(self) -> float | None:
        """When its budget passes (None: not running yet)."""
        return None if self._preparing else self._began_loop + self.budget_s

    # -- what the runner reports -----------------------------------------------------------

    def content(self) -> None:
        """A content token arrived (text or a tool call). The first one may win the race;
        every one moves the stall watchdog on."""
        now = time.perf_counter()
        self.last_content = now
        self._last_content_loop = self._loop.time()
        self.chunks += 1
        if self.first_content is None:
            self.first_content = now
            if self.on_first_content is not None:
                self.on_first_content()
            if self._race is not None:
                self._race.changed()
        self.rearm()

    def text(self, piece: object) -> None:
        """Visible text arrived; an empty piece is not content."""
        if isinstance(piece, str) and piece:
            self.parts.append(piece)
            self.content()

    def tool_call(self) -> None:
        """Part of a tool call arrived: content, though nothing is heard."""
        self.content()

    def event(self) -> None:
        """Anything else arrived (a role-only delta, usage, a ping): not content."""
        self.last_event = time.perf_counter()

    def responded(self) -> None:
        """The response headers arrived (when the request left is stamped by the HTTP hook)."""
        self.headers = True

    def tokens(self, input_tokens: object, output_tokens: object) -> None:
        if isinstance(input_tokens, int):
            self.input_tokens = input_tokens
        if isinstance(output_tokens, int):
            self.output_tokens = output_tokens

    def finished(self, grace_s: float = 0.0) -> None:
        """The stream's proper end arrived: never call it a timeout, and stop waiting for
        what may trail it (usage, the end of the body) after `grace_s`."""
        self.complete = True
        self.last_event = time.perf_counter()
        if self._scope is not None:
            when = self._scope.when()
            tail = self._loop.time() + grace_s
            self._reschedule(tail if when is None else min(when, tail))

    # -- deadlines -------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def deadline(self) -> AsyncIterator[None]:
        """The call's deadline: `timeout_s` from its start, earlier when the race cuts it or
        the stall watchdog fires; raises TimeoutError when it passes."""
        async with asyncio.timeout_at(self._deadline()) as scope:
            self._scope = scope
            try:
                yield
            finally:
                self._scope = None

    def _deadline(self) -> float:
        if self.cut:
            return self._loop.time()
        end = self._began_loop + self.timeout_s
        if self.first_content is not None and self._may_stall_out():
            end = min(end, self._last_content_loop + self.budget_s)
        return end

    def _may_stall_out(self) -> bool:
        return self._race is not None and self._race.others_could_serve(self)

    def rearm(self) -> None:
        """Whether it may be cut for a stall may have changed: move its deadline."""
        if not self.complete:
            self._reschedule(self._deadline())

    def _reschedule(self, when: float) -> None:
        scope = self._scope
        if scope is not None and not scope.expired():  # an expiring one cannot be moved
            scope.reschedule(when)

    def stalled(self) -> bool:
        """The deadline that fired was the stall watchdog's."""
        if self.first_content is None or self.cut:
            return False
        return self._loop.time() < self._began_loop + self.timeout_s - 0.001

    # -- for calls that know their outcome at once (stub mode) -----------------------------

    def declare_past_budget(self) -> None:
        """No content will come within the budget (known at once, as in stub mode): the race
        starts the next candidate now instead of waiting for the budget to pass."""
        self.past_budget_declared = True
        if self._race is not None:
            self._race.budget_passed(self)

    async def my_turn(self, ttft_ms: int) -> bool:
        """For an answer known to come `ttft_ms` after its start, past its budget (stub mode):
        True once no candidate could answer before it (it then answers), False if the race
        gave up on it meanwhile. Arrivals are compared on the race's virtual clock, as the
        calls of a live race would have arrived."""
        if self._race is None:
            return True
        if self.cut:
            return False
        self.arrival_ms = self.virtual_start_ms + ttft_ms
        self._turn = self._loop.create_future()
        self._race.changed()
        return await self._turn

    # -- results ---------------------------------------------------------------------------

    def ms(self, moment: float | None) -> int | None:
        """Milliseconds from when the request left (or the call began) to `moment`."""
        if moment is None:
            return None
        return max(0, round((moment - (self.sent or self.began)) * 1000))

    def success(self, text: str | None = None) -> ProbeResult:
        end = self.last_event or self.last_content or time.perf_counter()
        if self.last_content is not None and self.last_content > end:
            end = self.last_content
        return ProbeResult(
            model=self.model.id,
            ok=True,
            at=utcnow(),
            latency_ms=self.ms(end),
            ttft_ms=self.ms(self.first_content),
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            kind=self.kind,
            stub=self.stub,
            # What a session's opening call said, to hand to the caller; a probe keeps none.
            text=(text if text is not None else "".join(self.parts))
            if self.kind == "start"
            else None,
        )

    def failure(
        self,
        kind: ErrorKind,
        message: str,
        *,
        http_status: int | None = None,
        retry_after_s: float | None = None,
        measured: bool = True,
    ) -> ProbeResult:
        return ProbeResult(
            model=self.model.id,
            ok=False,
            at=utcnow(),
            latency_ms=self.ms(time.perf_counter()) if measured else None,
            ttft_ms=self.ms(self.first_content),
            error=kind,
            message=message,
            http_status=http_status,
            retry_after_s=retry_after_s,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            kind=self.kind,
            stub=self.stub,
        )

    def timed_out(self) -> ProbeResult:
        """The deadline fired: cut by the race, stalled, or out of time."""
        waited = round((time.perf_counter() - self.began) * 1000)
        if self.cut:
            if self.first_content is None:
                return self.failure(
                    "over_budget",
                    f"no first token within the {self.model.thresholds.ttft_budget_ms} ms "
                    f"budget; another model answered first (cut after {waited} ms)",
                )
            return self.failure("over_budget", f"cut after {waited} ms: another model answered")
        if self.stalled():
            return self.failure(
                "stalled",
                f"stream stalled after {self.chunks} content chunks (no content for over "
                f"{self.model.thresholds.ttft_budget_ms} ms)",
            )
        if not self.headers and self.first_content is None:
            stage = "no response headers"
        elif self.first_content is None:
            stage = "no first token"
        else:
            stage = f"stream stalled after {self.chunks} content chunks"
        return self.failure("timeout", f"no complete answer within {self.timeout_s:g} s ({stage})")

    # -- the race's side -------------------------------------------------------------------

    def lose(self) -> None:
        """Cut by the race: another attempt answered first. Only a model that had not
        answered when its budget passed is the worse for it (`over_budget`); one cut within
        its budget, or after it had answered, says nothing against its model."""
        self._cut(evidence=self.first_content is None and not self.within_budget())

    def abandon(self) -> None:
        """Cut for a reason that is not its model's (the process is stopping): no evidence."""
        self._cut(evidence=False)

    def _cut(self, *, evidence: bool) -> None:
        if self.result.done() or self.cut:
            return
        self.cut = True
        self.evidence = evidence
        self._reschedule(self._loop.time())
        if self._turn is not None and not self._turn.done():
            self._turn.set_result(False)

    def end(self, result: ProbeResult | None) -> None:
        """Its call ended with `result` (None: no call was needed)."""
        if not self.result.done():
            self.result.set_result(result)

    @property
    def asked_for_turn(self) -> bool:
        """It knows its answer comes late and waits for its turn (stub mode), or had it."""
        return self._turn is not None

    @property
    def awaiting_turn(self) -> bool:
        return self._turn is not None and not self._turn.done()

    def grant_turn(self) -> None:
        if self._turn is not None and not self._turn.done():
            self._turn.set_result(True)
