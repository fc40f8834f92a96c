"""Figures of the past, remembered per process while they cannot have changed.

A figure "as of T" (a closed period's rankings, a bulletin, `as_of` statistics) is a query over
the intervals in force at T. Intervals follow business time, so new events change them only from
their `occurred_at` on: an event recorded today changes nothing at a T before it. Only imported
history (events dated in the past) and rebuilds rewrite the past.

So the temporal model's follower notes, per UTC day, the last feed position of a batch whose
earliest event fell on that day (`problem_history_changes`; one upsert per batch, and a rebuild
or a bulk load marks every day). A figure as of T computed when the follower stood at position P
stays true as long as no day up to T's has a mark above P: checking that is one small query, so
repeated questions about the past (the wall board's rankings, reports) are answered from memory,
across processes and after any import, without ever being stale.

What one process computes, every process can use: each figure is also stored in
`settled_figures` (under a digest of the question, with the same position), so another replica or
a restarted server reads it instead of computing it again, under the same rule. And the closed
periods the command room asks about most (the last months, ten-day periods and quarters, for the
city and each district: what the rankings and the bulletins read) are computed by the background
work as soon as they close (`Rankings.prepare_closed`), not by the first person who asks.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from app.core.db import UTCDateTime, metadata, upsert
from app.events import RecordedEvent
from app.projections.runner import checkpoints

FOLLOWER = "problem_history"
EVERY_DAY = date(1, 1, 1)  # the mark of a rewrite of everything (rebuild, bulk load)

problem_history_changes = sa.Table(
    "problem_history_changes",
    metadata,
    sa.Column("day", sa.Date, primary_key=True, comment="UTC day of a batch's earliest business time"),
    sa.Column("position", sa.BigInteger, nullable=False, comment="The last such batch's feed position"),
)


settled_figures = sa.Table(
    "settled_figures",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True, comment="SHA-256 of the question"),
    sa.Column("position", sa.BigInteger, nullable=False, comment="The model's position when computed"),
    sa.Column("value", sa.JSON, nullable=False, comment="The figures, as the statistics store them"),
    sa.Column("computed_at", UTCDateTime, nullable=False, comment="When (rows are pruned after a while)"),
)
KEEP_STORED = timedelta(days=30)  # then a question nobody asked again is dropped (and recomputed if asked)


async def mark(conn: AsyncConnection, day: date, position: int) -> None:
    """Note that the temporal model changed from `day` on, at feed position `position`."""
    t = problem_history_changes
    row = {"day": day, "position": position}
    await conn.execute(upsert(conn.dialect.name, t, row, key=["day"], where=t.c.position < position))


class ChangeLog:
    """What the temporal model's writers note (`StreamProjection.changes`)."""

    async def batch(self, conn: AsyncConnection, events: Sequence[RecordedEvent]) -> None:
        """A follower's batch, in its transaction: changed from its earliest business time."""
        if events:
            earliest = min(e.occurred_at for e in events)
            await mark(conn, earliest.astimezone(UTC).date(), max(e.position or 0 for e in events))

    async def everything(self, conn: AsyncConnection, position: int) -> None:
        """A rebuild or a bulk load at the feed's head `position`: every day may have changed,
        after whatever was computed so far (so the mark lies past the head)."""
        await mark(conn, EVERY_DAY, position + 1)


class Settled:
    """A bounded memory of figures as of past instants, each with the follower's position when
    it was computed."""

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._entries: OrderedDict[Any, tuple[int, Any]] = OrderedDict()
        self.hits = 0

    @staticmethod
    async def position(conn: AsyncConnection) -> int:
        """Where the temporal model stands (read before computing a figure to remember): its
        follower's checkpoint, or the latest mark if later (a rebuild marks past the head; what
        was marked before the figure is computed is in it)."""
        checkpoint = sa.select(checkpoints.c.position).where(checkpoints.c.name == FOLLOWER).scalar_subquery()
        marked = sa.select(sa.func.max(problem_history_changes.c.position)).scalar_subquery()
        found = await conn.execute(sa.select(sa.func.coalesce(checkpoint, 0), sa.func.coalesce(marked, 0)))
        return max(int(v) for v in found.one())

    @staticmethod
    async def changed_since(conn: AsyncConnection, instant: datetime) -> int:
        """The last position at which the model changed at or before `instant`."""
        t = problem_history_changes.c
        found = await conn.execute(
            sa.select(sa.func.max(t.position)).where(t.day <= instant.astimezone(UTC).date())
        )
        return int(found.scalar() or 0)

    @staticmethod
    async def stored(conn: AsyncConnection, digest: str, changed: int) -> tuple[int, Any] | None:
        """What some process stored under `digest`, if still true (computed at or after the
        position `changed`): (position, value)."""
        t = settled_figures.c
        row = (await conn.execute(sa.select(t.position, t.value).where(t.key == digest))).one_or_none()
        if row is None or changed > row.position:
            return None
        return int(row.position), row.value

    @staticmethod
    async def store(conn: AsyncConnection, digest: str, position: int, value: Any, now: datetime) -> None:
        """Store a figure computed at `position` for every process (a later one is kept)."""
        t = settled_figures
        row = {"key": digest, "position": position, "value": value, "computed_at": now}
        await conn.execute(upsert(conn.dialect.name, t, row, key=["key"], where=t.c.position < position))

    @staticmethod
    async def prune(conn: AsyncConnection, now: datetime) -> int:
        """Drop the stored figures that can never be true again (computed before a rewrite of
        every day) and those computed more than `KEEP_STORED` ago; returns how many."""
        t, marks = settled_figures.c, problem_history_changes.c
        rewritten = sa.select(marks.position).where(marks.day == EVERY_DAY).scalar_subquery()
        stale = (t.position < sa.func.coalesce(rewritten, 0)) | (t.computed_at < now - KEEP_STORED)
        return int((await conn.execute(sa.delete(settled_figures).where(stale))).rowcount or 0)

    def get(self, key: Any, changed: int) -> Any | None:
        entry = self._entries.get(key)
        if entry is None or changed > entry[0]:
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry[1]

    def put(self, key: Any, position: int, value: Any) -> None:
        self._entries[key] = (position, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
