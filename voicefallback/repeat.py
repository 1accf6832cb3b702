"""`probe --every`: a round on a fixed interval until Ctrl-C or SIGTERM, for hosts without cron."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from voicefallback.errors import Terminated, VoicefallbackError


def repeat_every(
    interval_s: float,
    run_round: Callable[[], object],
    report_error: Callable[[VoicefallbackError], None],
    *,
    monotonic: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Run `run_round` now and then every `interval_s` seconds; return the rounds completed.

    Rounds keep to a fixed schedule; ticks missed while a round overran are skipped, not
    bunched up. A domain error in the first round is raised (a broken setup fails at once);
    later ones are reported and the next round goes ahead (a flaky disk or a busy lock should
    not end the loop). Ctrl-C or SIGTERM (KeyboardInterrupt, Terminated) ends the loop: a round
    in flight is abandoned and its transaction rolled back, so nothing half-written remains.
    """
    rounds = 0
    next_at = monotonic()
    try:
        while True:
            try:
                run_round()
            except VoicefallbackError as exc:
                if rounds == 0:
                    raise
                report_error(exc)
            rounds += 1
            next_at += interval_s
            now = monotonic()
            if next_at < now:
                next_at += math.ceil((now - next_at) / interval_s) * interval_s
            sleep(next_at - now)
    except (KeyboardInterrupt, Terminated):
        return rounds
