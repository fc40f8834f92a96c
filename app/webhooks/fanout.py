"""The fan-out follower: turns each new problem event into one delivery per matching
subscription, in the same transaction as its checkpoint (`app.projections.runner`), so no event
is skipped or fanned out twice, and several processes can run it (one takes each batch).

A subscription matches an event when it is enabled, was created before the event reached the
feed, asks for the event's type (or `*`), and, with a unit filter, when that unit or a unit
below it held, led, cooperated on or reported the problem right before or right after the event
(so a lead unit hears of the return that takes the problem away from it). The payload carries
the problem as it stood right after the event, folded from the stream, not as it stands when
the follower happens to run.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import Sequence
from datetime import tzinfo
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from app.core.clock import Clock
from app.core.security import api_keys
from app.directory.tables import units
from app.events import EventStore, RecordedEvent
from app.problems import domain
from app.problems.domain import ProblemState
from app.problems.service import facts_of
from app.routing.calendar import WorkCalendar
from app.webhooks.payloads import problem_event_body
from app.webhooks.policy import first_attempt_at
from app.webhooks.schemas import ALL_TYPES, PROBLEM_EVENT_TYPES
from app.webhooks.tables import webhook_deliveries, webhook_subscriptions

log = logging.getLogger(__name__)

_DELIVERY_NAMESPACE = uuid.UUID("5b0c9a4e-2f57-4d8e-9a61-3c2e7d1f0b84")
PROBLEM_STREAM_PREFIX = "problem-"


def delivery_id(subscription_id: str, event_id: uuid.UUID) -> str:
    """The `webhook-id` of an event's delivery to a subscription: derived, so a repeated fan-out
    could never create a second delivery of the same event to the same endpoint."""
    return "msg_" + uuid.uuid5(_DELIVERY_NAMESPACE, f"{subscription_id}/{event_id}").hex


def _wants(sub: Any, event: RecordedEvent) -> bool:
    assert event.position is not None
    if event.position <= sub.after_position:
        return False
    types = sub.event_types
    return ALL_TYPES in types or event.type in types


class Fanout:
    name = "webhooks.fanout"
    types: Sequence[str] | None = PROBLEM_EVENT_TYPES

    def __init__(
        self,
        store: EventStore,
        calendar: WorkCalendar,
        tz: tzinfo,
        schedule: Sequence[int],
        clock: Clock,
        rng: random.Random | None = None,
        wake: asyncio.Event | None = None,
    ) -> None:
        self.store = store
        self.calendar = calendar
        self.tz = tz
        self.schedule = list(schedule)
        self.clock = clock
        self.rng = rng or random.Random()
        self.wake = wake
        self.created = 0  # deliveries written in the batch under way

    def committed(self) -> None:
        """Called by the runner once a batch has committed: wake this process's sender."""
        if self.created and self.wake is not None:
            self.wake.set()
        self.created = 0

    async def apply(self, conn: AsyncConnection, events: list[RecordedEvent]) -> None:
        self.created = 0
        # A subscription speaks for the key that made it: once that key is revoked (someone left
        # the unit), no new event reaches its endpoint.
        subs = (
            await conn.execute(
                sa.select(
                    webhook_subscriptions.c.id,
                    webhook_subscriptions.c.event_types,
                    webhook_subscriptions.c.unit_id,
                    webhook_subscriptions.c.after_position,
                )
                .select_from(
                    webhook_subscriptions.outerjoin(
                        api_keys, api_keys.c.id == webhook_subscriptions.c.owner_key_id
                    )
                )
                .where(webhook_subscriptions.c.enabled.is_(True), api_keys.c.revoked_at.is_(None))
            )
        ).all()
        wanted = [e for e in events if any(_wants(s, e) for s in subs)]
        if not wanted:
            return
        states = await self._states(conn, wanted)
        involved: set[str] = set()
        for before, after in states.values():
            involved |= after.involved_units | (before.involved_units if before else frozenset())
        ancestors = await self._ancestors(conn, involved) if any(s.unit_id for s in subs) else {}
        now = self.clock.now()
        rows: list[dict[str, Any]] = []
        for event in wanted:
            if event.event_id not in states:
                continue
            before, after = states[event.event_id]
            reach: set[str] = set()
            for unit in after.involved_units | (before.involved_units if before else frozenset()):
                reach |= ancestors.get(unit, {unit})
            body: str | None = None
            for sub in subs:
                if not _wants(sub, event) or (sub.unit_id is not None and sub.unit_id not in reach):
                    continue
                if body is None:
                    body = problem_event_body(event, after.id, after, self.calendar, self.tz)
                rows.append(
                    {
                        "id": delivery_id(sub.id, event.event_id),
                        "subscription_id": sub.id,
                        "kind": "event",
                        "event_type": event.type,
                        "event_id": event.event_id,
                        "position": event.position,
                        "problem_id": after.id,
                        "body": body,
                        "status": "pending",
                        "attempts": 0,
                        "round_start": 0,
                        "next_attempt_at": first_attempt_at(now, self.schedule, self.rng),
                        "created_at": now,
                    }
                )
        if rows:
            # One statement, many parameter sets (compiled once; a multi-row VALUES is not).
            insert: Any = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
            await conn.execute(insert(webhook_deliveries).on_conflict_do_nothing(index_elements=["id"]), rows)
        self.created += len(rows)

    async def _states(
        self, conn: AsyncConnection, wanted: list[RecordedEvent]
    ) -> dict[uuid.UUID, tuple[ProblemState | None, ProblemState]]:
        """The problem's state right before and right after each wanted event."""
        needed: dict[str, int] = {}
        for event in wanted:
            needed[event.stream_id] = max(needed.get(event.stream_id, 0), event.stream_version)
        ids = {e.event_id for e in wanted}
        result: dict[uuid.UUID, tuple[ProblemState | None, ProblemState]] = {}
        # A submission is a whole stream by itself; the others need their history.
        histories = {e.stream_id: [e] for e in wanted if e.stream_version == 1 and needed[e.stream_id] == 1}
        histories.update(await self.store.read_streams([s for s in needed if s not in histories], conn=conn))
        for stream, last in needed.items():
            problem_id = stream.removeprefix(PROBLEM_STREAM_PREFIX)
            history = histories[stream]
            state: ProblemState | None = None
            try:
                for recorded, fact in zip(history, facts_of(history), strict=True):
                    before = state
                    state = domain.initial(problem_id, fact) if state is None else domain.evolve(state, fact)
                    if recorded.event_id in ids:
                        result[recorded.event_id] = (before, state)
                    if recorded.stream_version >= last:
                        break
            except (KeyError, ValueError, TypeError):
                # One unreadable stream must not stop every notification behind it.
                log.exception("webhooks: cannot fold %s; its events are not delivered", stream)
        return result

    async def _ancestors(self, conn: AsyncConnection, unit_ids: set[str]) -> dict[str, set[str]]:
        """Each unit with the units above it (a filter on a team covers its groups)."""
        if not unit_ids:
            return {}
        rows = (
            await conn.execute(sa.select(units.c.id, units.c.path).where(units.c.id.in_(sorted(unit_ids))))
        ).all()
        return {r.id: set(r.path.split("/")) for r in rows}
