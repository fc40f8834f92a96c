"""What an attempt's result means, and when to try again: pure functions of the result, the
retry schedule and the instant (tested without a network or a database).

The schedule (`WEBHOOK_RETRY_SCHEDULE`) lists the seconds before each attempt: the first entry
is the wait before the first attempt (0: at once), the k-th the wait after the (k-1)-th failure.
Each wait is stretched or shrunk by up to 20 % at random (jitter), so that the retries of many
deliveries that failed together do not return together. When the schedule is used up the
delivery has failed for good (a manual retry starts a new round).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

JITTER = 0.2
MAX_RETRY_AFTER = timedelta(days=1)


class Outcome(StrEnum):
    delivered = "delivered"  # a 2xx answer
    retry = "retry"  # anything else, or no answer: try again later
    failed = "failed"  # failed and the schedule is used up
    gone = "gone"  # 410 Gone: the receiver asks us to stop; the subscription is disabled


def classify(status_code: int | None) -> Outcome:
    if status_code is not None and 200 <= status_code < 300:
        return Outcome.delivered
    if status_code == 410:
        return Outcome.gone
    return Outcome.retry


def jittered(seconds: float, rng: random.Random) -> timedelta:
    if seconds <= 0:
        return timedelta(0)
    return timedelta(seconds=seconds * rng.uniform(1 - JITTER, 1 + JITTER))


def first_attempt_at(now: datetime, schedule: Sequence[int], rng: random.Random) -> datetime:
    return now + jittered(schedule[0], rng)


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    next_attempt_at: datetime | None


def decide(
    status_code: int | None,
    *,
    failures_this_round: int,
    now: datetime,
    schedule: Sequence[int],
    rng: random.Random,
    retry_after: float | None = None,
) -> Decision:
    """What follows an attempt. `failures_this_round` counts this attempt if it failed. A
    receiver's `Retry-After` (429, 503) can make the wait longer, never shorter, and at most a
    day."""
    outcome = classify(status_code)
    if outcome is not Outcome.retry:
        return Decision(outcome, None)
    if failures_this_round >= len(schedule):
        return Decision(Outcome.failed, None)
    wait = jittered(schedule[failures_this_round], rng)
    if retry_after is not None and retry_after > 0:
        wait = max(wait, min(timedelta(seconds=retry_after), MAX_RETRY_AFTER))
    return Decision(Outcome.retry, now + wait)


def retry_after_seconds(value: str | None) -> float | None:
    """`Retry-After` in seconds (the HTTP-date form is ignored: clocks differ)."""
    if value is None or not value.strip().isdigit():
        return None
    return float(value.strip())


def should_disable(failing_since: datetime | None, now: datetime, disable_after: timedelta) -> bool:
    """An endpoint that has failed everything since `failing_since` for `disable_after`."""
    return failing_since is not None and now - failing_since >= disable_after
