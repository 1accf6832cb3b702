"""The attempt rules every call on a session's path follows, written once: first-token
budgets, hedges, stalls and the last candidate that could still serve.

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
  never hears two models). A loser cut with its budget passed and no content is recorded
  `over_budget`; any other cut (within its budget, after it answered, or because the caller
  is done with the race) says nothing against its model and is not evidence.
- Once content has begun, a gap longer than the budget is `stalled`, unless no other candidate
  could still serve: the last one that could is never cut before `timeout_s`. "Could still
  serve" is judged at every moment: a candidate not tried yet, or one still running uncut.
- An answer that ends properly without any content token (an empty reply, a reasoning model that
  spent its tokens thinking) is a success judged on its total time, like any probe.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from voicefallback.attempts import Attempt, Runner
from voicefallback.config import Model
from voicefallback.records import CallKind, ProbeResult


@dataclass(frozen=True)
class Contender:
    """A candidate of a race: its model, and how to call it (None: already known usable from
    its evidence, so it needs no call and wins as soon as it is its turn). An `eager` one does
    not hold back the next candidate while within its budget: both are called at once."""

    model: Model
    run: Runner | None = None
    eager: bool = False


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
            attempt.end(None)
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
        attempt.end(result)
        recordable = attempt.evidence and not attempt.recorded_elsewhere
        if result is not None and recordable and self._on_result is not None:
            self._on_result(result)
        for other in self._running:
            other.rearm()  # whether another could still serve has changed
        self.changed()

    def budget_passed(self, attempt: Attempt) -> None:
        """`attempt` declared its budget passed: the race's virtual clock is at least there."""
        budget_ms = attempt.model.thresholds.ttft_budget_ms
        self._virtual_ms = max(self._virtual_ms, attempt.virtual_start_ms + budget_ms)
        self.changed()

    def changed(self) -> None:
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
                attempt.lose()
        winner.rearm()

    def _grant_turn(self) -> None:
        """When nothing else could answer first, of the attempts known to answer late (stub
        mode) the one whose answer arrives first on the virtual clock answers."""
        if self._waiting or any(not a.asked_for_turn and not a.cut for a in self._running):
            return
        late = [a for a in self._running if a.awaiting_turn]
        if late:
            min(late, key=lambda a: a.arrival_ms).grant_turn()  # ties: the earlier candidate


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
