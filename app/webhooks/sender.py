"""The sender: claims due deliveries, POSTs them signed, records what happened.

Claiming leases a delivery: one short transaction picks due rows (`FOR UPDATE SKIP LOCKED` on
PostgreSQL, so concurrent senders in several processes take different rows; on SQLite the
claim is a single-writer transaction), counts the attempt and moves `next_attempt_at` past the
attempt's longest possible duration. The HTTP request runs outside any transaction (a
transaction held across someone else's server would hold back the sequencer). If the process
dies mid-attempt the lease runs out and another sender tries again with the same `webhook-id`:
at-least-once. The attempt number is the lease's token, so a sender whose lease was taken over
cannot overwrite the newer attempt's outcome.

A hung receiver costs at most `WEBHOOK_ENDPOINT_CONCURRENCY` slots of this process for at most
the total timeout (15 s); the other endpoints keep their slots. Results are written in batches,
one transaction per loop turn, so the sender adds few writes to the command path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from prometheus_client import Counter as MetricCounter
from prometheus_client import Histogram
from sqlalchemy.ext.asyncio import AsyncConnection

import app as app_package
from app.core.clock import Clock
from app.core.db import Database, UTCDateTime
from app.core.settings import Settings
from app.webhooks.egress import Egress, InvalidTarget, RefusedTarget, Target
from app.webhooks.policy import Outcome, decide, retry_after_seconds, should_disable
from app.webhooks.service import Webhooks
from app.webhooks.signing import signature_header
from app.webhooks.tables import webhook_attempts, webhook_deliveries, webhook_subscriptions
from app.webhooks.transport import Transport, TransportError

log = logging.getLogger(__name__)

PURGE_EVERY = 3600.0  # seconds between purges of the delivery log
SHUTDOWN_GRACE = 2.0  # seconds attempts under way may finish when the process stops
LINGER = 0.02  # seconds a finished attempt may wait to be recorded together with others
READ_CAP = 64 * 1024  # bytes of a response read at most
RESPONSE_SHOWN = 1024  # bytes of it kept in the delivery log
USER_AGENT = f"Dispatchroom-Webhooks/{app_package.__version__}"

ATTEMPTS = MetricCounter(
    "dispatchroom_webhook_attempts_total", "Webhook delivery attempts by outcome.", ["outcome"]
)
ATTEMPT_SECONDS = Histogram(
    "dispatchroom_webhook_attempt_duration_seconds",
    "Duration of webhook delivery attempts.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15),
)
DELIVERY_SECONDS = Histogram(
    "dispatchroom_webhook_delivery_seconds",
    "From fan-out to a successful delivery.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 60, 600, 3600, 86400),
)
DISABLED = MetricCounter("dispatchroom_webhook_disabled_total", "Webhooks disabled by the service.")

wd = webhook_deliveries
ws = webhook_subscriptions

_RECORD = (
    sa.update(wd)
    .where(
        wd.c.id == sa.bindparam("b_id"),
        wd.c.attempts == sa.bindparam("b_attempt"),
        # A failure only moves a pending delivery (not one failed meanwhile because its
        # subscription was disabled); a success is a fact whatever happened meanwhile.
        sa.or_(wd.c.status == "pending", sa.bindparam("b_success", type_=sa.Boolean)),
    )
    .values(
        status=sa.bindparam("b_status", type_=sa.String),
        next_attempt_at=sa.bindparam("b_next", type_=UTCDateTime),
        delivered_at=sa.func.coalesce(sa.bindparam("b_delivered_at", type_=UTCDateTime), wd.c.delivered_at),
        last_status_code=sa.bindparam("b_code", type_=sa.SmallInteger),
        last_error=sa.bindparam("b_error", type_=sa.String),
    )
)

# An attempt is recorded only while its delivery exists (its subscription may have been deleted
# while the attempt was under way).
_ATTEMPT_COLUMNS = {
    "delivery_id": sa.String,
    "number": sa.Integer,
    "attempted_at": UTCDateTime,
    "status_code": sa.SmallInteger,
    "latency_ms": sa.Integer,
    "response": sa.Text,
    "error": sa.String,
    "outcome": sa.String,
    "next_retry_at": UTCDateTime,
    "sender": sa.String,
}
_ATTEMPT = sa.insert(webhook_attempts).from_select(
    list(_ATTEMPT_COLUMNS),
    sa.select(*(sa.bindparam(f"a_{name}", type_=kind()) for name, kind in _ATTEMPT_COLUMNS.items())).where(
        sa.exists().where(wd.c.id == sa.bindparam("a_delivery_id", type_=sa.String()))
    ),
)


@dataclass(frozen=True)
class Claimed:
    id: str
    subscription_id: str
    url: str
    body: str
    attempt: int
    round_start: int
    secrets: tuple[str, ...]
    created_at: datetime
    was_failing: bool = False  # the endpoint's failing_since was set when claimed


@dataclass(frozen=True)
class Result:
    claimed: Claimed
    attempted_at: datetime
    status_code: int | None
    latency_ms: int
    response: str | None
    error: str | None
    retry_after: float | None = None


class Sender:
    def __init__(
        self,
        db: Database,
        webhooks: Webhooks,
        settings: Settings,
        clock: Clock,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.db = db
        self.webhooks = webhooks
        self.egress: Egress = webhooks.egress
        self.clock = clock
        self.rng = rng or random.Random()
        self.schedule = list(settings.webhook_retry_schedule)
        self.disable_after = timedelta(seconds=settings.webhook_disable_after_seconds)
        self.concurrency = settings.webhook_concurrency
        self.per_endpoint = settings.webhook_endpoint_concurrency
        self.poll = settings.webhook_poll_ms / 1000
        self.timeout = settings.webhook_timeout_seconds
        self.connect_timeout = settings.webhook_connect_timeout_seconds
        # Longer than any attempt can take: until then nobody else takes the delivery.
        self.lease = timedelta(seconds=2 * self.timeout)
        self.retention = timedelta(days=settings.webhook_log_retention_days)
        self.purged_at = 0.0  # monotonic time of the last purge
        self.name = f"{socket.gethostname()}:{os.getpid()}"[:100]
        self.inflight: Counter[str] = Counter()  # subscription id → attempts under way
        self.tasks: set[asyncio.Task[None]] = set()
        self.results: list[Result] = []
        self.results_since = 0.0  # when the oldest unrecorded result came in (monotonic)
        self.batch = max(1, self.concurrency // 4)
        self.flush_failures = 0
        self._transport: Transport | None = None

    @property
    def wake(self) -> asyncio.Event:
        return self.webhooks.wake

    def transport(self) -> Transport:
        if self._transport is None:
            self._transport = Transport(
                connect_timeout=self.connect_timeout,
                read_cap=READ_CAP,
                max_idle_per_destination=self.concurrency,  # several endpoints may share a host
            )
        return self._transport

    # -- the loop --------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Claim and record in batches: a finished attempt waits up to `LINGER` for others to be
        recorded with it, and free slots are claimed a quarter of the concurrency at a time,
        so the database sees a few statements per batch rather than per delivery."""
        backlog = False  # the last claim filled every free slot: more may be due
        try:
            while not stop.is_set():
                self.wake.clear()
                try:
                    busy = sum(self.inflight.values())
                    free = self.concurrency - busy
                    record = bool(self.results) and (
                        not busy
                        or len(self.results) >= self.batch
                        or time.monotonic() - self.results_since >= LINGER
                    )
                    claim = free if free >= (self.batch if busy else 1) else 0
                    if claim and not record and not backlog and not await self.due():
                        claim = 0
                    if record or claim:
                        claimed = await self.turn(claim, record=record)
                        for item in claimed:
                            self._start(item)
                        if claim:
                            backlog = len(claimed) == claim
                    if time.monotonic() - self.purged_at > PURGE_EVERY:
                        self.purged_at = time.monotonic()
                        await self.purge()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("webhook sender failed; retrying")
                    await asyncio.sleep(1)
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), LINGER if self.results else self.poll)
        finally:
            await self.close()

    async def run_once(self) -> int:
        """Claim what is due, send it, record it (tests and benchmarks); returns how many."""
        claimed = await self.claim(self.concurrency)
        for item in claimed:
            self._start(item)
        if self.tasks:
            await asyncio.gather(*self.tasks)
        await self.flush()
        return len(claimed)

    async def close(self) -> None:
        """Let attempts under way finish for a moment, record what finished; what is cut short
        stays leased and is sent again after the lease (at least once)."""
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=SHUTDOWN_GRACE)
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.flush(), 5)
        if self._transport is not None:
            await self._transport.aclose()
            self._transport = None

    def _start(self, item: Claimed) -> None:
        self.inflight[item.subscription_id] += 1
        task = asyncio.create_task(self._attempt(item))
        self.tasks.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self.tasks.discard(t)
            self.inflight[item.subscription_id] -= 1
            if self.inflight[item.subscription_id] <= 0:
                del self.inflight[item.subscription_id]
            self.wake.set()

        task.add_done_callback(done)

    async def purge(self) -> int:
        """Forget finished deliveries (and their attempts) older than the retention; the events
        they came from stay in the log. Returns how many went."""
        cutoff = self.clock.now() - self.retention
        async with self.db.transaction() as conn:
            result = await conn.execute(
                sa.delete(wd).where(
                    wd.c.status.in_(("delivered", "failed", "notice")), wd.c.created_at < cutoff
                )
            )
        return int(result.rowcount or 0)

    # -- claiming --------------------------------------------------------------------------

    async def due(self) -> bool:
        """A cheap read before the claim's write transaction: is anything due at all?"""
        async with self.db.read() as conn:
            first = (
                await conn.execute(
                    sa.select(wd.c.id)
                    .where(wd.c.status == "pending", wd.c.next_attempt_at <= self.clock.now())
                    .limit(1)
                )
            ).first()
        return first is not None

    async def claim(self, limit: int) -> list[Claimed]:
        return await self.turn(limit, record=False)

    async def _claim(self, conn: AsyncConnection, limit: int) -> list[Claimed]:
        now = self.clock.now()
        saturated = sorted(s for s, n in self.inflight.items() if n >= self.per_endpoint)
        due = sa.and_(wd.c.status == "pending", wd.c.next_attempt_at <= now)
        ranked_q = sa.select(
            wd.c.id,
            sa.func.row_number()
            .over(partition_by=wd.c.subscription_id, order_by=(wd.c.next_attempt_at, wd.c.id))
            .label("rn"),
        ).where(due)
        if saturated:
            ranked_q = ranked_q.where(wd.c.subscription_id.not_in(saturated))
        ranked = ranked_q.subquery()
        pick = (
            sa.select(wd.c.id, wd.c.subscription_id)
            .where(wd.c.id.in_(sa.select(ranked.c.id).where(ranked.c.rn <= self.per_endpoint)), due)
            .order_by(wd.c.next_attempt_at, wd.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        rows = (await conn.execute(pick)).all()
        room = Counter({s: self.per_endpoint - n for s, n in self.inflight.items()})
        chosen: list[str] = []
        for row in rows:
            left = room.get(row.subscription_id, self.per_endpoint)
            if left > 0:
                room[row.subscription_id] = left - 1
                chosen.append(row.id)
        if not chosen:
            return []
        await conn.execute(
            sa.update(wd)
            .where(wd.c.id.in_(chosen))
            .values(attempts=wd.c.attempts + 1, next_attempt_at=now + self.lease, last_attempt_at=now)
        )
        details = (
            await conn.execute(
                sa.select(
                    wd.c.id,
                    wd.c.subscription_id,
                    wd.c.body,
                    wd.c.attempts,
                    wd.c.round_start,
                    wd.c.created_at,
                    ws.c.url,
                    ws.c.enabled,
                    ws.c.secret,
                    ws.c.previous_secret,
                    ws.c.previous_secret_expires_at,
                    ws.c.failing_since,
                )
                .join(ws, ws.c.id == wd.c.subscription_id)
                .where(wd.c.id.in_(chosen))
                .order_by(wd.c.next_attempt_at, wd.c.id)
            )
        ).all()
        orphans = [d.id for d in details if not d.enabled]
        if orphans:  # fanned out while the subscription was being disabled
            await conn.execute(
                sa.update(wd)
                .where(wd.c.id.in_(orphans))
                .values(status="failed", next_attempt_at=None, last_error="the subscription was disabled")
            )
        claimed = []
        for d in details:
            if not d.enabled:
                continue
            in_force = [d.secret]
            if d.previous_secret and d.previous_secret_expires_at and d.previous_secret_expires_at > now:
                in_force.append(d.previous_secret)
            claimed.append(
                Claimed(
                    id=d.id,
                    subscription_id=d.subscription_id,
                    url=d.url,
                    body=d.body,
                    attempt=d.attempts,
                    round_start=d.round_start,
                    secrets=tuple(in_force),
                    created_at=d.created_at,
                    was_failing=d.failing_since is not None,
                )
            )
        return claimed

    # -- sending ---------------------------------------------------------------------------

    async def _attempt(self, item: Claimed) -> None:
        attempted_at = self.clock.now()
        started = time.perf_counter()
        status_code: int | None = None
        response: str | None = None
        error: str | None = None
        retry_after: float | None = None
        try:
            async with asyncio.timeout(self.timeout):
                target = await self.egress.check(item.url)
                status_code, response, retry_after = await self._post(target, item)
        except TimeoutError:
            error = f"no complete answer within {self.timeout:g} s"
        except (InvalidTarget, RefusedTarget) as exc:
            error = f"refused: {exc}"
        except TransportError as exc:
            error = str(exc)
        except Exception as exc:  # whatever else goes wrong is this attempt's failure
            log.exception("webhook attempt %s failed unexpectedly", item.id)
            error = f"{type(exc).__name__}: {exc}".rstrip(": ")
        elapsed = time.perf_counter() - started
        ATTEMPT_SECONDS.observe(elapsed)
        if not self.results:
            self.results_since = time.monotonic()
        self.results.append(
            Result(
                claimed=item,
                attempted_at=attempted_at,
                status_code=status_code,
                latency_ms=round(elapsed * 1000),
                response=response,
                error=error[:500] if error else None,
                retry_after=retry_after,
            )
        )

    async def _post(self, target: Target, item: Claimed) -> tuple[int, str, float | None]:
        body = item.body.encode()
        timestamp = int(self.clock.now().timestamp())
        headers = [
            ("Host", target.host_header),
            ("Content-Type", "application/json"),
            ("User-Agent", USER_AGENT),
            ("webhook-id", item.id),
            ("webhook-timestamp", str(timestamp)),
            ("webhook-signature", signature_header(item.secrets, item.id, timestamp, body)),
        ]
        answer = await self.transport().post(target, headers, body)
        shown = answer.body[:RESPONSE_SHOWN].decode("utf-8", "replace")
        return answer.status, shown, retry_after_seconds(answer.headers.get("retry-after"))

    # -- recording -------------------------------------------------------------------------

    async def flush(self) -> None:
        """Record the finished attempts now (tests, shutdown)."""
        await self.turn(0, record=True)

    async def turn(self, claim: int, *, record: bool) -> list[Claimed]:
        """One transaction: record the finished attempts (if `record`) and claim up to `claim`
        due deliveries; then disable the endpoints that asked for it (410) or have failed for
        too long. Returns what was claimed."""
        results: list[Result] = []
        if record:
            results, self.results = self.results, []
        if not results and claim <= 0:
            return []
        try:
            async with self.db.transaction() as conn:
                disable = await self._record(conn, results) if results else []
                claimed = await self._claim(conn, claim) if claim > 0 else []
        except Exception:
            if results:
                self.flush_failures += 1
                if self.flush_failures < 3:
                    self.results = results + self.results  # try again next turn
                else:  # give up on these records; their leases run out and they are sent again
                    log.error("dropping %d webhook attempt records after repeated failures", len(results))
                    self.flush_failures = 0
            raise
        if results:
            self.flush_failures = 0
        for subscription_id, reason, delivery_id, status_code in disable:
            if await self.webhooks.disable(
                subscription_id, reason, delivery_id=delivery_id, status_code=status_code
            ):
                DISABLED.inc()
        return claimed

    async def _record(
        self, conn: AsyncConnection, results: list[Result]
    ) -> list[tuple[str, str, str, int | None]]:
        now = self.clock.now()
        decided = []
        for r in results:
            c = r.claimed
            decision = decide(
                r.status_code,
                failures_this_round=c.attempt - c.round_start,
                now=now,
                schedule=self.schedule,
                rng=self.rng,
                retry_after=r.retry_after,
            )
            decided.append((r, decision))
        succeeded = {r.claimed.subscription_id for r, d in decided if d.outcome is Outcome.delivered}
        failed = {r.claimed.subscription_id for r, d in decided} - succeeded
        recovered = {r.claimed.subscription_id for r, _ in decided if r.claimed.was_failing} & succeeded
        disable: list[tuple[str, str, str, int | None]] = []
        # Lock order: subscriptions, then deliveries (as `Webhooks.disable` does).
        if recovered:
            await conn.execute(sa.update(ws).where(ws.c.id.in_(sorted(recovered))).values(failing_since=None))
        failing: dict[str, datetime] = {}
        if failed:
            marked = await conn.execute(
                sa.update(ws)
                .where(ws.c.id.in_(sorted(failed)))
                .values(failing_since=sa.func.coalesce(ws.c.failing_since, now))
                .returning(ws.c.id, ws.c.failing_since)
            )
            failing = {row.id: row.failing_since for row in marked}
        attempts = []
        updates = []
        for r, d in decided:
            c = r.claimed
            ATTEMPTS.labels(d.outcome.value).inc()
            if d.outcome is Outcome.delivered:
                DELIVERY_SECONDS.observe(max(0.0, (now - c.created_at).total_seconds()))
            attempts.append(
                {
                    "a_delivery_id": c.id,
                    "a_number": c.attempt,
                    "a_attempted_at": r.attempted_at,
                    "a_status_code": r.status_code,
                    "a_latency_ms": r.latency_ms,
                    "a_response": r.response,
                    "a_error": r.error,
                    "a_outcome": d.outcome.value,
                    "a_next_retry_at": d.next_attempt_at,
                    "a_sender": self.name,
                }
            )
            success = d.outcome is Outcome.delivered
            updates.append(
                {
                    "b_id": c.id,
                    "b_attempt": c.attempt,
                    "b_success": success,
                    "b_status": {Outcome.delivered: "delivered", Outcome.retry: "pending"}.get(
                        d.outcome, "failed"
                    ),
                    "b_next": d.next_attempt_at,
                    "b_delivered_at": now if success else None,
                    "b_code": r.status_code,
                    "b_error": r.error
                    if r.error or success
                    else f"HTTP {r.status_code}: {(r.response or '')[:200]}",
                }
            )
            if d.outcome is Outcome.gone:
                disable.append((c.subscription_id, "the endpoint answered 410 Gone", c.id, 410))
            elif not success and should_disable(failing.get(c.subscription_id), now, self.disable_after):
                since = failing[c.subscription_id].isoformat(timespec="seconds")
                disable.append(
                    (
                        c.subscription_id,
                        f"every delivery has failed since {since}; the last: "
                        + (r.error or f"HTTP {r.status_code}"),
                        c.id,
                        r.status_code,
                    )
                )
        if attempts:
            await conn.execute(_ATTEMPT, attempts)
        if updates:
            await conn.execute(_RECORD, updates)
        once: dict[str, tuple[str, str, str, int | None]] = {}
        for item in disable:
            once.setdefault(item[0], item)
        return list(once.values())
