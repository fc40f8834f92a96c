"""Read models whose rows are a pure function of each stream's events.

A `StreamProjection` names its tables, the column that holds the stream's key in each, and a
`rows(stream_id, events)` function. The same function serves every way the rows get written:

* inline, in the append statement (the problem view: the service writes `view_writes`, which
  give the same rows incrementally);
* following the feed (`StreamFollower`, run by the `Runner`): each batch re-derives the streams
  it touched, in the checkpoint's transaction;
* rebuilding from the log (`app.projections.rebuild`): every stream once, into fresh tables.

So a rebuilt table equals the incrementally built one row for row (`tests/projections`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from app.core.db import member_of
from app.events import EventStore, RecordedEvent

Rows = Mapping[str, list[dict[str, Any]]]
RowsFn = Callable[[str, Sequence[RecordedEvent]], Rows]


class ChangeLog(Protocol):
    """Where a follower notes what its batches may have changed (`app.projections.settled`)."""

    async def batch(self, conn: AsyncConnection, events: Sequence[RecordedEvent]) -> None: ...

    async def everything(self, conn: AsyncConnection, position: int) -> None: ...


class Summary(Protocol):
    """A table that sums a projection table's rows (not keyed by stream): kept in the same
    transaction as the rows it sums, summed anew by rebuilds (`app.projections.tallies`)."""

    table: sa.Table

    async def read(self, conn: AsyncConnection, source: sa.Table, keys: Sequence[str]) -> Any:
        """What the rows of these streams contribute now (before they are replaced)."""

    async def apply(
        self, conn: AsyncConnection, target: sa.Table, before: Any, new_rows: Sequence[Mapping[str, Any]]
    ) -> None:
        """Replace the contributions `before` by those of `new_rows` in `target`."""

    def add(self, totals: Any, rows: Sequence[Mapping[str, Any]]) -> Any:
        """Add what fresh rows of whole streams contribute to `totals` (None: nothing yet) and
        return them: a rebuild sums as it writes."""

    def merge(self, totals: Any, other: Any) -> Any:
        """The sum of two `add` results (ranges of streams built apart)."""

    async def fill(self, conn: AsyncConnection, target: sa.Table, totals: Any) -> int:
        """Write `totals` into the empty `target`; returns its rows."""

    async def recompute(self, conn: AsyncConnection, source: sa.Table, target: sa.Table) -> int:
        """Fill the empty `target` from all of `source` (after a bulk load that wrote rows directly)."""


@dataclass(frozen=True)
class StreamProjection:
    name: str
    prefix: str  # the streams it reads: ids starting with this
    tables: tuple[sa.Table, ...]
    keys: Mapping[str, str]  # table name → the column holding the stream's key
    rows: RowsFn
    follows: bool = False  # True: a follower with a checkpoint; False: written inline
    # The event types its rows depend on (None: all): a stream's rows are the same computed from
    # only these. Followers read the feed of these types, rebuilds scan only these.
    types: tuple[str, ...] | None = None
    metadata: bool = False  # whether `rows` reads the events' metadata
    description: str = ""
    summary: Summary | None = None  # a sum of `tables[0]`'s rows, kept with them
    changes: ChangeLog | None = None  # notes which business days each batch may have changed

    @property
    def all_tables(self) -> tuple[sa.Table, ...]:
        """Every table the projection writes (its keyed tables, then its summary)."""
        return self.tables + ((self.summary.table,) if self.summary else ())

    def key_of(self, stream_id: str) -> str:
        return stream_id[len(self.prefix) :]

    def owns(self, stream_id: str) -> bool:
        return stream_id.startswith(self.prefix)


async def write_streams(
    conn: AsyncConnection,
    projection: StreamProjection,
    streams: Mapping[str, Sequence[RecordedEvent]],
    tables: Mapping[str, sa.Table] | None = None,
    *,
    replace: bool = True,
) -> int:
    """Write the rows of `streams` into `tables` (default: the projection's own), replacing what
    those streams had there. Returns the number of rows written."""
    targets = tables or {t.name: t for t in projection.all_tables}
    keys = [projection.key_of(s) for s in streams]
    summary, source = projection.summary, projection.tables[0]
    before = await summary.read(conn, targets[source.name], keys) if summary and keys and replace else None
    if replace and keys:
        for table in projection.tables:
            target = targets[table.name]
            column = target.c[projection.keys[table.name]]
            for i in range(0, len(keys), 500):
                await conn.execute(
                    sa.delete(target).where(member_of(conn.dialect.name, column, keys[i : i + 500]))
                )
    batches = collect_rows(projection, streams.items())
    written = 0
    for table in projection.tables:
        rows = batches[table.name]
        if rows:
            await conn.execute(sa.insert(targets[table.name]), rows)
            written += len(rows)
    if summary and keys:
        await summary.apply(conn, targets[summary.table.name], before, batches[source.name])
    return written


def collect_rows(
    projection: StreamProjection, streams: Iterable[tuple[str, Sequence[RecordedEvent]]]
) -> dict[str, list[dict[str, Any]]]:
    batches: dict[str, list[dict[str, Any]]] = {t.name: [] for t in projection.tables}
    for stream_id, events in streams:
        if not events:
            continue
        for name, rows in projection.rows(stream_id, events).items():
            batches[name].extend(rows)
    return batches


class StreamFollower:
    """Keeps a stream projection up to date from the global feed (run it with a `Runner`): each
    batch re-derives the whole of every stream it touched, in the checkpoint's transaction.
    Re-deriving whole streams makes a batch idempotent and lets imported history (events whose
    `occurred_at` lies in the past) land where it belongs."""

    def __init__(self, projection: StreamProjection, store: EventStore) -> None:
        self.projection = projection
        self.store = store
        self.name = projection.name
        self.types: Sequence[str] | None = projection.types

    async def apply(self, conn: AsyncConnection, events: list[RecordedEvent]) -> None:
        await self.refresh(conn, {e.stream_id for e in events if self.projection.owns(e.stream_id)})
        if self.projection.changes is not None:
            await self.projection.changes.batch(conn, events)

    async def refresh(
        self,
        conn: AsyncConnection,
        stream_ids: Collection[str],
        tables: Mapping[str, sa.Table] | None = None,
    ) -> int:
        if not stream_ids:
            return 0
        streams = await self.store.read_streams(stream_ids, conn=conn)
        return await write_streams(conn, self.projection, streams, tables)
