"""The projections of this installation: which exist, how each is kept (inline or following the
feed), their runners, their status and lag, and their rebuilds. Packages register theirs at
wiring time (`app.main`); the CLI (`dispatchroom projections …`) and `/metrics` read it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from app.core.clock import Clock
from app.core.db import Database
from app.core.errors import AppError
from app.core.metrics import FOLLOWER_LAG_EVENTS, FOLLOWER_LAG_SECONDS
from app.events import EventStore
from app.projections.rebuild import Progress, Rebuilder, RebuildReport
from app.projections.runner import Runner, checkpoints, lock_key
from app.projections.streams import StreamFollower, StreamProjection

Worker = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


@dataclass(frozen=True)
class ProjectionStatus:
    name: str
    kind: str  # "inline" (written with the events) or "follower" (behind the feed, checkpointed)
    checkpoint: int
    head: int
    lag_events: int
    lag_seconds: float
    updated_at: datetime | None
    description: str = ""


class Projections:
    def __init__(self, db: Database, store: EventStore, clock: Clock, *, window_seconds: float = 0.0) -> None:
        self.db = db
        self.window = window_seconds
        self.store = store
        self.clock = clock
        self._projections: dict[str, StreamProjection] = {}
        self.runners: dict[str, Runner] = {}

    def add(self, projection: StreamProjection) -> None:
        if projection.name in self._projections:
            raise ValueError(f"projection {projection.name} is registered twice")
        self._projections[projection.name] = projection
        if projection.follows:
            follower = StreamFollower(projection, self.store)
            self.runners[projection.name] = Runner(
                self.db, self.store, follower, self.clock, window_seconds=self.window
            )

    @property
    def names(self) -> list[str]:
        return list(self._projections)

    def get(self, name: str) -> StreamProjection:
        try:
            return self._projections[name]
        except KeyError:
            known = ", ".join(self._projections)
            raise AppError("not_found", f"no projection {name!r} (known: {known})") from None

    def workers(self) -> list[Worker]:
        """The followers' loops, for `Services.workers`."""
        return [runner.run for runner in self.runners.values()]

    async def catch_up(self, seconds: float = 30.0) -> None:
        """Bring every follower to the head (tests, the CLI)."""
        for runner in self.runners.values():
            await runner.catch_up(seconds)

    async def rebuild(self, name: str, progress: Progress | None = None) -> RebuildReport:
        projection = self.get(name)
        await self._sequence()
        return await Rebuilder(self.db, self.store, self.clock).rebuild(projection, progress)

    async def recompute_summaries(self) -> None:
        """After a bulk load that wrote rows directly (`dispatchroom seed`): recompute every
        summary table from the table it sums, and note that everything may have changed. A
        follower's batch waits meanwhile."""
        for projection in self._projections.values():
            summary = projection.summary
            if summary is None:
                continue
            async with self.db.transaction() as conn:
                if self.db.is_postgres and projection.follows:
                    await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(lock_key(projection.name))))
                await conn.execute(sa.delete(summary.table))
                await summary.recompute(conn, projection.tables[0], summary.table)
                if projection.changes is not None:
                    await projection.changes.everything(conn, await self.store.last_position(conn))

    async def _sequence(self) -> None:
        """Give committed events their positions first (PostgreSQL; what the servers' sequencer
        loop does, safe from anywhere), so that head and lag mean the same with no server running."""
        for _ in range(1000):
            if not await self.store.sequence():
                return

    async def status(self) -> list[ProjectionStatus]:
        """Every projection, and every other follower with a checkpoint (webhook fan-out,
        automatic actions …): where it stands and how far behind the feed it is."""
        await self._sequence()
        async with self.db.read() as conn:
            head = await self.store.last_position(conn)
            rows = {r.name: r for r in (await conn.execute(sa.select(checkpoints))).all()}
        out: list[ProjectionStatus] = []
        for name, projection in self._projections.items():
            if not projection.follows:
                out.append(ProjectionStatus(name, "inline", head, head, 0, 0.0, None, projection.description))
        names = sorted({*rows, *self.runners})
        for name in names:
            row = rows.get(name)
            position = int(row.position) if row else 0
            lag_seconds = 0.0
            if head > position:
                oldest = await self.store.read_all(position, 1)
                if oldest:
                    lag_seconds = max(0.0, (self.clock.now() - oldest[0].recorded_at).total_seconds())
            FOLLOWER_LAG_EVENTS.labels(name).set(head - position)
            FOLLOWER_LAG_SECONDS.labels(name).set(lag_seconds)
            known = self._projections.get(name)
            out.append(
                ProjectionStatus(
                    name,
                    "follower",
                    position,
                    head,
                    head - position,
                    lag_seconds,
                    row.updated_at if row else None,
                    known.description if known else "",
                )
            )
        return out
