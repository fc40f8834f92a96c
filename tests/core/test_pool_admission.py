"""The connection pool's admission gate (`Database._connect`): more blocks in flight than the
pool holds wait in line instead of opening overflow connections that the pool would close again
on return; a block that already holds a connection may still take a second one (no deadlock)."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa

from app.core.db import Database


async def test_blocks_beyond_the_pool_wait_instead_of_opening_overflow(db_url: str) -> None:
    db = Database(db_url, pool_size=2, max_overflow=10)
    pool = db.engine.pool
    opened = 0

    @sa.event.listens_for(db.engine.sync_engine, "connect")
    def _count(*_: object) -> None:
        nonlocal opened
        opened += 1

    most = 0

    async def reader(i: int) -> int:
        nonlocal most
        async with db.read() as conn:
            most = max(most, pool.checkedout())  # type: ignore[attr-defined]
            await asyncio.sleep(0.01)
            return int((await conn.execute(sa.select(sa.literal(i)))).scalar_one())

    try:
        results = await asyncio.gather(*(reader(i) for i in range(24)))
        assert results == list(range(24))
        assert most == 2, f"{most} connections were checked out at once with a pool of 2"
        assert opened <= 2, f"{opened} connections were opened for a pool of 2"
    finally:
        await db.dispose()


async def test_a_block_that_holds_a_connection_may_take_another(db_url: str) -> None:
    # Every first connection is held by a block that then asks for a second one: with the
    # overflow this must finish, not wait on the gate forever.
    db = Database(db_url, pool_size=2, max_overflow=2)

    async def nested(i: int) -> int:
        async with db.read() as outer:
            await asyncio.sleep(0.01)  # let the other blocks take their first connection
            async with db.read() as inner:
                a = (await outer.execute(sa.select(sa.literal(i)))).scalar_one()
                b = (await inner.execute(sa.select(sa.literal(i)))).scalar_one()
                return int(a) + int(b)

    try:
        results = await asyncio.wait_for(asyncio.gather(*(nested(i) for i in range(8))), 20)
        assert results == [2 * i for i in range(8)]
    finally:
        await db.dispose()
