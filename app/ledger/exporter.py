"""Exporting problems as a ledger: the import's columns, Chinese titles, a batch at a time.

The dates come from each problem's events (first and second escalation, the last assignment,
acceptance, resolution and feedback), the rest from the problem view, so an exported ledger
imports into an empty database as the same problems (same ids: the 台账编号 is the problem id).
What a ledger cannot say (returns, extensions, deferrals, supervision notices) is not exported.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from app.core.db import Database
from app.core.security import Caller
from app.directory.tables import categories, units
from app.events.tables import events
from app.ledger.columns import COLUMNS, STATUS_TITLES, TIER_TITLES, URGENCY_TITLES
from app.problems import domain
from app.projections.problem_view import ProblemFilter, list_query, problem_view, scope_filter

BATCH = 500
PREFIX = "problem-"
_TYPES = (
    domain.ESCALATED,
    domain.ASSIGNED,
    domain.ACCEPTED,
    domain.RESOLVED,
    domain.FEEDBACK_RECEIVED,
    domain.WITHDRAWN,
    domain.CLOSED,
)


def header() -> list[str]:
    return [c.title for c in COLUMNS]


def _local(value: datetime | None, tz: Any) -> datetime | None:
    return value.astimezone(tz).replace(microsecond=0, tzinfo=None) if value is not None else None


async def ledger_rows(
    db: Database,
    caller: Caller,
    subtree: Collection[str],
    flt: ProblemFilter,
    *,
    now: datetime,
    tz: Any,
) -> AsyncIterator[list[Any]]:
    """One list of cells per problem in the caller's scope, oldest first; datetimes are naive
    city time (the ledger's convention)."""
    scope = scope_filter(caller, subtree)
    async with db.read() as conn:
        names = {r.id: r.name for r in (await conn.execute(sa.select(units.c.id, units.c.name))).all()}
        category_names = {
            r.code: r.name
            for r in (await conn.execute(sa.select(categories.c.code, categories.c.name))).all()
        }
    after: tuple[datetime, str] | None = None
    pv = problem_view.c
    while True:
        stmt = list_query(flt, scope, now, after=None, limit=BATCH).order_by(None)
        stmt = stmt.order_by(pv.submitted_at, pv.id)
        if after is not None:
            stmt = stmt.where(
                sa.or_(pv.submitted_at > after[0], sa.and_(pv.submitted_at == after[0], pv.id > after[1]))
            )
        async with db.read() as conn:
            rows = (await conn.execute(stmt)).all()
            if not rows:
                return
            history: dict[str, list[Any]] = {}
            found = await conn.execute(
                sa.select(events.c.stream_id, events.c.type, events.c.data, events.c.occurred_at)
                .where(events.c.stream_id.in_([PREFIX + r.id for r in rows]), events.c.type.in_(_TYPES))
                .order_by(events.c.stream_id, events.c.stream_version)
            )
            for e in found.all():
                history.setdefault(e.stream_id[len(PREFIX) :], []).append(e)
        for row in rows:
            yield _cells(row, history.get(row.id, []), names, category_names, tz)
        after = (rows[-1].submitted_at, rows[-1].id)


def _cells(
    row: Any, history: list[Any], names: dict[str, str], category_names: dict[str, str], tz: Any
) -> list[Any]:
    def last(kind: str) -> Any:
        return next((e for e in reversed(history) if e.type == kind), None)

    escalations = [e for e in history if e.type == domain.ESCALATED]
    assigned = last(domain.ASSIGNED) if row.tier != "local" and row.lead_unit_id else None
    accepted = last(domain.ACCEPTED)
    resolved = last(domain.RESOLVED)
    feedback = last(domain.FEEDBACK_RECEIVED)
    withdrawn = last(domain.WITHDRAWN) if row.status == "withdrawn" else None
    closed = row.closed_at if row.status == "closed" else None
    location = row.location or {}
    values = {
        "ledger_id": row.id,
        "enterprise_id": row.enterprise_id,
        "enterprise_name": row.enterprise_name,
        "category": category_names.get(row.category, row.category),
        "title": row.title,
        "description": row.description,
        "urgency": URGENCY_TITLES.get(row.urgency, row.urgency),
        "source": row.source,
        "reported_by": row.reported_by,
        "reporter_unit_id": names.get(row.reporter_unit_id, row.reporter_unit_id),
        "address": location.get("address"),
        "submitted_at": _local(row.submitted_at, tz),
        "escalated_at": _local(escalations[0].occurred_at, tz) if escalations else None,
        "escalated_again_at": _local(escalations[1].occurred_at, tz) if len(escalations) > 1 else None,
        "assigned_at": _local(assigned.occurred_at, tz) if assigned else None,
        "lead_unit_id": names.get(row.lead_unit_id, row.lead_unit_id) if assigned else None,
        "cooperating_unit_ids": "、".join(names.get(u, u) for u in row.cooperating_unit_ids or []) or None,
        "deadline": _local(row.deadline, tz) if assigned else None,
        "accepted_at": _local(accepted.occurred_at, tz) if accepted else None,
        "resolved_at": _local(resolved.occurred_at, tz) if resolved else None,
        "resolution": resolved.data.get("resolution") if resolved else None,
        "feedback_at": _local(feedback.occurred_at, tz) if feedback else None,
        "score": feedback.data.get("score") if feedback else None,
        "comment": feedback.data.get("comment") if feedback else None,
        "closed_at": _local(closed, tz),
        "withdrawn_at": _local(withdrawn.occurred_at, tz) if withdrawn else None,
        "withdraw_reason": withdrawn.data.get("reason") if withdrawn else None,
        "tier": TIER_TITLES.get(row.tier, row.tier),
        "status": STATUS_TITLES.get(row.status, row.status),
    }
    return [values[c.key] for c in COLUMNS]


def as_text(cells: list[Any]) -> list[str]:
    """Cells for CSV: datetimes as `YYYY-MM-DD HH:MM:SS` (city time)."""
    return ["" if v is None else v.isoformat(sep=" ") if isinstance(v, datetime) else str(v) for v in cells]
