"""Admin overrides of the work calendar (local decisions: an extra holiday, an extra working
day), as events on the `calendar-overrides` stream with the `calendar_overrides` read model
written in the same append. Every process's `WorkCalendar` is reloaded when the stream moves
(see `app.directory.watch`).

An override changes how working days are counted from then on; deadlines already set stay as
they were recorded.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Any

import sqlalchemy as sa

from app.core.clock import Clock
from app.core.db import Database, upsert
from app.core.errors import AppError
from app.core.requestmeta import RequestMeta, event_metadata
from app.core.security import Caller
from app.directory.tables import calendar_overrides
from app.directory.watch import StreamWatch
from app.events import ConcurrencyConflict, EventStore, NewEvent, registry
from app.routing.calendar import WorkCalendar

CALENDAR_STREAM = "calendar-overrides"
OVERRIDE_SET = registry.register(
    "calendar.override_set", "An admin made a date a working day or a holiday, overriding the calendar."
)
OVERRIDE_REMOVED = registry.register(
    "calendar.override_removed", "An admin override of the calendar was removed."
)


Change = Callable[[Any | None], tuple[NewEvent, sa.Executable] | None]  # override row → change


def _previous(row: Any | None) -> dict[str, Any] | None:
    return {"working": row.working, "note": row.note} if row is not None else None


class CalendarOverrides:
    def __init__(
        self, db: Database, store: EventStore, calendar: WorkCalendar, watch: StreamWatch, clock: Clock
    ) -> None:
        self.db = db
        self.store = store
        self.calendar = calendar
        self.watch = watch
        self.clock = clock
        watch.watch(CALENDAR_STREAM, self._reload)

    async def _reload(self) -> int:
        # The version first: a change landing in between is then reloaded again next time.
        version = (await self.store.stream_versions([CALENDAR_STREAM]))[CALENDAR_STREAM]
        self.calendar.set_overrides({row.day: row.working for row in await self.list()})
        return version

    async def list(
        self, start: date | None = None, end: date | None = None, *, limit: int | None = None
    ) -> list[Any]:
        stmt = sa.select(calendar_overrides).order_by(calendar_overrides.c.day).limit(limit)
        if start is not None:
            stmt = stmt.where(calendar_overrides.c.day >= start)
        if end is not None:
            stmt = stmt.where(calendar_overrides.c.day <= end)
        async with self.db.read() as conn:
            return list((await conn.execute(stmt)).all())

    async def get(self, day: date) -> Any | None:
        async with self.db.read() as conn:
            stmt = sa.select(calendar_overrides).where(calendar_overrides.c.day == day)
            return (await conn.execute(stmt)).first()

    async def set(
        self, caller: Caller, day: date, working: bool, note: str, meta: RequestMeta | None = None
    ) -> Any:
        """Make `day` a working day (`working`) or a holiday; setting what is set changes nothing."""

        def change(previous: Any | None) -> tuple[NewEvent, sa.Executable] | None:
            if previous is not None and (previous.working, previous.note) == (working, note):
                return None
            data = {
                "date": day.isoformat(),
                "working": working,
                "note": note,
                "previous": _previous(previous),
            }
            row = {
                "day": day,
                "working": working,
                "note": note,
                "updated_at": self.clock.now(),
                "updated_by": caller.key_id,
            }
            write = upsert(self.db.backend, calendar_overrides, row, key=["day"])
            return NewEvent(OVERRIDE_SET, data, metadata=event_metadata(caller, meta)), write

        await self._change(day, change)
        return await self.get(day)

    async def remove(self, caller: Caller, day: date, meta: RequestMeta | None = None) -> None:
        def change(previous: Any | None) -> tuple[NewEvent, sa.Executable] | None:
            if previous is None:
                raise AppError("not_found", f"there is no override for {day.isoformat()}")
            data = {"date": day.isoformat(), "previous": _previous(previous)}
            write = sa.delete(calendar_overrides).where(calendar_overrides.c.day == day)
            return NewEvent(OVERRIDE_REMOVED, data, metadata=event_metadata(caller, meta)), write

        await self._change(day, change)

    async def _change(self, day: date, change: Change) -> None:
        for _attempt in range(5):
            version = (await self.store.stream_versions([CALENDAR_STREAM]))[CALENDAR_STREAM]
            decided = change(await self.get(day))
            if decided is None:
                return
            event, write = decided
            try:
                await self.store.append(CALENDAR_STREAM, version, [event], also=[write])
            except ConcurrencyConflict:
                continue
            self.watch.seen(CALENDAR_STREAM, await self._reload())
            return
        raise AppError("contention", "the calendar overrides kept changing; try again")
