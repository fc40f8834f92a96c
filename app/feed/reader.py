"""Reading the global feed in a caller's scope.

Admins read every event (reference data, keys and problems; the stored hash of a key is left
out). Every other role reads the events of the problems it may see now (the same scope as
`GET /v1/problems`), nothing else. Each read looks at a bounded window of positions, so a caller
who sees few events never makes the database scan the whole log in one request, and
`last_position` moves past the events its scope filtered out: a poller never reads them again.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncConnection

from app.core.db import Database
from app.core.security import Caller, Role
from app.events import registry
from app.events.tables import RECORD_COLUMNS, event_positions, events
from app.projections.problem_view import problem_view, scope_filter

SCAN_WINDOW = 10_000  # positions looked at per read
PROBLEM_PREFIX = "problem-"
# Fields never shown in the feed, by event type.
WITHHELD = {"api_key.created": ("key_hash",)}


class FeedEvent(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "position": 1042,
                "event_id": "0b9f3c1e-7a51-4a55-8f2e-1d2c3b4a5f60",
                "stream_id": "problem-6f1c2a8e-3d1b-4c57-9a0e-2b7d4f1e9c30",
                "problem_id": "6f1c2a8e-3d1b-4c57-9a0e-2b7d4f1e9c30",
                "type": "problem.escalated",
                "version": 2,
                "schema_version": 1,
                "occurred_at": "2026-11-16T10:00:00+08:00",
                "recorded_at": "2026-11-16T10:00:00.120000+08:00",
                "data": {"from_tier": "local", "to_tier": "district", "reason": "需要区级协调"},
                "metadata": {"actor": "key_5e0c2b7f1a9d3e44", "role": "handler"},
            }
        }
    )

    position: int = Field(description="Global position: gap-free, strictly increasing.")
    event_id: UUID
    stream_id: str
    problem_id: str | None = Field(description="The problem, for `problem.*` events.")
    type: str
    version: int = Field(description="Position in its stream (1, 2, 3 …).")
    schema_version: int
    occurred_at: datetime = Field(description="Business time.")
    recorded_at: datetime = Field(description="Server time.")
    data: dict[str, Any]
    metadata: dict[str, Any]


class FeedPage(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "items": [FeedEvent.model_config["json_schema_extra"]["example"]],  # type: ignore[index]
                "last_position": 1042,
                "head": 1042,
            }
        }
    )

    items: list[FeedEvent]
    last_position: int = Field(
        description="Pass as `after` next time. It moves past events outside your scope too."
    )
    head: int = Field(description="The latest position in the feed now.")


@dataclass(frozen=True)
class TypeFilter:
    exact: tuple[str, ...] = ()
    prefixes: tuple[str, ...] = ()

    @classmethod
    def parse(cls, values: Sequence[str]) -> TypeFilter:
        exact = tuple(v for v in values if not v.endswith(".*"))
        prefixes = tuple(v[:-1] for v in values if v.endswith(".*"))
        return cls(exact, prefixes)

    def condition(self) -> sa.ColumnElement[bool] | None:
        parts: list[sa.ColumnElement[bool]] = []
        if self.exact:
            parts.append(event_positions.c.type.in_(self.exact))
        parts += [event_positions.c.type.startswith(p, autoescape=True) for p in self.prefixes]
        return sa.or_(*parts) if parts else None


async def head(conn: AsyncConnection) -> int:
    return int((await conn.execute(sa.select(sa.func.max(event_positions.c.position)))).scalar() or 0)


def _statement(
    caller: Caller, subtree: Collection[str], after: int, upper: int, limit: int, types: TypeFilter
) -> sa.Select[Any]:
    stmt = (
        sa.select(event_positions.c.position, *RECORD_COLUMNS)
        .select_from(event_positions.join(events, events.c.id == event_positions.c.event_row))
        .where(event_positions.c.position > after, event_positions.c.position <= upper)
        .order_by(event_positions.c.position)
        .limit(limit)
    )
    condition = types.condition()
    if condition is not None:
        stmt = stmt.where(condition)
    if caller.role is not Role.admin:
        problem_id = sa.func.substr(events.c.stream_id, len(PROBLEM_PREFIX) + 1)
        stmt = stmt.join(problem_view, problem_view.c.id == problem_id).where(
            events.c.stream_id.startswith(PROBLEM_PREFIX)
        )
        scope = scope_filter(caller, subtree)
        if scope is not None:
            stmt = stmt.where(scope)
    return stmt


def _event(row: Any, tz: Any) -> FeedEvent:
    _, data = registry.upcast(row.type, row.schema_version, row.data)
    for field in WITHHELD.get(row.type, ()):
        data.pop(field, None)
    stream = row.stream_id
    return FeedEvent(
        position=row.position,
        event_id=row.event_id,
        stream_id=stream,
        problem_id=stream[len(PROBLEM_PREFIX) :] if stream.startswith(PROBLEM_PREFIX) else None,
        type=row.type,
        version=row.stream_version,
        schema_version=row.schema_version,
        occurred_at=row.occurred_at.astimezone(tz),
        recorded_at=row.recorded_at.astimezone(tz),
        data=data,
        metadata=row.meta,
    )


async def read_feed(
    db: Database,
    caller: Caller,
    subtree: Collection[str],
    *,
    after: int,
    limit: int,
    types: TypeFilter,
    tz: Any,
) -> FeedPage:
    """Events after `after` in the caller's scope, at most `limit`, in position order."""
    async with db.read() as conn:
        latest = await head(conn)
        upper = min(latest, after + SCAN_WINDOW)
        if upper <= after:
            return FeedPage(items=[], last_position=after, head=latest)
        rows = (await conn.execute(_statement(caller, subtree, after, upper, limit, types))).all()
    last = rows[-1].position if len(rows) == limit else upper
    return FeedPage(items=[_event(r, tz) for r in rows], last_position=int(last), head=latest)
