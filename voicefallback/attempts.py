"""The attempt rules every call on a session's path follows, written once: what counts as
content, first-token budgets, hedges, stalls and the last candidate that could still serve.

`start`'s opening decision, the library routers and the voice-framework bindings all run their
calls as `Attempt`s in a `Race` (README "Choosing a model" and "Every turn"):

- Only a content token (visible text or a tool call) counts as an answer: a role-only delta,
  an empty delta or a keep-alive comment is not.
- The first candidate starts at once. When its first-token budget (`ttft_budget_ms`) passes
  without content, the next candidate starts beside it (a hedge); the first one keeps going.
  When an attempt fails, the next candidate starts at once. An `eager` candidate (one the
  start path re-checks) does not hold back the next one: they are called together.
- The winner is the first candidate, in order, whose content arrived, once no candidate ahead
  of it could still answer within its budget; every other attempt is cut at once (the caller
  never hears two models). A loser cut past its own budget is recorded `over_budget`; one cut
  before its budget passed says nothing about its model and is not evidence.
- Once content has begun, a gap longer than the budget is `stalled`, unless no other candidate
  could still serve: the last one that could is never cut before `timeout_s`. "Could still
  serve" is judged at every moment: a candidate not tried yet, or one still running uncut.
- An answer that ends properly without any content token (an empty reply, a reasoning model that
  spent its tokens thinking) is a success judged on its total time, like any probe.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

from voicefallback.config import Model
from voicefallback.records import CallKind, ErrorKind, ProbeResult, utcnow

Runner = Callable[["Attempt"], Awaitable[ProbeResult]]


@dataclass(frozen=True)
class Contender:
    """A candidate of a race: its model, and how to call it (None: already known usable from
    its evidence, so it needs no call and wins as soon as it is its turn). An `eager` one does
    not hold back the next candidate while within its budget: both are called at once."""

    model: Model
    run: Runner | None = None
    eager: bool = False


class Attempt:
    """One call in progress: its clocks, what came back, and what the race decided about it.

    A runner makes the call inside `async with attempt.deadline():`, reports what arrives
    (`text`, `tool_call` or `content`, and `event` for anything else), and returns a result
    built by `success()` or `failure()`, or `timed_out()` when the deadline fired. Runners
    never raise.
    """

    def __init__(
        self, model: Model, kind: CallKind, race: Race | None = None, stub: bool = False
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
                self._race._changed()  # its budget runs from now

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
                self._race._changed()
        self._rearm()

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

    def responded(self, sent: float | None = None) -> None:
        """The response headers arrived; `sent` is when the request left, if known."""
        self.headers = True
        if sent is not None:
            self.sent = sent

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

    def _rearm(self) -> None:
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
            self._race._passed(self)

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
        self._race._changed()
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

    def _give_up(self) -> None:
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

    def _end(self, result: ProbeResult | None) -> None:
        if not self.result.done():
            self.result.set_result(result)


class Race:
    """Candidates tried by the attempt rules (see the module docstring) until one answers.

    `run()` returns the first attempt whose content arrived (the others are cut at once), or
    None when every candidate failed. The race keeps watching that attempt for stalls; when it
    fails after all (`await attempt.result` is not ok), `run()` again goes on with the
    candidates not tried yet. `on_result` gets each attempt's result once, as it ends, when it
    is evidence about its model (and no one else records it). `aclose()` cuts whatever still
    runs.
    """

    def __init__(
        self,
        contenders: Sequence[Contender],
        *,
        kind: CallKind,
        on_result: Callable[[ProbeResult], None] | None = None,
        stub: bool = False,
    ) -> None:
        self._waiting = list(contenders)
        self._kind = kind
        self._stub = stub
        self._on_result = on_result
        self.attempts: list[Attempt] = []
        self._running: list[Attempt] = []
        self._tasks: set[asyncio.Task[ProbeResult]] = set()
        self._winner: Attempt | None = None
        self._wake: asyncio.Future[None] | None = None  # what `run` waits on
        self._virtual_ms = 0  # stub mode: how far the budgets declared passed have moved time

    def others_could_serve(self, attempt: Attempt) -> bool:
        """Whether a candidate other than `attempt` might still answer: one not tried yet, or
        one running that the race has not given up on."""
        if self._waiting:
            return True
        return any(a is not attempt and not a.cut for a in self._running)

    async def run(self) -> Attempt | None:
        if self._winner is not None and self._winner.result.done():
            ended = self._winner.result.result()
            if ended is None or ended.ok:
                return self._winner
            self._winner = None  # it failed after its first content: go on with the rest
        while True:
            self._decide()
            if self._winner is not None:
                return self._winner
            fresh = [a for a in self._running if a.within_budget()]
            if self._waiting and all(a.eager for a in fresh):
                self._launch(self._waiting.pop(0))
                continue
            if not self._running:
                return None
            self._grant_turn()
            loop = asyncio.get_running_loop()
            self._wake = loop.create_future()
            ends = [end for a in fresh if (end := a.budget_ends()) is not None]
            timer = loop.call_at(min(ends), _wake_up, self._wake) if ends else None
            try:
                await self._wake  # something changed, or the earliest budget passed
            finally:
                if timer is not None:
                    timer.cancel()

    async def settle(self) -> None:
        """Wait until every attempt started has ended (the cut ones end at once)."""
        while self._tasks:
            await asyncio.wait(list(self._tasks))

    async def aclose(self) -> None:
        """Cut everything still running and wait for it to end. The caller is done with the
        race (a turn closed, a barge-in, a start cancelled): no evidence against anyone."""
        self._waiting.clear()
        for attempt in list(self._running):
            attempt.abandon()
        await self.settle()

    # -- inside ------------------------------------------------------------------------------

    def _launch(self, contender: Contender) -> None:
        attempt = Attempt(contender.model, self._kind, self, stub=self._stub)
        attempt.eager = contender.eager
        attempt.virtual_start_ms = self._virtual_ms
        self.attempts.append(attempt)
        if contender.run is None:  # known usable: answers at once, without a call
            attempt.first_content = attempt.began
            attempt._end(None)
            self._decide()
            return
        self._running.append(attempt)
        task = asyncio.ensure_future(_guarded(contender.run, attempt))
        self._tasks.add(task)
        task.add_done_callback(lambda done: self._ended(attempt, done))

    def _ended(self, attempt: Attempt, task: asyncio.Task[ProbeResult]) -> None:
        self._tasks.discard(task)
        if attempt in self._running:
            self._running.remove(attempt)
        result = None if task.cancelled() else task.result()
        if result is not None and result.ok and attempt.first_content is None:
            # An answer that ended properly with nothing to hear: it answered now.
            attempt.first_content = time.perf_counter()
        attempt._end(result)
        recordable = attempt.evidence and not attempt.recorded_elsewhere
        if result is not None and recordable and self._on_result is not None:
            self._on_result(result)
        for other in self._running:
            other._rearm()  # whether another could still serve has changed
        self._changed()

    def _passed(self, attempt: Attempt) -> None:
        """`attempt` declared its budget passed: the race's virtual clock is at least there."""
        budget_ms = attempt.model.thresholds.ttft_budget_ms
        self._virtual_ms = max(self._virtual_ms, attempt.virtual_start_ms + budget_ms)
        self._changed()

    def _changed(self) -> None:
        """Something happened (content, an end, a budget declared passed): decide again."""
        self._decide()
        if self._wake is not None:
            _wake_up(self._wake)

    def _decide(self) -> None:
        """The winner, in the candidates' order: the first that answered, once no candidate
        ahead of it could still answer within its budget (one that failed, or is past its
        budget without content, is not waited for)."""
        if self._winner is not None:
            return
        for attempt in self.attempts:
            if _answered(attempt):
                self._winner = attempt
                self._cut_others(attempt)
                return
            if attempt.within_budget() and not attempt.result.done() and not attempt.cut:
                return  # it may still answer in time, and comes first

    def _cut_others(self, winner: Attempt) -> None:
        for attempt in self._running:
            if attempt is not winner:
                attempt._give_up()
        winner._rearm()

    def _grant_turn(self) -> None:
        """When nothing else could answer first, of the attempts known to answer late (stub
        mode) the one whose answer arrives first on the virtual clock answers."""
        if self._waiting or any(a._turn is None and not a.cut for a in self._running):
            return
        late = [a for a in self._running if a._turn is not None and not a._turn.done()]
        if late:
            first = min(late, key=lambda a: a.arrival_ms)  # ties: the earlier candidate
            assert first._turn is not None
            first._turn.set_result(True)


def _wake_up(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _answered(attempt: Attempt) -> bool:
    """Content arrived and the attempt has not failed (nor been cut) since."""
    if attempt.first_content is None or attempt.cut:
        return False
    if not attempt.result.done():
        return True
    result = attempt.result.result()
    return result is None or result.ok  # None: known usable, no call made


async def _guarded(run: Runner, attempt: Attempt) -> ProbeResult:
    """A runner never raises; if one does anyway, its call is a failure, not a crash."""
    try:
        return await run(attempt)
    except TimeoutError:
        return attempt.timed_out()
    except Exception as exc:  # a bug in a runner must not take the session down
        return attempt.failure("bad_response", f"{type(exc).__name__}: {exc}")
