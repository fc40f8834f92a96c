"""Rebuilding a stream projection from the event log into fresh tables, then swapping them in.

The service keeps answering throughout:

1. **Build** `<table>__rebuild` tables beside the live ones, reading the log stream by stream
   along its unique index in large batches and writing with COPY (PostgreSQL) or executemany
   (SQLite). Reads and writes go on against the live tables meanwhile.
2. **Catch up** the streams that changed while building. A marker taken before each pass says
   which: on PostgreSQL the snapshot's xmin (every transaction whose events the pass may have
   missed has a transaction id at or above it: the same property the sequencer relies on); on
   SQLite the last insertion number. Changed streams are re-derived whole.
3. **Swap** in one short transaction: stop the writers of the live tables (inline projections:
   `LOCK TABLE … IN EXCLUSIVE MODE`, which still lets readers in and makes appends wait;
   followers: their advisory lock, and the checkpoint moves to the head), catch up the last
   streams, drop the live tables and rename the new ones (and their indexes) into place. On
   SQLite the indexes are created in that transaction instead (SQLite cannot rename an index).

Readers see the old tables until the swap commits and the new ones after; an append that
arrived during the swap waits for it and then writes into the new tables (PostgreSQL resolves
the table name again once it gets its lock).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from multiprocessing import get_context
from operator import itemgetter
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

from app.core.clock import Clock
from app.core.db import Database, metadata, run_ddl, upsert
from app.core.errors import AppError, register
from app.core.settings import Settings
from app.events import EventStore, RecordedEvent
from app.events.store import HORIZON, like_prefix
from app.events.tables import events
from app.projections.runner import checkpoints, lock_key
from app.projections.streams import StreamProjection, Summary, collect_rows, write_streams

register(
    "rebuild_running",
    409,
    "Rebuild running",
    "Another process is rebuilding this projection right now.",
)

SUFFIX = "__rebuild"
Progress = Callable[[int, int], None]  # (events done, events in total)


@dataclass(frozen=True)
class RebuildReport:
    name: str
    events: int  # events read and folded
    rows: int
    streams: int
    caught_up: int  # streams re-derived because they changed during the build
    build_seconds: float
    swap_seconds: float
    checkpoint: int | None  # followers: where the follower resumes
    # Seconds of the build's steps, in order (they add up to `build_seconds`).
    phases: Mapping[str, float] = field(default_factory=dict)
    # Events of the projection's streams of types it does not read (`StreamProjection.types`),
    # left out by the scan: counted when the build started.
    skipped: int = 0

    @property
    def events_per_second(self) -> float:
        """Events of the log rebuilt from (read, or left out by type) per second of the build."""
        return (self.events + self.skipped) / self.build_seconds if self.build_seconds > 0 else 0.0


def shadow_name(name: str) -> str:
    return f"{name}{SUFFIX}"


def shadow_tables(projection: StreamProjection) -> dict[str, sa.Table]:
    """Fresh tables shaped like the projection's (same columns, primary key and indexes under
    suffixed names), on a metadata of their own so that migrations never see them."""
    md = sa.MetaData()
    out: dict[str, sa.Table] = {}
    for table in projection.all_tables:
        if table.foreign_keys or any(
            isinstance(c, sa.UniqueConstraint) for c in table.constraints
        ):  # pragma: no cover - a projection table of ours has neither
            raise NotImplementedError(f"{table.name}: rebuild handles primary keys and indexes only")
        name = shadow_name(table.name)
        columns = [
            sa.Column(
                c.name,
                c.type,
                nullable=c.nullable,
                primary_key=c.primary_key,
                comment=c.comment,
                autoincrement=False,
            )
            for c in table.columns
        ]
        pk = [c.name for c in table.primary_key.columns]
        shadow = sa.Table(name, md, *columns, sa.PrimaryKeyConstraint(*pk, name=f"pk_{name}"))
        for index in table.indexes:
            assert index.name is not None
            sa.Index(
                f"{index.name}{SUFFIX}",
                *[shadow.c[c.name] for c in index.columns],
                unique=index.unique,
                **index.dialect_kwargs,
            )
        out[table.name] = shadow
    return out


PARALLEL_MIN_EVENTS = 200_000  # below this, starting worker processes costs more than it saves


class Rebuilder:
    def __init__(
        self,
        db: Database,
        store: EventStore,
        clock: Clock,
        *,
        batch: int = 20_000,
        settings: Settings | None = None,
        parallel_min: int = PARALLEL_MIN_EVENTS,
    ) -> None:
        self.db = db
        self.store = store
        self.clock = clock
        self.batch = batch
        self.settings = settings  # to start worker processes (they build their own services)
        self.parallel_min = parallel_min
        wanted = settings.rebuild_processes if settings is not None else 1
        self.processes = wanted or os.cpu_count() or 1

    async def rebuild(self, projection: StreamProjection, progress: Progress | None = None) -> RebuildReport:
        async with AsyncExitStack() as stack:
            if self.db.is_postgres:
                # One rebuild of a projection at a time (a session lock, held on its own connection).
                guard = await stack.enter_async_context(self.db.autocommit())
                key = _key(f"rebuild:{projection.name}")
                if not (await guard.execute(sa.select(sa.func.pg_try_advisory_lock(key)))).scalar():
                    raise AppError(
                        "rebuild_running", f"{projection.name} is being rebuilt by another process"
                    )
                stack.push_async_callback(guard.execute, sa.select(sa.func.pg_advisory_unlock(key)))
            shadows = shadow_tables(projection)
            await self._drop(shadows)
            try:
                return await self._rebuild(projection, shadows, progress)
            finally:
                await self._drop(shadows)

    async def _rebuild(
        self, projection: StreamProjection, shadows: Mapping[str, sa.Table], progress: Progress | None
    ) -> RebuildReport:
        started = time.perf_counter()
        phases: dict[str, float] = {}
        clock = _Stopwatch(phases)
        async with self.db.transaction() as conn:
            for shadow in shadows.values():
                await conn.execute(sa.schema.CreateTable(shadow))
                if self.db.is_postgres:  # comments are schema too (CREATE TABLE leaves them out)
                    for column in shadow.columns:
                        if column.comment:
                            await conn.execute(sa.schema.SetColumnComment(column))
                    # The key is built with the indexes, after the bulk load (`_index`).
                    await conn.exec_driver_sql(f"ALTER TABLE {shadow.name} DROP CONSTRAINT pk_{shadow.name}")
        async with self.db.read() as conn:
            marker = await self._marker(conn)
            in_streams, total = await self._count(conn, projection)
        clock.lap("prepare")
        if (
            self.settings is not None
            and self.processes > 1
            and self.db.is_postgres
            and total >= self.parallel_min
        ):
            built = await self._build_parallel(projection, total, progress)
        else:
            with _without_gc():
                built = await self._build(projection, shadows, total, progress)
        done, rows, streams = built.events, built.rows, built.streams
        clock.lap("fold")
        if projection.summary is not None:  # summed from the fresh rows; the catch-up keeps it
            async with self.db.transaction() as conn:
                summary = projection.summary
                rows += await summary.fill(conn, shadows[summary.table.name], built.totals)
            clock.lap("summary")
        if self.db.is_postgres:
            await self._index(shadows)
            clock.lap("indexes")
        caught_up = 0
        for _ in range(3):  # converge while writers keep going, before taking any lock
            async with self.db.read() as conn:
                next_marker = await self._marker(conn)
                changed = await self._changed(conn, projection, marker)
            marker = next_marker
            if not changed:
                break
            async with self.db.transaction() as conn:
                await self._refresh(conn, projection, changed, shadows)
            caught_up += len(changed)
        clock.lap("catch-up")
        build_seconds = time.perf_counter() - started
        swap_started = time.perf_counter()
        checkpoint = None
        async with self.db.transaction() as conn:
            checkpoint = await self._stop_writers(conn, projection)
            changed = await self._changed(conn, projection, marker)
            await self._refresh(conn, projection, changed, shadows)
            caught_up += len(changed)
            await self._swap(conn, projection, shadows)
            if projection.changes is not None:
                await projection.changes.everything(conn, checkpoint or await self.store.last_position(conn))
        return RebuildReport(
            name=projection.name,
            events=done,
            rows=rows,
            streams=streams,
            caught_up=caught_up,
            build_seconds=build_seconds,
            swap_seconds=time.perf_counter() - swap_started,
            checkpoint=checkpoint,
            phases=phases,
            skipped=in_streams - total,
        )

    # -- building ---------------------------------------------------------------------------

    async def _build(
        self,
        projection: StreamProjection,
        shadows: Mapping[str, sa.Table],
        total: int,
        progress: Progress | None,
        *,
        low: str | None = None,
        high: str | None = None,
    ) -> _Built:
        """Fold the projection's streams (those in [low, high) if given: a worker's range) into
        `shadows`, summing the summary's totals of the rows as they go."""
        done = rows = streams = 0
        summary, source = projection.summary, projection.tables[0].name
        totals: Any = None
        pending: list[RecordedEvent] = []  # the events of a stream cut by the batch boundary

        def scan(after: tuple[str, int] | None) -> asyncio.Task[list[RecordedEvent]]:
            return asyncio.create_task(
                self.store.scan_streams(
                    projection.prefix,
                    after=after,
                    limit=self.batch,
                    metadata=projection.metadata,
                    before=high,
                    types=projection.types,
                )
            )

        # The database reads the next batch and writes the previous one while this process folds
        # the current one.
        reading = scan((low, 0) if low is not None else None)
        writing: asyncio.Task[int] | None = None
        async with _Writer(self.db, shadows) as writer, _cancelling(lambda: (reading, writing)):
            while True:
                batch = await reading
                full = len(batch) == self.batch
                if full:
                    reading = scan((batch[-1].stream_id, batch[-1].stream_version))
                complete, pending = _split_last(pending + batch) if full else (pending + batch, [])
                if not complete and not full:
                    break
                grouped = _group(complete)
                out = collect_rows(projection, grouped)
                if summary is not None:
                    totals = summary.add(totals, out[source])
                if writing is not None:
                    rows += await writing
                writing = asyncio.create_task(writer.write(out))
                streams += len(grouped)
                done += len(batch)
                if progress is not None:
                    progress(done, max(total, done))
                if not full:
                    break
            if writing is not None:
                rows += await writing
        return _Built(done, rows, streams, totals)

    async def _index(self, shadows: Mapping[str, sa.Table]) -> None:
        """The keys and indexes of the fresh tables (PostgreSQL): built after the bulk load, since
        sorting the rows once costs the server less than keeping an index through the COPY, two at
        a time, before the swap (no lock on the live tables). VACUUM then marks the pages
        all-visible (index-only scans from the first query), ANALYZE gives the planner its figures."""
        dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
        keys, indexes, constraints, vacuums = [], [], [], []
        for shadow in shadows.values():
            name, key = shadow.name, ", ".join(c.name for c in shadow.primary_key.columns)
            keys.append(f"CREATE UNIQUE INDEX pk_{name} ON {name} ({key})")
            indexes += [str(sa.schema.CreateIndex(i).compile(dialect=dialect)) for i in shadow.indexes]
            constraints.append(f"ALTER TABLE {name} ADD PRIMARY KEY USING INDEX pk_{name}")
            vacuums.append(f"VACUUM (ANALYZE) {name}")
        await run_ddl(self.db.dsn, keys + indexes)
        await run_ddl(self.db.dsn, constraints, connections=1)
        await run_ddl(self.db.dsn, vacuums)

    async def _count(self, conn: AsyncConnection, projection: StreamProjection) -> tuple[int, int]:
        """(events of the projection's streams, those of the types it reads)."""
        c = events.c
        read: sa.ColumnElement[int] = sa.func.count()
        if projection.types is not None:
            read = sa.func.count().filter(c.type.in_(projection.types))
        ours = c.stream_id.startswith(projection.prefix, autoescape=True)
        in_streams, of_types = (await conn.execute(sa.select(sa.func.count(), read).where(ours))).one()
        return int(in_streams), int(of_types)

    async def _build_parallel(
        self, projection: StreamProjection, total: int, progress: Progress | None
    ) -> _Built:
        """The same build in worker processes, each folding a range of streams (bounds from a
        sample of stream ids) into the same fresh tables: a stream lies in one range, so its
        rows are written once. Progress moves as ranges finish (four per process)."""
        assert self.settings is not None
        bounds = await self._bounds(projection.prefix, self.processes * 4, total)
        ranges = list(zip([None, *bounds], [*bounds, None], strict=True))
        loop = asyncio.get_running_loop()
        built = _Built(0, 0, 0, None)
        with ProcessPoolExecutor(self.processes, mp_context=get_context("spawn")) as pool:
            parts = [
                loop.run_in_executor(pool, build_range, self.settings, projection.name, low, high, self.batch)
                for low, high in ranges
            ]
            try:
                for finished in asyncio.as_completed(parts):
                    built = built.plus(await finished, projection.summary)
                    if progress is not None:
                        progress(built.events, max(total, built.events))
            except BaseException:
                for part in parts:
                    part.cancel()
                raise
        return built

    async def _bounds(self, prefix: str, parts: int, total: int) -> list[str]:
        """Stream ids that cut the prefix's streams into about `parts` ranges of equal size
        (quantiles of a sample of about 100,000 events)."""
        percent = min(100.0, 100.0 * 100_000 / max(total, 1))
        quantiles = [i / parts for i in range(1, parts)]
        pattern = like_prefix(prefix)
        async with self.db.read() as conn:
            found = await conn.execute(
                sa.text(
                    "SELECT percentile_disc(CAST(:q AS float8[])) WITHIN GROUP (ORDER BY stream_id) "
                    "FROM events TABLESAMPLE SYSTEM (:percent) WHERE stream_id LIKE :pattern"
                ),
                {"q": quantiles, "pattern": pattern, "percent": percent},
            )
            values = found.scalar() or []
        return sorted({v for v in values if v is not None})

    async def _refresh(
        self,
        conn: AsyncConnection,
        projection: StreamProjection,
        stream_ids: set[str],
        shadows: Mapping[str, sa.Table],
    ) -> None:
        if stream_ids:
            found = await self.store.read_streams(stream_ids, conn=conn)
            await write_streams(conn, projection, found, shadows)

    # -- markers ----------------------------------------------------------------------------

    async def _marker(self, conn: AsyncConnection) -> str:
        if self.db.is_postgres:
            # Not the snapshot's xmin: another database's long transaction must not make every
            # stream look changed.
            value = (await conn.exec_driver_sql(f"SELECT ({HORIZON})::text")).scalar_one()
        else:
            value = (
                await conn.execute(sa.select(sa.func.coalesce(sa.func.max(events.c.id), 0)))
            ).scalar_one()
        return str(value)

    async def _changed(self, conn: AsyncConnection, projection: StreamProjection, marker: str) -> set[str]:
        """Streams with events the pass that took `marker` may have missed."""
        since = (
            sa.text("events.tx_id >= CAST(:marker AS xid8)").bindparams(marker=marker)
            if self.db.is_postgres
            else events.c.id > int(marker)
        )
        stmt = (
            sa.select(events.c.stream_id)
            .distinct()
            .where(since, events.c.stream_id.startswith(projection.prefix, autoescape=True))
        )
        return set((await conn.execute(stmt)).scalars())

    # -- the swap ---------------------------------------------------------------------------

    async def _stop_writers(self, conn: AsyncConnection, projection: StreamProjection) -> int | None:
        """Make the live tables' writers wait until the swap commits. Followers: returns the head,
        where the follower resumes after the swap."""
        if self.db.is_postgres:
            if projection.follows:
                await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(lock_key(projection.name))))
            else:
                names = ", ".join(t.name for t in projection.all_tables)
                await conn.exec_driver_sql(f"LOCK TABLE {names} IN EXCLUSIVE MODE")
        if not projection.follows:
            return None
        head = await self.store.last_position(conn)
        await conn.execute(
            upsert(
                self.db.backend,
                checkpoints,
                {"name": projection.name, "position": head, "updated_at": self.clock.now()},
                key=["name"],
            )
        )
        return head

    async def _swap(
        self, conn: AsyncConnection, projection: StreamProjection, shadows: Mapping[str, sa.Table]
    ) -> None:
        for table in projection.all_tables:
            shadow = shadows[table.name]
            await conn.exec_driver_sql(f"DROP TABLE {table.name}")
            await conn.exec_driver_sql(f"ALTER TABLE {shadow.name} RENAME TO {table.name}")
            if self.db.is_postgres:
                await conn.exec_driver_sql(
                    f"ALTER TABLE {table.name} RENAME CONSTRAINT pk_{shadow.name} TO pk_{table.name}"
                )
                for index in table.indexes:
                    await conn.exec_driver_sql(f"ALTER INDEX {index.name}{SUFFIX} RENAME TO {index.name}")
            else:
                for index in table.indexes:
                    await conn.execute(sa.schema.CreateIndex(index))

    async def _drop(self, shadows: Mapping[str, sa.Table]) -> None:
        async with self.db.transaction() as conn:
            for shadow in shadows.values():
                await conn.exec_driver_sql(f"DROP TABLE IF EXISTS {shadow.name}")


@contextlib.asynccontextmanager
async def _cancelling(tasks: Callable[[], Iterable[asyncio.Task[Any] | None]]) -> AsyncIterator[None]:
    """If the build fails, stop its read and write in flight (and collect their outcome)."""
    try:
        yield
    except BaseException:
        for task in tasks():
            if task is not None and not task.done():
                task.cancel()
            if task is not None:
                with contextlib.suppress(BaseException):
                    await task
        raise


@dataclass(frozen=True)
class _Built:
    """What a build (or a worker's range of it) did: events read, rows written, streams, and the
    summary's totals of those rows (`Summary.add`)."""

    events: int
    rows: int
    streams: int
    totals: Any

    def plus(self, other: _Built, summary: Summary | None) -> _Built:
        totals = summary.merge(self.totals, other.totals) if summary is not None else None
        return _Built(
            self.events + other.events, self.rows + other.rows, self.streams + other.streams, totals
        )


class _Stopwatch:
    """Notes the seconds since the previous lap under a step's name."""

    def __init__(self, into: dict[str, float]) -> None:
        self.into = into
        self.last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.into[name] = now - self.last
        self.last = now


@contextlib.contextmanager
def _without_gc() -> Iterator[None]:
    """The bulk build allocates millions of short-lived objects that reference counting frees;
    the cyclic collector would only scan them over and over (40% of the build's CPU time)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _split_last(batch: list[RecordedEvent]) -> tuple[list[RecordedEvent], list[RecordedEvent]]:
    """(events of the complete streams, events of the last stream, which may go on)."""
    last = batch[-1].stream_id
    cut = len(batch)
    while cut > 0 and batch[cut - 1].stream_id == last:
        cut -= 1
    return batch[:cut], batch[cut:]


def _group(batch: Sequence[RecordedEvent]) -> list[tuple[str, list[RecordedEvent]]]:
    grouped: list[tuple[str, list[RecordedEvent]]] = []
    for event in batch:
        if grouped and grouped[-1][0] == event.stream_id:
            grouped[-1][1].append(event)
        else:
            grouped.append((event.stream_id, [event]))
    return grouped


def _key(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def build_range(settings: Settings, name: str, low: str | None, high: str | None, batch: int) -> _Built:
    """A worker process's part of a parallel build: fold the streams in [low, high) of the
    projection `name` into its fresh tables."""
    return asyncio.run(_build_range(settings, name, low, high, batch))


async def _build_range(
    settings: Settings, name: str, low: str | None, high: str | None, batch: int
) -> _Built:
    from app.core.clock import SystemClock
    from app.main import Services  # the worker's own services: the projection and its store

    services = Services(settings.model_copy(update={"background": False}), SystemClock())
    try:
        projection = services.projections.get(name)
        rebuilder = Rebuilder(services.db, services.store, services.clock, batch=batch)
        with _without_gc():
            return await rebuilder._build(projection, shadow_tables(projection), 0, None, low=low, high=high)
    finally:
        await services.db.dispose()


class _Writer:
    """Bulk writes into the fresh tables: COPY on PostgreSQL (one autocommit connection: a half
    built table is dropped anyway if the rebuild fails), executemany on SQLite."""

    def __init__(self, db: Database, shadows: Mapping[str, sa.Table]) -> None:
        self.db = db
        self.shadows = shadows
        self._stack = AsyncExitStack()
        self._raw: Any = None
        self._columns = {name: [c.name for c in t.columns] for name, t in shadows.items()}
        # SQLAlchemy stores a JSON column's None as JSON null, not SQL NULL: so does COPY.
        self._json = {
            name: [i for i, c in enumerate(t.columns) if isinstance(c.type, sa.JSON)]
            for name, t in shadows.items()
        }

    async def __aenter__(self) -> _Writer:
        if self.db.is_postgres:
            conn = await self._stack.enter_async_context(self.db.autocommit())
            self._raw = (await conn.get_raw_connection()).driver_connection
            # Timestamps as microseconds (asyncpg's own encoder takes ~2 µs a value, most of the
            # COPY's cost); the connection leaves the pool afterwards, codec and all.
            self._stack.push_async_callback(conn.invalidate)
            await self._raw.set_type_codec(
                "timestamptz",
                schema="pg_catalog",
                encoder=_pg_timestamptz,
                decoder=_from_pg_timestamptz,
                format="tuple",
            )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    async def write(self, batches: Mapping[str, list[dict[str, Any]]]) -> int:
        written = 0
        if self._raw is None:
            async with self.db.transaction() as conn:
                for name, rows in batches.items():
                    if rows:
                        await conn.execute(sa.insert(self.shadows[name]), rows)
                        written += len(rows)
            return written
        for name, rows in batches.items():
            if not rows:
                continue
            records = _records(rows, self._columns[name], self._json[name])
            await self._raw.copy_records_to_table(
                self.shadows[name].name, records=records, columns=self._columns[name]
            )
            written += len(rows)
        return written


_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


@lru_cache(maxsize=1 << 16)  # rows repeat their instants (a stream's submission, deadline, bounds)
def _pg_timestamptz(value: datetime) -> tuple[int]:
    """A timestamptz in PostgreSQL's binary form: microseconds since 2000-01-01 UTC."""
    return ((value - _PG_EPOCH) // _MICROSECOND,)


def _from_pg_timestamptz(value: tuple[int]) -> datetime:
    return _PG_EPOCH + timedelta(microseconds=value[0])


def _records(
    rows: Sequence[Mapping[str, Any]], columns: list[str], json_at: list[int]
) -> list[Sequence[Any]]:
    """The rows as COPY records: their values of `columns` (each row has every column), those at
    `json_at` as JSON text."""
    values = itemgetter(*columns) if len(columns) > 1 else lambda row: (row[columns[0]],)
    if not json_at:
        return [values(row) for row in rows]
    records: list[Sequence[Any]] = []
    for row in rows:
        record = list(values(row))
        for i in json_at:
            record[i] = orjson.dumps(record[i]).decode()
        records.append(record)
    return records


def copy_records(table_name: str, rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[Sequence[Any]]]:
    """(columns, records) for asyncpg's COPY of projection rows into a table of `metadata`."""
    table = metadata.tables[table_name]
    json_at = [i for i, c in enumerate(table.columns) if isinstance(c.type, sa.JSON)]
    columns = [c.name for c in table.columns]
    return columns, _records(rows, columns, json_at)
