"""Followers: background consumers of the global event feed (projections that run behind,
webhook fan-out, automatic actions).

A follower stores its position (checkpoint) in the same transaction as its output, so a crash
never double-counts or skips: after a restart it resumes exactly after the last batch that
committed. Several processes may run the same follower; a transaction-level advisory lock
(PostgreSQL) or the single-writer lock (SQLite) lets exactly one of them take each batch. On
PostgreSQL the lock needs no transaction id, and the batch reads before it writes, so a follower
holds back the sequencer's xmin horizon only for the short write at the end of each batch.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from app.core.clock import Clock
from app.core.db import Database, UTCDateTime, metadata, upsert
from app.core.metrics import FOLLOWER_EVENTS, FOLLOWER_LAG_EVENTS, FOLLOWER_LAG_SECONDS
from app.events import EventStore, RecordedEvent

log = logging.getLogger(__name__)

checkpoints = sa.Table(
    "checkpoints",
    metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("position", sa.BigInteger, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)


class Follower(Protocol):
    """Something that consumes the feed in order. `types`: the event types it needs (None: all)."""

    name: str
    types: Sequence[str] | None

    async def apply(self, conn: AsyncConnection, events: list[RecordedEvent]) -> None:
        """Write the follower's output for `events` on `conn` (the checkpoint's transaction)."""
        ...


@dataclass(frozen=True)
class Status:
    name: str
    checkpoint: int
    head: int
    lag_events: int
    lag_seconds: float
    updated_at: datetime | None


def lock_key(name: str) -> int:
    """The advisory lock (PostgreSQL) that one process holds while it runs a batch of `name`."""
    return int.from_bytes(hashlib.sha256(f"follower:{name}".encode()).digest()[:8], "big", signed=True)


class Runner:
    """Runs one follower: `step()` processes one batch; `run()` loops until stopped."""

    def __init__(
        self,
        db: Database,
        store: EventStore,
        follower: Follower,
        clock: Clock,
        *,
        batch: int = 500,
        window_seconds: float = 0.0,
    ) -> None:
        self.db = db
        self.store = store
        self.follower = follower
        self.clock = clock
        self.batch = batch
        self.window = window_seconds
        self.lock_key = lock_key(follower.name)

    async def ensure_checkpoint(self) -> None:
        async with self.db.transaction() as conn:
            await conn.execute(
                upsert(
                    self.db.backend,
                    checkpoints,
                    {"name": self.follower.name, "position": 0, "updated_at": self.clock.now()},
                    key=["name"],
                    update=[],
                )
            )

    async def step(self) -> int:
        """Handle the next batch; returns how many events moved the checkpoint (0: caught up, or
        another process holds this follower right now)."""
        name = self.follower.name
        async with self.db.transaction() as conn:
            if self.db.is_postgres:
                got = (
                    await conn.execute(sa.select(sa.func.pg_try_advisory_xact_lock(self.lock_key)))
                ).scalar()
                if not got:
                    return 0
            position = (
                await conn.execute(sa.select(checkpoints.c.position).where(checkpoints.c.name == name))
            ).scalar()
            if position is None:
                raise RuntimeError(f"follower {name} has no checkpoint; call ensure_checkpoint()")
            head = await self.store.last_position(conn)
            if head <= position:
                return 0
            events = await self.store.read_all(
                position, self.batch, types=self.follower.types, until=head, conn=conn
            )
            # A full batch ends at its last event; a short one has seen everything up to `head`
            # (the events of other types in between need no work).
            new_position = events[-1].position if len(events) == self.batch else head
            assert new_position is not None
            if events:
                await self.follower.apply(conn, events)
            await conn.execute(
                sa.update(checkpoints)
                .where(checkpoints.c.name == name)
                .values(position=new_position, updated_at=self.clock.now())
            )
        FOLLOWER_EVENTS.labels(name).inc(len(events))
        committed = getattr(self.follower, "committed", None)
        if events and committed is not None:
            committed()  # optional hook: the batch's output is visible now
        return int(new_position - position)

    async def run(self, stop: asyncio.Event, poll_seconds: float = 0.2) -> None:
        last_status = 0.0
        ready = False
        while not stop.is_set():
            try:
                if not ready:  # inside the loop: a database that is down at start-up is waited for
                    await self.ensure_checkpoint()
                    ready = True
                moved = await self.step()
                if time.monotonic() - last_status > 5:
                    await self.status()  # refreshes the lag metrics
                    last_status = time.monotonic()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("follower %s failed; retrying", self.follower.name)
                await asyncio.sleep(1)
                continue
            if moved < self.batch:  # caught up: wait for news, then gather a window's worth
                await self.store.wait_for_positions(poll_seconds)
                if self.window:
                    await asyncio.sleep(self.window)

    async def status(self) -> Status:
        name = self.follower.name
        async with self.db.read() as conn:
            row = (await conn.execute(sa.select(checkpoints).where(checkpoints.c.name == name))).first()
            head = await self.store.last_position(conn)
            checkpoint = int(row.position) if row else 0
            oldest = await self.store.read_all(checkpoint, 1, conn=conn) if head > checkpoint else []
        lag_seconds = 0.0
        if oldest:
            lag_seconds = max(0.0, (self.clock.now() - oldest[0].recorded_at).total_seconds())
        FOLLOWER_LAG_EVENTS.labels(name).set(head - checkpoint)
        FOLLOWER_LAG_SECONDS.labels(name).set(lag_seconds)
        return Status(name, checkpoint, head, head - checkpoint, lag_seconds, row.updated_at if row else None)

    async def catch_up(self, seconds: float = 30.0) -> None:
        """Step until the follower has reached the current head (tests, CLI, rebuilds)."""
        await self.ensure_checkpoint()
        deadline = time.monotonic() + seconds
        while True:
            await self.store.sequence()
            status = await self.status()
            if status.lag_events == 0 and await self.store.unsequenced() == 0:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"follower {self.follower.name} did not catch up")
            if not await self.step():
                await asyncio.sleep(0.01)
