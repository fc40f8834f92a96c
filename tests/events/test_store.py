"""The event store's contract, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import timedelta

import pytest
import sqlalchemy as sa

from app.core.clock import ManualClock
from app.core.db import Database
from app.events import ConcurrencyConflict, EventIdConflict, EventRegistry, EventStore, NewEvent
from app.events.tables import events
from tests.conftest import T0


@pytest.fixture
def store(database: Database) -> EventStore:
    return EventStore(database, ManualClock(T0))


async def positioned(store: EventStore, timeout: float = 30) -> None:
    """Give positions to everything committed (a no-op on SQLite). A writing transaction open in
    this database (another test's server, under xdist) holds numbering back while it is open, so
    one pass may leave events behind: wait, bounded, until none is left."""
    deadline = time.monotonic() + timeout
    while await store.sequence() or await store.unsequenced():
        assert time.monotonic() < deadline, "committed events stayed without a position"
        await asyncio.sleep(0.005)


async def test_append_and_read_a_stream(store: EventStore) -> None:
    written = await store.append(
        "s-1", 0, [NewEvent("t.a", {"n": 1, "text": "中文"}), NewEvent("t.b", {"n": 2})]
    )
    assert [e.stream_version for e in written] == [1, 2]
    more = await store.append("s-1", 2, [NewEvent("t.c", {"n": 3})])
    assert more[0].stream_version == 3
    read = await store.read_stream("s-1")
    assert [(e.stream_version, e.type, e.data) for e in read] == [
        (1, "t.a", {"n": 1, "text": "中文"}),
        (2, "t.b", {"n": 2}),
        (3, "t.c", {"n": 3}),
    ]
    assert all(e.recorded_at == T0 and e.occurred_at == T0 for e in read)
    assert await store.read_stream("nothing") == []


async def test_metadata_and_business_time_are_kept(store: EventStore) -> None:
    past = T0 - timedelta(days=30)
    await store.append(
        "s-1",
        0,
        [NewEvent("t.a", {}, metadata={"actor": "k1", "request_id": "r"}, occurred_at=past)],
    )
    (event,) = await store.read_stream("s-1")
    assert event.metadata == {"actor": "k1", "request_id": "r"}
    assert event.occurred_at == past
    assert event.recorded_at == T0


@pytest.mark.parametrize("expected", [0, 1, 3, 7])
async def test_a_wrong_expected_version_is_a_conflict_and_writes_nothing(
    store: EventStore, expected: int
) -> None:
    await store.append("s-1", 0, [NewEvent("t.a", {}), NewEvent("t.a", {})])
    with pytest.raises(ConcurrencyConflict) as info:
        await store.append("s-1", expected, [NewEvent("t.b", {})])
    assert info.value.actual == 2
    assert [e.type for e in await store.read_stream("s-1")] == ["t.a", "t.a"]


async def test_reappending_the_same_events_returns_the_originals(store: EventStore) -> None:
    first = [NewEvent("t.a", {"x": 1}), NewEvent("t.b", {"y": [1, 2]})]
    original = await store.append("s-1", 0, first)
    again = await store.append("s-1", 0, [NewEvent(e.type, e.data, event_id=e.event_id) for e in first])
    assert [e.event_id for e in again] == [e.event_id for e in original]
    assert [e.replayed for e in original] == [False, False] and [e.replayed for e in again] == [True, True]
    assert len(await store.read_stream("s-1")) == 2


async def test_an_event_id_with_another_payload_is_refused(store: EventStore) -> None:
    event = NewEvent("t.a", {"x": 1})
    await store.append("s-1", 0, [event])
    with pytest.raises(EventIdConflict):
        await store.append("s-1", 0, [NewEvent("t.a", {"x": 2}, event_id=event.event_id)])
    with pytest.raises(EventIdConflict):
        await store.append("s-2", 0, [NewEvent("t.a", {"x": 1}, event_id=event.event_id)])
    assert len(await store.read_stream("s-1")) == 1
    assert await store.read_stream("s-2") == []


async def test_the_global_feed_in_order_with_batches_and_types(store: EventStore) -> None:
    for i in range(5):
        await store.append(f"s-{i}", 0, [NewEvent("t.even" if i % 2 == 0 else "t.odd", {"i": i})])
    await positioned(store)
    feed = await store.read_all(0, 100)
    assert [e.position for e in feed] == [1, 2, 3, 4, 5]
    assert [e.data["i"] for e in feed] == [0, 1, 2, 3, 4]
    assert [e.position for e in await store.read_all(2, 2)] == [3, 4]
    assert [e.data["i"] for e in await store.read_by_type(["t.odd"])] == [1, 3]
    assert await store.last_position() == 5


async def test_inline_statements_commit_with_the_events_or_not_at_all(
    store: EventStore, database: Database
) -> None:
    table = sa.table(
        "categories",
        sa.column("code"),
        sa.column("name"),
        sa.column("description"),
        sa.column("active"),
        sa.column("created_at"),
        sa.column("updated_at"),
        sa.column("version"),
    )
    row = {
        "code": "x1",
        "name": "X",
        "description": "",
        "active": True,
        "created_at": T0,
        "updated_at": T0,
        "version": 1,
    }
    from app.directory.tables import categories

    await store.append("c-1", 0, [NewEvent("t.a", {})], also=[sa.insert(categories).values(row)])
    # The second append fails on the category's primary key: the event must not be written.
    with pytest.raises(sa.exc.IntegrityError):
        await store.append("c-2", 0, [NewEvent("t.a", {})], also=[sa.insert(categories).values(row)])
    assert await store.read_stream("c-2") == []
    async with database.read() as conn:
        assert (await conn.execute(sa.select(sa.func.count()).select_from(categories))).scalar() == 1
    assert table is not None


async def test_events_cannot_be_updated_or_deleted(store: EventStore, database: Database) -> None:
    await store.append("s-1", 0, [NewEvent("t.a", {"x": 1})])
    for stmt in (sa.update(events).values(type="t.changed"), sa.delete(events)):
        with pytest.raises(sa.exc.DBAPIError, match="append-only"):
            async with database.transaction() as conn:
                await conn.execute(stmt)
    (event,) = await store.read_stream("s-1")
    assert event.type == "t.a"


async def test_old_schemas_are_upcast_on_read(database: Database) -> None:
    registry = EventRegistry()
    registry.register("thing.renamed", "v2 renamed `name` to `title`", version=2)

    @registry.upcaster("thing.renamed", 1)
    def _v1_to_v2(data: dict[str, object]) -> dict[str, object]:
        data["title"] = data.pop("name")
        return data

    store = EventStore(database, ManualClock(T0), registry)
    await store.append("s-1", 0, [NewEvent("thing.renamed", {"name": "old"}, schema_version=1)])
    await store.append("s-1", 1, [NewEvent("thing.renamed", {"title": "new"})])
    read = await store.read_stream("s-1")
    assert [(e.schema_version, e.data) for e in read] == [
        (2, {"title": "old"}),
        (2, {"title": "new"}),
    ]


async def test_event_ids_are_unique_uuids(store: EventStore) -> None:
    written = await store.append("s-1", 0, [NewEvent("t.a", {}) for _ in range(3)])
    ids = {e.event_id for e in written}
    assert len(ids) == 3 and all(isinstance(i, uuid.UUID) for i in ids)
