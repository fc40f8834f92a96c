"""No lost, duplicated or skipped events under concurrent writers (SPEC §4)."""

from __future__ import annotations

import asyncio
import random

import asyncpg
import pytest

from app.core.clock import SystemClock
from app.core.db import Database
from app.events import ConcurrencyConflict, EventStore, NewEvent
from tests.conftest import _asyncpg_dsn
from tests.events.test_store import positioned

WRITERS = 16
APPENDS_PER_WRITER = 40
STREAMS = 24


async def test_concurrent_writers_and_a_tailing_reader_see_every_event_once_in_order(
    database: Database,
) -> None:
    """16 writers append to 24 shared streams while a reader tails the global feed. The reader
    must see every committed event exactly once, with positions 1, 2, 3 … and no event ever
    appearing below a position it has already passed."""
    store = EventStore(database, SystemClock())
    committed: list[str] = []
    done = asyncio.Event()
    seen: list[tuple[int, str]] = []

    async def writer(w: int) -> None:
        rng = random.Random(w)
        for i in range(APPENDS_PER_WRITER):
            stream = f"s-{rng.randrange(STREAMS)}"
            marker = f"w{w}-{i}"
            while True:
                version = len(await store.read_stream(stream))
                try:
                    await store.append(stream, version, [NewEvent("t.append", {"marker": marker})])
                except ConcurrencyConflict:
                    await asyncio.sleep(rng.random() / 500)
                    continue
                committed.append(marker)
                break

    async def reader() -> None:
        after = 0
        while True:
            finished = done.is_set()
            await store.sequence()
            batch = await store.read_all(after, 50)
            for event in batch:
                assert event.position == after + 1, f"gap or reorder after {after}: {event.position}"
                after = event.position
                seen.append((event.position, event.data["marker"]))
            if finished and not batch and not await store.unsequenced():
                return
            if not batch:
                await asyncio.sleep(0.002)

    tail = asyncio.create_task(reader())
    try:
        await asyncio.gather(*(writer(w) for w in range(WRITERS)))
        done.set()
        await asyncio.wait_for(tail, 60)
    finally:
        tail.cancel()

    markers = [m for _, m in seen]
    assert len(committed) == WRITERS * APPENDS_PER_WRITER
    assert len(markers) == len(set(markers)), "an event was seen twice"
    assert sorted(markers) == sorted(committed), "an event was lost"
    assert [p for p, _ in seen] == list(range(1, len(seen) + 1))
    # Every stream's versions are gap-free too.
    total = 0
    for s in range(STREAMS):
        versions = [e.stream_version for e in await store.read_stream(f"s-{s}")]
        assert versions == list(range(1, len(versions) + 1))
        total += len(versions)
    assert total == len(committed)


async def test_same_version_appended_concurrently_succeeds_once(database: Database) -> None:
    store = EventStore(database, SystemClock())
    await store.append("hot", 0, [NewEvent("t.a", {})])
    results = await asyncio.gather(
        *(store.append("hot", 1, [NewEvent("t.b", {"i": i})]) for i in range(12)),
        return_exceptions=True,
    )
    wins = [r for r in results if not isinstance(r, BaseException)]
    losses = [r for r in results if isinstance(r, ConcurrencyConflict)]
    assert len(wins) == 1 and len(losses) == 11
    assert len(await store.read_stream("hot")) == 2


@pytest.mark.postgres_only
async def test_a_later_commit_waits_for_an_earlier_open_transaction(database: Database, db_url: str) -> None:
    """The scenario a plain sequence gets wrong: transaction A writes first but commits last. A
    reader must not be given B's event (a higher number) before A's is settled; once A commits,
    both appear, A's first."""
    store = EventStore(database, SystemClock())
    slow = await asyncpg.connect(_asyncpg_dsn(db_url))
    try:
        tx = slow.transaction()
        await tx.start()
        await slow.execute(
            "INSERT INTO events (event_id, stream_id, stream_version, type, schema_version, data, "
            "metadata, occurred_at, recorded_at, tx_id) VALUES (gen_random_uuid(), 'a', 1, 't.slow', 1, "
            "'{}', '{}', now(), now(), pg_current_xact_id())"
        )
        await store.append("b", 0, [NewEvent("t.fast", {})])
        await store.sequence()
        assert await store.read_all(0, 10) == [], "B was numbered while A could still commit below it"
        await tx.commit()
    finally:
        await slow.close()
    await positioned(store)
    feed = await store.read_all(0, 10)
    assert [(e.position, e.type) for e in feed] == [(1, "t.slow"), (2, "t.fast")]


@pytest.mark.postgres_only
async def test_a_rolled_back_transaction_leaves_no_gap(database: Database, db_url: str) -> None:
    store = EventStore(database, SystemClock())
    await store.append("a", 0, [NewEvent("t.a", {})])
    conn = await asyncpg.connect(_asyncpg_dsn(db_url))
    try:
        tx = conn.transaction()
        await tx.start()
        await conn.execute(
            "INSERT INTO events (event_id, stream_id, stream_version, type, schema_version, data, "
            "metadata, occurred_at, recorded_at, tx_id) VALUES (gen_random_uuid(), 'x', 1, 't.x', 1, "
            "'{}', '{}', now(), now(), pg_current_xact_id())"
        )
        await tx.rollback()
    finally:
        await conn.close()
    await store.append("b", 0, [NewEvent("t.b", {})])
    await positioned(store)
    assert [e.position for e in await store.read_all(0, 10)] == [1, 2]


@pytest.mark.postgres_only
async def test_a_transaction_in_another_database_does_not_hold_positions_back(
    database: Database, db_url: str
) -> None:
    """The sequencer waits for transactions that may write here, not for the whole cluster: a
    long writing transaction in another database of the same server does not delay positions."""
    store = EventStore(database, SystemClock())
    other = await asyncpg.connect(_asyncpg_dsn(db_url).rsplit("/", 1)[0] + "/postgres")
    try:
        tx = other.transaction()
        await tx.start()
        await other.execute("SELECT pg_current_xact_id()")  # holds a transaction id, like a long write
        await store.append("a", 0, [NewEvent("t.a", {})])
        assert await store.sequence() == 1
        assert [e.type for e in await store.read_all(0, 10)] == ["t.a"]
        await tx.rollback()
    finally:
        await other.close()
