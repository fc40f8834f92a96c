"""The event store: append with optimistic concurrency, read a stream, follow the global feed.

Appending is the hot path. On PostgreSQL an append is one autocommit statement: the event rows
and the caller's inline projection writes (`also`) travel as data-modifying CTEs of a single
INSERT, so the whole unit of work is one round trip and one commit, and writers never wait for
each other except on the same stream. On SQLite it is one `BEGIN IMMEDIATE` transaction.

Positions are assigned to committed events only (see `tables.py` and `sequence`), so a reader of
`read_all` never finds an event below a position it has already seen.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from types import SimpleNamespace
from typing import Any
from uuid import UUID, uuid4

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from app.core.clock import Clock
from app.core.db import Database, member_of
from app.core.errors import AppError, register
from app.core.metrics import CONCURRENCY_CONFLICTS, EVENTS_APPENDED, SEQUENCER_ASSIGNED
from app.events.registry import EventRegistry
from app.events.registry import registry as default_registry
from app.events.tables import RECORD_COLUMNS, event_positions, event_sequencer, events

register(
    "concurrency_conflict",
    409,
    "Concurrency conflict",
    "The stream changed since it was read (expected version mismatch).",
)
register(
    "event_id_reused",
    422,
    "Event id reused",
    "An event with this id exists with a different payload.",
)

STREAM_VERSION_CONSTRAINT = "uq_events_stream_id_stream_version"
EVENT_ID_CONSTRAINT = "uq_events_event_id"


class ConcurrencyConflict(AppError):
    def __init__(self, stream_id: str, expected: int, actual: int | None = None) -> None:
        super().__init__(
            "concurrency_conflict",
            f"stream {stream_id} is not at version {expected}"
            + (f" (it is at {actual})" if actual is not None else ""),
        )
        self.stream_id = stream_id
        self.expected = expected
        self.actual = actual


class EventIdConflict(AppError):
    def __init__(self, event_id: UUID) -> None:
        super().__init__("event_id_reused", f"event {event_id} exists with a different payload")
        self.event_id = event_id


@dataclass(frozen=True, slots=True)
class NewEvent:
    type: str
    data: dict[str, Any]
    event_id: UUID = field(default_factory=uuid4)
    metadata: dict[str, Any] = field(default_factory=dict)
    occurred_at: datetime | None = None
    schema_version: int | None = None


@dataclass(frozen=True, slots=True)
class Write:
    """An inline projection statement with named bind parameters, and their values for this
    append. Build the statement once and reuse it: SQLAlchemy memoises a statement object's cache
    key, so a reused statement (and the append statement composed of it) is compiled once per
    process instead of traversed and compiled for every command. Parameter names must be unique
    across one append's writes (prefix them)."""

    statement: sa.Executable
    params: Mapping[str, Any]


Also = sa.Executable | Write


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    stream_id: str
    stream_version: int
    event_id: UUID
    type: str
    schema_version: int
    data: dict[str, Any]
    metadata: dict[str, Any]
    occurred_at: datetime
    recorded_at: datetime
    position: int | None = None
    replayed: bool = False  # returned by an append that found it stored already (a retry)


def _normalise(data: dict[str, Any]) -> dict[str, Any]:
    """The data as it will read back from the database (JSON-native types only)."""
    loaded: dict[str, Any] = orjson.loads(orjson.dumps(data))
    return loaded


_SELECT_COLUMNS = (events.c.id, *RECORD_COLUMNS)

# The PostgreSQL append: one statement shape for any number of events (SQLAlchemy caches its
# compiled form; a multi-row VALUES would be compiled anew each time). Rows are inserted in
# ordinality order, so insertion ids follow stream versions. With an expected version above 0
# the first version is NULL unless the stream is exactly there: the NOT NULL violation aborts the
# statement, so a stale or invented expected version can neither overwrite nor leave a gap.
_APPEND_SQL = """
INSERT INTO events (event_id, stream_id, stream_version, type, schema_version, data, metadata,
                    occurred_at, recorded_at, tx_id)
SELECT e.event_id, CAST(:stream_id AS varchar), {first} + e.ord - 1, e.type, e.schema_version, e.data::jsonb,
       e.meta::jsonb, e.occurred_at, :recorded_at, pg_current_xact_id()
FROM unnest(CAST(:event_ids AS uuid[]), CAST(:types AS text[]), CAST(:schema_versions AS int[]),
            CAST(:datas AS text[]), CAST(:metas AS text[]), CAST(:occurred AS timestamptz[]))
     WITH ORDINALITY AS e(event_id, type, schema_version, data, meta, occurred_at, ord)
ORDER BY e.ord
"""
_APPEND_NEW = sa.text(_APPEND_SQL.format(first="1")).columns()
_APPEND_GUARDED = sa.text(
    _APPEND_SQL.format(
        first="(SELECT CAST(:expected AS integer) + 1 FROM events "
        "WHERE stream_id = CAST(:stream_id AS varchar) AND stream_version = CAST(:expected AS integer))"
    )
).columns()

# One stream in version order (commands load their aggregate with it: built once, so compiled once
# and run on the driver; see `Database.fetch`).
_READ_STREAM = (
    sa.select(
        events.c.stream_id,
        events.c.stream_version,
        events.c.event_id,
        events.c.type,
        events.c.schema_version,
        events.c.data,
        events.c.meta.label("meta"),
        events.c.occurred_at,
        events.c.recorded_at,
        event_positions.c.position,
    )
    .select_from(events.outerjoin(event_positions, event_positions.c.event_row == events.c.id))
    .where(
        events.c.stream_id == sa.bindparam("stream_id", type_=sa.String),
        events.c.stream_version > sa.bindparam("after_version", type_=sa.Integer),
    )
    .order_by(events.c.stream_version)
)

_SCAN_SQL = """
SELECT stream_id, stream_version, event_id, type, schema_version, data::text, {metadata}, occurred_at,
       recorded_at
FROM events
WHERE stream_id >= $1 AND stream_id LIKE $2 AND (stream_id, stream_version) > ($3, $4){before}{types}
ORDER BY stream_id, stream_version
LIMIT $5
"""

# The oldest transaction that may still write events here (an `xid8`): every event of an older
# one is committed or gone. The snapshot's in-progress ids, less those proven to belong to other
# databases of the cluster; without any, the snapshot's xmax.
HORIZON = """COALESCE(
        (SELECT min(x) FROM pg_snapshot_xip(pg_current_snapshot()) AS x
         WHERE xid(x) <> ALL (SELECT backend_xid FROM pg_stat_activity
                              WHERE backend_xid IS NOT NULL AND datname <> current_database())),
        pg_snapshot_xmax(pg_current_snapshot())
    )"""

_SEQUENCE_SQL = sa.text(
    """
WITH st AS (
    SELECT last_tx, last_row, last_position FROM event_sequencer WHERE id = 1
    FOR UPDATE SKIP LOCKED
), horizon AS (
    -- The oldest transaction that may still write here: the snapshot's in-progress ids, less
    -- those proven to belong to other databases of the cluster (an id stays with its database
    -- for its whole life, so that proof cannot go stale); without any, the snapshot's xmax.
    SELECT {HORIZON} AS xmin
), pending AS (
    SELECT e.id, e.tx_id, e.type FROM events e, st, horizon
    WHERE (e.tx_id, e.id) > (st.last_tx, st.last_row)
      AND e.tx_id < horizon.xmin
    ORDER BY e.tx_id, e.id
    LIMIT :batch
), numbered AS (
    SELECT p.id, p.tx_id, p.type,
           st.last_position + row_number() OVER (ORDER BY p.tx_id, p.id) AS position
    FROM pending p, st
), ins AS (
    INSERT INTO event_positions (position, event_row, type)
    SELECT position, id, type FROM numbered
), upd AS (
    UPDATE event_sequencer s SET last_tx = n.tx_id, last_row = n.id, last_position = n.position
    FROM (SELECT * FROM numbered ORDER BY position DESC LIMIT 1) n
    WHERE s.id = 1
)
SELECT count(*) AS assigned, max(position) AS last_position FROM numbered
""".replace("{HORIZON}", HORIZON)
)


def like_prefix(prefix: str) -> str:
    """A LIKE pattern (backslash escapes) of the ids that start with `prefix`."""
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


class EventStore:
    def __init__(self, db: Database, clock: Clock, registry: EventRegistry = default_registry) -> None:
        self.db = db
        self.clock = clock
        self.registry = registry
        self._appended = asyncio.Event()  # wakes the local sequencer
        self._positions_changed = asyncio.Event()  # wakes local followers
        # Composed append statements of `Write`-only shapes, by the identity of their parts (the
        # parts are kept in the value, so an id cannot be reused while its entry lives).
        self._composed: dict[tuple[int, ...], tuple[sa.Executable, tuple[sa.Executable, ...]]] = {}

    # -- writing -------------------------------------------------------------------------

    async def append(
        self,
        stream_id: str,
        expected_version: int,
        new_events: Sequence[NewEvent],
        *,
        also: Iterable[Also] = (),
    ) -> list[RecordedEvent]:
        """Append events to a stream that is at `expected_version` (0: the stream is new).

        `also` are further statements (inline projections) committed atomically with the events.
        Raises `ConcurrencyConflict` if the stream is not at `expected_version`; re-appending
        events whose ids are stored with the same stream, version, type and data returns the
        stored events; the same id with a different payload raises `EventIdConflict`.
        """
        if not new_events:
            raise ValueError("append needs at least one event")
        if expected_version < 0:
            raise ValueError("expected_version must be >= 0")
        recorded_at = self.clock.now()
        rows = [
            {
                "event_id": ev.event_id,
                "stream_id": stream_id,
                "stream_version": expected_version + i,
                "type": ev.type,
                "schema_version": ev.schema_version or self.registry.current_version(ev.type),
                "data": _normalise(ev.data),
                "meta": _normalise(ev.metadata),
                "occurred_at": ev.occurred_at or recorded_at,
                "recorded_at": recorded_at,
            }
            for i, ev in enumerate(new_events, start=1)
        ]
        try:
            if self.db.is_postgres:
                result = await self._append_postgres(stream_id, expected_version, rows, list(also))
            else:
                result = await self._append_sqlite(stream_id, expected_version, rows, list(also))
        except ConcurrencyConflict:
            CONCURRENCY_CONFLICTS.inc()
            raise
        self._appended.set()
        for row in rows:
            EVENTS_APPENDED.labels(row["type"]).inc()
        return result

    async def _append_postgres(
        self,
        stream_id: str,
        expected: int,
        rows: list[dict[str, Any]],
        also: list[Also],
    ) -> list[RecordedEvent]:
        params: dict[str, Any] = {
            "stream_id": stream_id,
            "expected": expected,
            "recorded_at": rows[0]["recorded_at"],
            "event_ids": [row["event_id"] for row in rows],
            "types": [row["type"] for row in rows],
            "schema_versions": [row["schema_version"] for row in rows],
            "datas": [orjson.dumps(row["data"]).decode() for row in rows],
            "metas": [orjson.dumps(row["meta"]).decode() for row in rows],
            "occurred": [row["occurred_at"] for row in rows],
        }
        insert = _APPEND_GUARDED if expected > 0 else _APPEND_NEW
        stmt: sa.Executable
        reusable = False
        if also:
            parts = tuple(a.statement if isinstance(a, Write) else a for a in also)
            for a in also:
                if isinstance(a, Write):
                    params.update(a.params)
            reusable = all(isinstance(a, Write) for a in also)
            key = (id(insert), *map(id, parts))
            cached = self._composed.get(key) if reusable else None
            if cached is None:
                ctes = [insert.cte("appended")]
                ctes += [s.cte(f"also_{i}") for i, s in enumerate(parts)]  # type: ignore[attr-defined]
                stmt = sa.select(sa.literal(1)).add_cte(*ctes)
                if reusable:
                    self._composed[key] = (stmt, parts)
            else:
                stmt = cached[0]
        else:
            stmt = insert
        try:
            if reusable or not also:
                await self.db.run(stmt, params)  # built once per shape: compiled once, on the driver
            else:  # composed for this append only (reference data): SQLAlchemy's own path
                async with self.db.autocommit() as conn:
                    await conn.execute(stmt, params)
        except sa.exc.IntegrityError as exc:
            # Which unique index a racing writer trips first (the events' or an inline
            # projection's) is up to PostgreSQL; what tells a race from a genuine violation is
            # whether the stream moved on. A conflicting writer has committed by the time we fail
            # (we waited for it), so its events are visible here.
            async with self.db.read() as conn:
                replay = await self._replayed(conn, stream_id, expected, rows)
                if replay is not None:
                    return replay
                actual = await self._version(conn, stream_id)
            if actual != expected or _is_append_conflict(exc):
                raise ConcurrencyConflict(stream_id, expected, actual) from None
            raise
        except sa.exc.DBAPIError as exc:
            # The append's statement was chosen as a deadlock's victim (its inline writes met a
            # background writer taking the same rows in the other order): nothing was written,
            # so it is a lost race like any other, and callers decide again.
            if getattr(exc.orig, "sqlstate", None) != DEADLOCK_DETECTED:
                raise
            raise ConcurrencyConflict(stream_id, expected) from None
        return [_recorded(row) for row in rows]

    async def _append_sqlite(
        self,
        stream_id: str,
        expected: int,
        rows: list[dict[str, Any]],
        also: list[Also],
    ) -> list[RecordedEvent]:
        async with self.db.transaction() as conn:
            replay = await self._replayed(conn, stream_id, expected, rows)
            if replay is not None:
                return replay
            actual = await self._version(conn, stream_id)
            if actual != expected:
                raise ConcurrencyConflict(stream_id, expected, actual)
            ids = (await conn.execute(sa.insert(events).values(rows).returning(events.c.id))).scalars().all()
            await conn.execute(
                sa.insert(event_positions),
                [
                    {"position": row_id, "event_row": row_id, "type": row["type"]}
                    for row_id, row in zip(ids, rows, strict=True)
                ],
            )
            for stmt in also:
                if isinstance(stmt, Write):
                    await conn.execute(stmt.statement, dict(stmt.params))
                else:
                    await conn.execute(stmt)
        self._positions_changed.set()
        return [_recorded(row, position) for row, position in zip(rows, ids, strict=True)]

    async def _replayed(
        self, conn: AsyncConnection, stream_id: str, expected: int, rows: list[dict[str, Any]]
    ) -> list[RecordedEvent] | None:
        """The stored events if `rows` were already appended (idempotent retry), else None."""
        ids = [row["event_id"] for row in rows]
        stored = {
            r.event_id: r
            for r in (await conn.execute(sa.select(*_SELECT_COLUMNS).where(events.c.event_id.in_(ids)))).all()
        }
        if not stored:
            return None
        replayed: list[RecordedEvent] = []
        for row in rows:
            old = stored.get(row["event_id"])
            same = (
                old is not None
                and old.stream_id == stream_id
                and old.stream_version == row["stream_version"]
                and old.type == row["type"]
                and old.data == row["data"]
            )
            if not same:
                raise EventIdConflict(row["event_id"])
            assert old is not None
            replayed.append(replace(self._from_row(old), replayed=True))
        return replayed

    async def _version(self, conn: AsyncConnection, stream_id: str) -> int:
        value = (
            await conn.execute(
                sa.select(sa.func.max(events.c.stream_version)).where(events.c.stream_id == stream_id)
            )
        ).scalar()
        return int(value or 0)

    # -- sequencing (PostgreSQL) ------------------------------------------------------------

    async def sequence(self, batch: int = 10_000, *, conn: AsyncConnection | None = None) -> int:
        """Give positions to the events of finished transactions; returns how many.

        Numbers events in (transaction id, insertion) order, taking only transactions below the
        horizon: the oldest transaction still in progress, ignoring those that
        `pg_stat_activity` shows to belong to other databases (they cannot write our events).
        Every transaction of this database with a smaller id has committed or aborted, so no
        event can later appear before the last one numbered. Concurrent callers skip (the
        sequencer row is locked with SKIP LOCKED), so this is safe to call from anywhere.
        `conn`: an autocommit connection of the caller's (a bulk load's, without the statement
        timeout).
        """
        if not self.db.is_postgres:
            return 0
        if conn is not None:
            assigned = int((await conn.execute(_SEQUENCE_SQL, {"batch": batch})).one().assigned)
        else:  # on the driver: the loop runs this after every few milliseconds of appends
            (row,) = await self.db.fetch(_SEQUENCE_SQL, {"batch": batch})
            assigned = int(row["assigned"])
        if assigned:
            SEQUENCER_ASSIGNED.inc(assigned)
            self._positions_changed.set()
        return assigned

    async def sequence_all(self) -> int:
        """Number every event committed so far (a restore, the command line); returns how many."""
        total = 0
        while assigned := await self.sequence():
            total += assigned
        return total

    async def wait_appended(self, seconds: float) -> bool:
        """Wait until this process appends (at most `seconds`); used by the sequencer loop.
        Returns whether an append woke it."""
        woken = False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._appended.wait(), seconds)
            woken = True
        self._appended.clear()
        return woken

    async def wait_for_positions(self, seconds: float) -> None:
        """Wait until this process sees new positions (at most `seconds`); used by followers."""
        event = self._positions_changed
        try:
            await asyncio.wait_for(event.wait(), seconds)
        except TimeoutError:
            return
        # Replace rather than clear, so that every waiter of this round wakes up.
        if self._positions_changed is event:
            self._positions_changed = asyncio.Event()

    # -- reading ---------------------------------------------------------------------------

    async def read_stream(
        self, stream_id: str, *, after_version: int = 0, conn: AsyncConnection | None = None
    ) -> list[RecordedEvent]:
        params = {"stream_id": stream_id, "after_version": after_version}
        rows: list[Mapping[str, Any]]
        if conn is not None:
            rows = [dict(r._mapping) for r in (await conn.execute(_READ_STREAM, params)).all()]
        else:
            rows = await self.db.fetch(_READ_STREAM, params)
        return [self._from_row(SimpleNamespace(**r), r["position"]) for r in rows]

    async def read_streams(
        self, stream_ids: Collection[str], *, conn: AsyncConnection | None = None
    ) -> dict[str, list[RecordedEvent]]:
        """Several streams, each in version order, in one query per 1,000 streams (followers and
        rebuilds that fold many aggregates per batch). Events carry their global position when
        they have one."""
        wanted = sorted(set(stream_ids))
        found: dict[str, list[RecordedEvent]] = {s: [] for s in wanted}
        for i in range(0, len(wanted), 1000):
            stmt = (
                sa.select(*_SELECT_COLUMNS, event_positions.c.position)
                .select_from(events.outerjoin(event_positions, event_positions.c.event_row == events.c.id))
                .where(member_of(self.db.backend, events.c.stream_id, wanted[i : i + 1000]))
                .order_by(events.c.stream_id, events.c.stream_version)
            )
            for r in await self._rows(stmt, conn):
                found[r.stream_id].append(self._from_row(r, r.position))
        return found

    async def read_all(
        self,
        after: int = 0,
        limit: int = 1000,
        *,
        types: Sequence[str] | None = None,
        until: int | None = None,
        conn: AsyncConnection | None = None,
    ) -> list[RecordedEvent]:
        """Events with a position above `after` (and at most `until`), in position order: the
        global feed."""
        stmt = (
            sa.select(*_SELECT_COLUMNS, event_positions.c.position)
            .select_from(event_positions.join(events, events.c.id == event_positions.c.event_row))
            .where(event_positions.c.position > after)
            .order_by(event_positions.c.position)
            .limit(limit)
        )
        if types:
            stmt = stmt.where(event_positions.c.type.in_(list(types)))
        if until is not None:
            stmt = stmt.where(event_positions.c.position <= until)
        if conn is not None:
            result = (await conn.execute(stmt)).all()
        else:
            async with self.db.read() as own:
                result = (await own.execute(stmt)).all()
        return [self._from_row(r, r.position) for r in result]

    async def read_by_type(
        self, types: Sequence[str], after: int = 0, limit: int = 1000
    ) -> list[RecordedEvent]:
        return await self.read_all(after, limit, types=types)

    async def stream_versions(self, stream_ids: Sequence[str]) -> dict[str, int]:
        """The version of each of a few streams, in one query (0: no events yet)."""
        stmt = (
            sa.select(events.c.stream_id, sa.func.max(events.c.stream_version))
            .where(events.c.stream_id.in_(list(stream_ids)))
            .group_by(events.c.stream_id)
        )
        async with self.db.read() as conn:
            found = {row[0]: int(row[1]) for row in (await conn.execute(stmt)).all()}
        return {stream_id: found.get(stream_id, 0) for stream_id in stream_ids}

    async def scan_streams(
        self,
        prefix: str,
        *,
        after: tuple[str, int] | None = None,
        limit: int = 10_000,
        metadata: bool = True,
        conn: AsyncConnection | None = None,
        before: str | None = None,
        types: Sequence[str] | None = None,
    ) -> list[RecordedEvent]:
        """Events of the streams whose id starts with `prefix`, in (stream, version) order, after
        the event `after` (stream id, version) and, with `before`, of the streams whose id sorts
        before it: rebuilding read models stream by stream along the unique index (a range of
        streams per worker). A batch may end in the middle of a stream. `metadata=False` leaves
        the events' metadata empty, `types` leaves out the events of other types (read models
        that do not need them read faster)."""
        if self.db.is_postgres:
            return await self._scan_postgres(prefix, after, limit, metadata, conn, before, types)
        c = events.c
        stmt = (
            sa.select(*_SELECT_COLUMNS)
            .where(c.stream_id >= prefix, c.stream_id.startswith(prefix, autoescape=True))
            .order_by(c.stream_id, c.stream_version)
            .limit(limit)
        )
        if after is not None:
            stmt = stmt.where(sa.tuple_(c.stream_id, c.stream_version) > sa.tuple_(*after))
        if before is not None:
            stmt = stmt.where(c.stream_id < before)
        if types is not None:
            stmt = stmt.where(c.type.in_(list(types)))
        return [self._from_row(r) for r in await self._rows(stmt, conn)]

    async def _scan_postgres(
        self,
        prefix: str,
        after: tuple[str, int] | None,
        limit: int,
        metadata: bool,
        conn: AsyncConnection | None,
        before: str | None = None,
        types: Sequence[str] | None = None,
    ) -> list[RecordedEvent]:
        """The same on the driver directly: a rebuild reads every event once, and SQLAlchemy's
        per-row work would cost more than everything else it does with them."""
        pattern = like_prefix(prefix)
        args: list[Any] = [prefix, pattern, *(after or ("", 0)), limit]
        if before is not None:
            args.append(before)
        if types is not None:
            args.append(list(types))
        sql = _SCAN_SQL.format(
            metadata="metadata::text" if metadata else "'{}'",
            before="" if before is None else " AND stream_id < $6",
            types="" if types is None else f" AND type = ANY(${len(args)}::text[])",
        )
        async with contextlib.AsyncExitStack() as stack:
            if conn is None:
                conn = await stack.enter_async_context(self.db.read())
            driver: Any = (await conn.get_raw_connection()).driver_connection
            rows = await driver.fetch(sql, *args)
        current, loads = self.registry.current_version, orjson.loads
        out = []
        for r in rows:
            type_, version, data = r[3], r[4], loads(r[5])
            if version < current(type_):
                version, data = self.registry.upcast(type_, version, data)
            out.append(RecordedEvent(r[0], r[1], r[2], type_, version, data, loads(r[6]), r[7], r[8]))
        return out

    async def _rows(self, stmt: sa.Select[Any], conn: AsyncConnection | None) -> Sequence[sa.Row[Any]]:
        rows: Sequence[sa.Row[Any]]
        if conn is not None:
            rows = (await conn.execute(stmt)).all()
            return rows
        async with self.db.read() as own:
            rows = (await own.execute(stmt)).all()
        return rows

    async def last_position(self, conn: AsyncConnection | None = None) -> int:
        stmt = sa.select(sa.func.max(event_positions.c.position))
        if conn is not None:
            return int((await conn.execute(stmt)).scalar() or 0)
        async with self.db.read() as own:
            return int((await own.execute(stmt)).scalar() or 0)

    async def unsequenced(self) -> int:
        """Committed events without a position yet (PostgreSQL; 0 on SQLite)."""
        if not self.db.is_postgres:
            return 0
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    sa.select(sa.func.count())
                    .select_from(events)
                    .join(event_sequencer, event_sequencer.c.id == 1)
                    .where(
                        sa.tuple_(events.c.tx_id, events.c.id)
                        > sa.tuple_(event_sequencer.c.last_tx, event_sequencer.c.last_row)
                    )
                )
            ).scalar()
        return int(row or 0)

    def _from_row(self, r: Any, position: int | None = None) -> RecordedEvent:
        version, data = self.registry.upcast(r.type, r.schema_version, r.data)
        return RecordedEvent(
            stream_id=r.stream_id,
            stream_version=r.stream_version,
            event_id=r.event_id,
            type=r.type,
            schema_version=version,
            data=data,
            metadata=r.meta,
            occurred_at=r.occurred_at,
            recorded_at=r.recorded_at,
            position=position,
        )


def _recorded(row: dict[str, Any], position: int | None = None) -> RecordedEvent:
    return RecordedEvent(
        stream_id=row["stream_id"],
        stream_version=row["stream_version"],
        event_id=row["event_id"],
        type=row["type"],
        schema_version=row["schema_version"],
        data=row["data"],
        metadata=row["meta"],
        occurred_at=row["occurred_at"],
        recorded_at=row["recorded_at"],
        position=position,
    )


DEADLOCK_DETECTED = "40P01"


def _is_append_conflict(exc: sa.exc.IntegrityError) -> bool:
    """Whether an IntegrityError means "stream moved on" or "event id exists"."""
    cause = getattr(exc.orig, "__cause__", None) or exc.orig
    constraint = getattr(cause, "constraint_name", None)
    column = getattr(cause, "column_name", None)
    table = getattr(cause, "table_name", None)
    if constraint in (STREAM_VERSION_CONSTRAINT, EVENT_ID_CONSTRAINT):
        return True
    return table == "events" and column == "stream_version"
