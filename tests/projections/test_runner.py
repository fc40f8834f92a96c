"""Followers: checkpoint and output commit together; nothing is skipped or applied twice, even
across failures and with several runners of one follower."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from app.core.clock import ManualClock
from app.core.db import Database
from app.events import EventStore, NewEvent, RecordedEvent
from app.projections.runner import Runner
from tests.conftest import T0
from tests.events.test_store import positioned

OUT = sa.table("test_follower_out", sa.column("position"), sa.column("type"))


class Recorder:
    """Writes each event it handles into a table, so the output is transactional too."""

    name = "recorder"

    def __init__(self, types: Sequence[str] | None = None, fail_at: int | None = None) -> None:
        self.types = types
        self.fail_at = fail_at

    async def apply(self, conn: AsyncConnection, events: list[RecordedEvent]) -> None:
        for event in events:
            await conn.execute(sa.insert(OUT).values(position=event.position, type=event.type))
            if self.fail_at is not None and event.position == self.fail_at:
                raise RuntimeError("crash in the middle of a batch")


@pytest.fixture
async def store(database: Database) -> AsyncIterator[EventStore]:
    async with database.transaction() as conn:
        await conn.exec_driver_sql(
            "CREATE TABLE test_follower_out (position BIGINT PRIMARY KEY, type VARCHAR(100))"
        )
    yield EventStore(database, ManualClock(T0))
    async with database.transaction() as conn:
        await conn.exec_driver_sql("DROP TABLE test_follower_out")


async def written(db: Database) -> list[int]:
    async with db.read() as conn:
        return list((await conn.execute(sa.select(OUT.c.position).order_by(OUT.c.position))).scalars())


async def fill(store: EventStore, n: int) -> None:
    for i in range(n):
        await store.append(f"s-{i % 5}", i // 5, [NewEvent("t.even" if i % 2 == 0 else "t.odd", {"i": i})])
    await positioned(store)


async def test_every_event_once_in_order_across_batches(store: EventStore, database: Database) -> None:
    await fill(store, 20)
    runner = Runner(database, store, Recorder(), store.clock, batch=3)
    await runner.catch_up()
    assert await written(database) == list(range(1, 21))
    status = await runner.status()
    assert (status.checkpoint, status.lag_events) == (20, 0)
    await fill_more(store, 2)
    await runner.catch_up()
    assert await written(database) == list(range(1, 23))


async def fill_more(store: EventStore, n: int) -> None:
    for i in range(n):
        await store.append(f"more-{i}", 0, [NewEvent("t.odd", {})])
    await positioned(store)


async def test_a_type_filter_still_moves_the_checkpoint_to_the_head(
    store: EventStore, database: Database
) -> None:
    await fill(store, 10)
    runner = Runner(database, store, Recorder(types=["t.odd"]), store.clock, batch=50)
    await runner.catch_up()
    assert await written(database) == [2, 4, 6, 8, 10]
    assert (await runner.status()).checkpoint == 10


async def test_a_failure_mid_batch_writes_nothing_and_moves_nothing(
    store: EventStore, database: Database
) -> None:
    await fill(store, 10)
    failing = Runner(database, store, Recorder(fail_at=6), store.clock, batch=4)
    await failing.ensure_checkpoint()
    assert await failing.step() == 4
    with pytest.raises(RuntimeError):
        await failing.step()
    assert await written(database) == [1, 2, 3, 4], "the failed batch left nothing behind"
    assert (await failing.status()).checkpoint == 4
    healthy = Runner(database, store, Recorder(), store.clock, batch=4)
    await healthy.catch_up()
    assert await written(database) == list(range(1, 11)), "resumed after the last committed batch"


async def test_lag_is_reported(store: EventStore, database: Database) -> None:
    await fill(store, 5)
    runner = Runner(database, store, Recorder(), store.clock, batch=2)
    await runner.ensure_checkpoint()
    store.clock.advance(timedelta(seconds=30))  # type: ignore[attr-defined]
    status = await runner.status()
    assert (status.lag_events, status.lag_seconds) == (5, 30.0)


@pytest.mark.postgres_only
async def test_two_runners_of_one_follower_apply_each_event_once(
    store: EventStore, database: Database
) -> None:
    await fill(store, 60)
    runners = [Runner(database, store, Recorder(), store.clock, batch=5) for _ in range(3)]
    await runners[0].ensure_checkpoint()

    async def drive(runner: Runner) -> None:
        for _ in range(200):
            await runner.step()
            await asyncio.sleep(0)

    await asyncio.gather(*(drive(r) for r in runners))
    assert await written(database) == list(range(1, 61))
