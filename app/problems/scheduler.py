"""The scheduler: finds the problems with an automatic action due and has the problem service
append it (`ProblemService.automatic`). It runs inside every server process (every
`SCHEDULER_INTERVAL_SECONDS`) and as `dispatchroom tick` for cron-style use.

Finding what is due is indexed SQL over the problem view: each kind of action has a work-list
column, set only while a problem may still need the action, with an index of the rows where it is
set (see `problem_view.PENDING`), so a tick reads a short range whatever the number of problems,
and never scans event streams.

Exactly once, with any number of processes: a tick holds a lease (a transaction-level advisory
lock on PostgreSQL) so that one process works at a time, and the work itself is idempotent
anyway, because the actions appended depend only on the problem's state and carry deterministic
event ids (`app.problems.automatic`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from app.core.clock import Clock
from app.core.db import Database
from app.core.errors import AppError
from app.core.metrics import AUTOMATIC_ACTIONS, SCHEDULER_TICKS
from app.problems.service import ProblemService
from app.projections.problem_view import problem_view
from app.routing.policy import RoutingPolicy

log = logging.getLogger(__name__)

LEASE_KEY = int.from_bytes(hashlib.sha256(b"scheduler").digest()[:8], "big", signed=True)


@dataclass
class TickReport:
    ran: bool  # False: another process held the lease
    events: Counter[str] = field(default_factory=Counter)  # appended, by event type
    failed: int = 0  # problems whose actions were refused (logged)

    def summary(self) -> str:
        if not self.ran:
            return "another process is running the automatic actions; nothing done"
        done = ", ".join(f"{n} {t}" for t, n in sorted(self.events.items())) or "nothing due"
        return done + (f"; {self.failed} refused (see the log)" if self.failed else "")


class Scheduler:
    def __init__(
        self,
        db: Database,
        problems: ProblemService,
        clock: Clock,
        *,
        interval_seconds: float,
        import_settle_seconds: float,
        batch: int = 200,
    ) -> None:
        self.db = db
        self.problems = problems
        self.clock = clock
        self.interval = interval_seconds
        self.import_settle = timedelta(seconds=import_settle_seconds)
        self.batch = batch

    async def run(self, stop: asyncio.Event) -> None:
        """Tick every `interval` seconds until `stop` is set (a background worker)."""
        while not stop.is_set():
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("scheduler tick failed; trying again next time")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)

    async def tick(self) -> TickReport:
        """Append every automatic action due now, unless another process is at it."""
        async with self._lease() as held:
            if not held:
                SCHEDULER_TICKS.labels("skipped").inc()
                return TickReport(ran=False)
            report = await self.run_due(self.clock.now())
            SCHEDULER_TICKS.labels("ran").inc()
            return report

    async def run_due(self, now: datetime) -> TickReport:
        """Append every automatic action due at `now`, without the lease (`tick` holds it)."""
        report = TickReport(ran=True)
        async for problem_id in self.due_problems(now):
            try:
                facts = await self.problems.automatic(problem_id, now, import_settle=self.import_settle)
            except AppError as exc:
                report.failed += 1
                log.warning("automatic action on problem %s refused: %s %s", problem_id, exc.code, exc.detail)
                continue
            for fact in facts:
                report.events[fact.type] += 1
                AUTOMATIC_ACTIONS.labels(fact.type).inc()
        return report

    @contextlib.asynccontextmanager
    async def _lease(self) -> AsyncIterator[bool]:
        if not self.db.is_postgres:  # one writer at a time anyway; idempotence does the rest
            yield True
            return
        # A transaction-level lock: released when the transaction ends, whatever happens to this
        # process. The transaction writes nothing, so it holds back no one (not the sequencer).
        async with self.db.transaction(write=False) as conn:
            yield bool((await conn.execute(sa.select(sa.func.pg_try_advisory_xact_lock(LEASE_KEY)))).scalar())

    async def due_problems(self, now: datetime) -> AsyncIterator[str]:
        """Ids of problems with an action due at `now` (a problem may come up more than once;
        the second time it has nothing due)."""
        policy = RoutingPolicy(self.problems.calendar, await self.problems.rules.current(), {})
        for listing in work_lists(now, policy).values():
            key, problem_id = listing.selected_columns
            after: tuple[Any, str] | None = None
            while True:
                page = listing.limit(self.batch)
                if after is not None:
                    page = page.where(sa.tuple_(key, problem_id) > sa.tuple_(*after))
                async with self.db.read() as conn:
                    rows = (await conn.execute(page)).all()
                for row in rows:
                    yield str(row[1])
                if len(rows) < self.batch:
                    break
                after = (rows[-1][0], rows[-1][1])


def work_lists(now: datetime, policy: RoutingPolicy) -> dict[str, sa.Select[Any]]:
    """The scheduler's queries, one per kind of action: (sort key, problem id) of the problems
    that may have it due at `now`, in key order; each a range scan of its work-list index."""
    pv = problem_view.c

    def listing(key: Any, *conditions: Any) -> sa.Select[Any]:
        return sa.select(key, pv.id).where(*conditions).order_by(key, pv.id)

    return {
        # the deadline passed (a second ago) and was not marked overdue yet
        "overdue": listing(pv.pending_overdue, pv.pending_overdue <= now - timedelta(seconds=1)),
        # within the reminder lead time of the deadline, not reminded of it yet
        "remind": listing(
            pv.pending_reminder, pv.pending_reminder >= now, pv.pending_reminder < policy.reminder_bound(now)
        ),
        # the deferral's review date has come
        "review": listing(pv.pending_review, pv.pending_review <= policy.calendar.business_date(now)),
        # the feedback window after the resolution has passed
        "close": listing(pv.pending_close, pv.pending_close < policy.feedback_bound(now)),
    }
