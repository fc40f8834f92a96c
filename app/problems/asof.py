"""Problems as they were at a past instant (`as_of` on `GET /v1/problems` and `/{id}`).

Which problems match a filter at that instant is a range query on the temporal model
(`problem_history`); each problem shown is then its own stream folded up to the instant, so every
field is exactly what the problem view said then, and a single problem and a list agree. The
caller's scope is today's: a problem outside it does not exist, whenever it is asked about.
"""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from app.core.errors import AppError
from app.core.pagination import decode_cursor, encode_cursor
from app.core.security import Caller
from app.events import RecordedEvent
from app.problems import domain
from app.problems.projection import view_row
from app.problems.service import ProblemService, facts_of, stream_id
from app.projections.history import as_of_list_query
from app.projections.problem_view import ProblemFilter, scope_filter


def _row_at(problem_id: str, events: list[RecordedEvent], as_of: datetime) -> SimpleNamespace | None:
    state = domain.fold(problem_id, facts_of([e for e in events if e.occurred_at <= as_of]))
    return SimpleNamespace(**view_row(state)) if state is not None else None


async def get_as_of(service: ProblemService, caller: Caller, problem_id: str, as_of: datetime) -> Any:
    """The problem view row of `problem_id` as it stood at `as_of` (404 if it did not exist yet)."""
    await service.get_row(caller, problem_id)  # in scope?
    row = _row_at(problem_id, await service.store.read_stream(stream_id(problem_id)), as_of)
    if row is None:
        raise AppError("not_found", f"problem {problem_id} did not exist at {as_of.isoformat()}")
    return row


async def list_as_of(
    service: ProblemService,
    caller: Caller,
    flt: ProblemFilter,
    as_of: datetime,
    *,
    limit: int,
    cursor: str | None,
) -> tuple[list[Any], str | None]:
    actor = await service.actor(caller)
    key = decode_cursor(cursor, 2)
    after = None
    if key is not None:
        try:
            after = (datetime.fromisoformat(str(key[0])).astimezone(UTC), str(key[1]))
        except ValueError as exc:
            raise AppError("invalid_cursor", "the cursor is not one this service issued") from exc
    stmt = as_of_list_query(flt, scope_filter(caller, actor.subtree), as_of, after=after, limit=limit + 1)
    async with service.db.read() as conn:
        found = list((await conn.execute(stmt)).all())
    more = len(found) > limit
    found = found[:limit]
    streams = await service.store.read_streams([stream_id(r.problem_id) for r in found])
    rows = [_row_at(r.problem_id, streams[stream_id(r.problem_id)], as_of) for r in found]
    next_cursor = (
        encode_cursor([found[-1].submitted_at.isoformat(), found[-1].problem_id]) if more and found else None
    )
    return [r for r in rows if r is not None], next_cursor
