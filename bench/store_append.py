"""The append hot path at the store level, side by side with its references (same run, same
database, 8 clients):

- a raw asyncpg one-row INSERT in autocommit (the ceiling of any append);
- the same INSERT behind `LOCK TABLE … IN EXCLUSIVE MODE` (how a serialising event store — e.g.
  the `eventsourcing` library's PostgreSQL recorder — orders its writers);
- `EventStore.append` (one event, one autocommit statement);
- `EventStore.append` with an inline projection row in the same statement (what a command does).

The sequencer runs alongside, as in the server.
"""

from __future__ import annotations

import asyncio
import os
import uuid

import asyncpg
import sqlalchemy as sa

from app.core.clock import SystemClock
from app.core.db import Database
from app.directory.tables import categories
from app.events import EventStore, NewEvent
from app.migrate import upgrade
from bench.common import measure, scratch_database

CLIENTS = int(os.environ.get("BENCH_CLIENTS", "8"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "5"))


async def main() -> None:
    async with scratch_database() as (url, dsn):
        await upgrade(url)
        pool = await asyncpg.create_pool(dsn, min_size=CLIENTS, max_size=CLIENTS)
        await pool.execute(
            "CREATE TABLE raw_events (id bigserial PRIMARY KEY, stream text, version int, data jsonb,"
            " UNIQUE (stream, version))"
        )
        db = Database(url, pool_size=CLIENTS, max_overflow=0)
        store = EventStore(db, SystemClock())
        now = SystemClock().now()

        async def raw(c: int, i: int) -> None:
            await pool.execute(
                "INSERT INTO raw_events (stream, version, data) VALUES ($1, 1, $2)",
                uuid.uuid4().hex,
                '{"i": 1}',
            )

        async def locked(c: int, i: int) -> None:
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute("LOCK TABLE raw_events IN EXCLUSIVE MODE")
                await conn.execute(
                    "INSERT INTO raw_events (stream, version, data) VALUES ($1, 1, $2)",
                    uuid.uuid4().hex,
                    '{"i": 1}',
                )

        async def append(c: int, i: int) -> None:
            await store.append(f"s-{uuid.uuid4()}", 0, [NewEvent("bench.appended", {"c": c, "i": i})])

        async def append_with_row(c: int, i: int) -> None:
            code = "c" + uuid.uuid4().hex[:30]
            row = sa.insert(categories).values(
                code=code, name="x", description="", active=True, created_at=now, updated_at=now, version=1
            )
            await store.append(f"category-{code}", 0, [NewEvent("bench.appended", {"c": c})], also=[row])

        stop = asyncio.Event()

        async def sequencer() -> None:
            while not stop.is_set():
                if not await store.sequence():
                    await asyncio.sleep(0.01)

        seq = asyncio.create_task(sequencer())
        print(f"# {CLIENTS} clients, {SECONDS:.0f} s each")
        ceiling = await measure("raw asyncpg INSERT (ceiling)", CLIENTS, SECONDS, raw)
        print(ceiling.line())
        serial = await measure("LOCK TABLE + INSERT (serialised writers)", CLIENTS, SECONDS, locked)
        print(serial.line())
        ours = await measure("EventStore.append", CLIENTS, SECONDS, append)
        print(ours.line())
        inline = await measure("EventStore.append + inline projection row", CLIENTS, SECONDS, append_with_row)
        print(inline.line())
        stop.set()
        await seq
        print(f"append / ceiling            {ours.per_second / ceiling.per_second:5.2f}")
        print(f"append / serialised         {ours.per_second / serial.per_second:5.2f}")
        print(f"append+row / ceiling        {inline.per_second / ceiling.per_second:5.2f}")
        await db.dispose()
        await pool.close()


if __name__ == "__main__":
    asyncio.run(main())
