"""The event log as a backup file: JSON lines, streamed both ways in constant memory.

The first line is a header (`format`, `format_version`, `exported_at`); then one line per event
in position order with every stored column a restore needs (`position`, `event_id`,
`stream_id`, `stream_version`, `type`, `schema_version` as stored (not upcast), `data`,
`metadata`, `occurred_at`, `recorded_at`); the last line is a trailer with the count and the
last position, so that a truncated file is refused instead of restored in part.

Import goes into an EMPTY database only, in one transaction (all or nothing). Positions come
out as they were: on SQLite the insertion number is the position, on PostgreSQL the sequencer
numbers one transaction's events in insertion order; the file's positions must therefore run
1, 2, 3 … (an export always does). Read models are not in the file: the caller rebuilds them
from the restored log (`dispatchroom events import` does).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol
from uuid import UUID

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from app.core.db import Database
from app.core.errors import AppError, register
from app.events.store import EventStore, RecordedEvent
from app.events.tables import RECORD_COLUMNS, event_positions, events

FORMAT = "dispatchroom-events"
FORMAT_VERSION = 1
BATCH = 500

register(
    "invalid_backup",
    422,
    "Invalid backup",
    "The event file cannot be imported: not an event export, truncated, out of order, or the "
    "database is not empty.",
)

_COLUMNS = (event_positions.c.position, *RECORD_COLUMNS)


def _instant(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


async def export_lines(db: Database, store: EventStore, *, batch: int = 5000) -> AsyncIterator[bytes]:
    """Every positioned event, as the lines of an export (each ends with a newline)."""
    await store.sequence_all()
    yield (
        orjson.dumps(
            {"format": FORMAT, "format_version": FORMAT_VERSION, "exported_at": _instant(datetime.now(UTC))}
        )
        + b"\n"
    )
    after, count = 0, 0
    while True:
        stmt = (
            sa.select(*_COLUMNS)
            .select_from(event_positions.join(events, events.c.id == event_positions.c.event_row))
            .where(event_positions.c.position > after)
            .order_by(event_positions.c.position)
            .limit(batch)
        )
        async with db.read() as conn:
            rows = (await conn.execute(stmt)).all()
        if not rows:
            break
        for r in rows:
            line = {
                "position": r.position,
                "event_id": str(r.event_id),
                "stream_id": r.stream_id,
                "stream_version": r.stream_version,
                "type": r.type,
                "schema_version": r.schema_version,
                "data": r.data,
                "metadata": r.meta,
                "occurred_at": _instant(r.occurred_at),
                "recorded_at": _instant(r.recorded_at),
            }
            yield orjson.dumps(line) + b"\n"
        count += len(rows)
        after = rows[-1].position
    yield orjson.dumps({"end": True, "events": count, "last_position": after}) + b"\n"


def _parse(lines: Iterable[bytes]) -> Iterable[tuple[int, dict[str, Any]]]:
    """(line number, object) for each line, the header checked and the trailer last."""
    number = 0
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            item = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise AppError("invalid_backup", f"line {number} is not JSON") from None
        if not isinstance(item, dict):
            raise AppError("invalid_backup", f"line {number} is not a JSON object")
        if number == 1:
            if item.get("format") != FORMAT or item.get("format_version") != FORMAT_VERSION:
                raise AppError("invalid_backup", f"not a {FORMAT} file of version {FORMAT_VERSION}")
            continue
        yield number, item
    if number == 0:
        raise AppError("invalid_backup", "the file is empty")


def _row(number: int, item: dict[str, Any]) -> dict[str, Any]:
    try:
        return {
            "event_id": UUID(item["event_id"]),
            "stream_id": str(item["stream_id"]),
            "stream_version": int(item["stream_version"]),
            "type": str(item["type"]),
            "schema_version": int(item["schema_version"]),
            "data": item["data"],
            "meta": item["metadata"],
            "occurred_at": datetime.fromisoformat(item["occurred_at"]),
            "recorded_at": datetime.fromisoformat(item["recorded_at"]),
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise AppError("invalid_backup", f"line {number}: {type(exc).__name__}: {exc}") from None


async def import_lines(db: Database, store: EventStore, lines: Iterable[bytes]) -> int:
    """Load an export into an empty database; returns the number of events. Refuses a database
    that has any event, a file out of order, and a file without its trailer (truncated)."""
    count = 0
    async with db.transaction() as conn:
        if (await conn.execute(sa.select(sa.func.count()).select_from(events))).scalar_one():
            raise AppError("invalid_backup", "the database is not empty: import into a new one")
        batch: list[dict[str, Any]] = []
        trailer: dict[str, Any] | None = None
        for number, item in _parse(lines):
            if trailer is not None:
                raise AppError("invalid_backup", f"line {number} follows the end of the export")
            if item.get("end") is True:
                trailer = item
                continue
            if item.get("position") != count + 1:
                raise AppError(
                    "invalid_backup", f"line {number}: position {item.get('position')}, expected {count + 1}"
                )
            batch.append(_row(number, item))
            count += 1
            if len(batch) == BATCH:
                await _insert(db, conn, batch)
                batch = []
        if batch:
            await _insert(db, conn, batch)
        if trailer is None or trailer.get("events") != count:
            raise AppError("invalid_backup", f"the file is truncated: {count} events and no matching trailer")
    await store.sequence_all()
    return count


async def _insert(db: Database, conn: Any, rows: list[dict[str, Any]]) -> None:
    if db.is_postgres:  # the sequencer numbers them after commit, in insertion order
        await conn.execute(sa.insert(events).values(tx_id=sa.func.pg_current_xact_id()), rows)
        return
    ids = (await conn.execute(sa.insert(events).values(rows).returning(events.c.id))).scalars().all()
    await conn.execute(
        sa.insert(event_positions),
        [{"position": i, "event_row": i, "type": r["type"]} for i, r in zip(ids, rows, strict=True)],
    )


class Replay(Protocol):
    """A read model that is not a stream projection, restored from the log event by event
    (reference data, keys, webhook subscriptions): each package states how its rows follow
    from its events."""

    @property
    def types(self) -> Collection[str]: ...

    async def apply(self, conn: AsyncConnection, event: RecordedEvent) -> None: ...


async def replay(db: Database, store: EventStore, replays: Sequence[Replay], *, batch: int = 5000) -> int:
    """Run every event of the log through the replays that take its type, in position order,
    a transaction per batch (into empty tables: a restore). Returns how many events applied."""
    by_type: dict[str, list[Replay]] = {}
    for r in replays:
        for name in r.types:
            by_type.setdefault(name, []).append(r)
    after, applied = 0, 0
    while True:
        page = await store.read_all(after, batch, types=sorted(by_type))
        if not page:
            return applied
        async with db.transaction() as conn:
            for event in page:
                for r in by_type[event.type]:
                    await r.apply(conn, event)
        applied += len(page)
        after = page[-1].position or after
