"""Problems as Open311 service requests: the queries and the mapping of fields.

A request's `status` is `closed` when the problem is resolved, closed or withdrawn, else `open`
(SPEC §7). `agency_responsible` is the name of the unit that holds the problem now,
`expected_datetime` its deadline, `status_notes` what the latest event says about it. Readers
without a key that covers the problem (public reads) see the Open311 fields but not the
description, the enterprise, nor the free text of notes: only a fixed phrase per kind of event.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from app.core.security import Caller
from app.directory.tables import categories, units
from app.events import registry
from app.events.tables import event_positions, events
from app.projections.problem_view import problem_view, scope_filter

CLOSED_STATUSES = ("resolved", "closed", "withdrawn")
MAX_RESULTS = 1000
DEFAULT_SPAN = timedelta(days=90)
STREAM_PREFIX = "problem-"

_TIER = {"local": "服务组", "district": "区调度室", "city": "市总调度室"}

# Per event type: the phrase anyone may read, the data field with the free text (shown to
# readers whose key covers the problem), and mySociety's extended status after the event.
NOTES: dict[str, tuple[str, str | None, str]] = {
    "problem.submitted": ("已受理", None, "open"),
    "problem.accepted": ("承办单位已签收", "note", "in_progress"),
    "problem.escalated": ("已上交", "reason", "internal_referral"),
    "problem.assigned": ("已交办牵头单位", "note", "investigating"),
    "problem.return_requested": ("承办单位申请退回", "reason", "in_progress"),
    "problem.returned": ("已退回调度室重新交办", "reason", "open"),
    "problem.return_refused": ("退回申请未获同意", "note", "in_progress"),
    "problem.progress_reported": ("办理进展", "note", "in_progress"),
    "problem.extension_requested": ("申请延期", "reason", "in_progress"),
    "problem.extension_decided": ("延期申请已审批", "note", "in_progress"),
    "problem.deferred": ("暂缓办理，已制定分阶段计划", "explanation", "action_scheduled"),
    "problem.resumed": ("恢复办理", "note", "in_progress"),
    "problem.resolved": ("已办结", "resolution", "fixed"),
    "problem.feedback_received": ("已回访", "comment", "closed"),
    "problem.reopened": ("重新办理", "reason", "reopen"),
    "problem.supervised": ("已督办", "note", "in_progress"),
    "problem.reminded": ("已催办", None, "in_progress"),
    "problem.overdue": ("已超期", None, "in_progress"),
    "problem.withdrawn": ("已撤回", "reason", "cancelled"),
    "problem.closed": ("已销号", None, "closed"),
}
# The events a portal hears about as updates (reminders and overdue marks are internal).
UPDATE_TYPES = tuple(
    t for t in NOTES if t not in ("problem.submitted", "problem.reminded", "problem.overdue")
)


def open311_status(status: str) -> str:
    return "closed" if status in CLOSED_STATUSES else "open"


def note_text(event_type: str, data: dict[str, Any], *, full: bool) -> str:
    phrase, field, _ = NOTES.get(event_type, ("已更新", None, "open"))
    if event_type == "problem.escalated":
        phrase += _TIER.get(str(data.get("to_tier")), "")
    if event_type == "problem.feedback_received" and data.get("satisfied") is False:
        phrase = "已回访，企业不满意，重新办理"
    if event_type == "problem.extension_decided":
        phrase = "延期申请已批准" if data.get("approved") else "延期申请未获批准"
    text = data.get(field) if field and full else None
    return f"{phrase}：{text}" if text else phrase


def extended_status(event_type: str, data: dict[str, Any]) -> str:
    if event_type == "problem.feedback_received" and data.get("satisfied") is False:
        return "reopen"
    return NOTES.get(event_type, ("", None, "open"))[2]


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime


@dataclass(frozen=True)
class RequestQuery:
    ids: tuple[str, ...] = ()
    service_codes: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()
    window: Window | None = None
    page: int = 1
    page_size: int = MAX_RESULTS


def problem_id_of(column: Any) -> Any:
    """The problem id of a `problem-<id>` stream, as SQL."""
    return sa.func.substr(column, len(STREAM_PREFIX) + 1)


def _visible(caller: Caller | None, subtree: Collection[str], public: bool) -> tuple[Any, Any]:
    """(the WHERE condition of what the reader may list, the SQL flag of what it sees in full)."""
    scope = scope_filter(caller, subtree) if caller is not None else sa.false()
    full = sa.true() if scope is None else scope
    where = None if public or scope is None else scope
    return where, full


async def find_requests(
    conn: AsyncConnection,
    query: RequestQuery,
    *,
    caller: Caller | None,
    subtree: Collection[str],
    public: bool,
) -> list[Any]:
    pv = problem_view.c
    where, full = _visible(caller, subtree, public)
    stmt = (
        sa.select(
            problem_view,
            categories.c.name.label("service_name"),
            units.c.name.label("agency_responsible"),
            sa.case((full, sa.true()), else_=sa.false()).label("full"),
        )
        .select_from(
            problem_view.outerjoin(categories, categories.c.code == pv.category).outerjoin(
                units, units.c.id == pv.holder_unit_id
            )
        )
        .order_by(pv.submitted_at.desc(), pv.id.desc())
    )
    if where is not None:
        stmt = stmt.where(where)
    if query.ids:
        stmt = stmt.where(pv.id.in_(query.ids)).limit(MAX_RESULTS)
    else:
        if query.service_codes:
            stmt = stmt.where(pv.category.in_(query.service_codes))
        if query.statuses:
            wanted: list[str] = []
            for status in query.statuses:
                wanted += (
                    list(CLOSED_STATUSES)
                    if status == "closed"
                    else ["open", "assigned", "in_progress", "deferred"]
                )
            stmt = stmt.where(pv.status.in_(wanted))
        if query.window is not None:
            stmt = stmt.where(pv.submitted_at >= query.window.start, pv.submitted_at <= query.window.end)
        stmt = stmt.limit(query.page_size).offset((query.page - 1) * query.page_size)
    return list((await conn.execute(stmt)).all())


async def history(
    conn: AsyncConnection, rows: Sequence[Any], *, latest_only: bool
) -> dict[str, list[tuple[str, dict[str, Any], datetime]]]:
    """Per problem id: its events (type, data, occurred_at) in order, or only the latest one."""
    if not rows:
        return {}
    cols = (events.c.stream_id, events.c.type, events.c.schema_version, events.c.data, events.c.occurred_at)
    if latest_only:
        keys = [(STREAM_PREFIX + r.id, r.version) for r in rows]
        stmt = sa.select(*cols).where(sa.tuple_(events.c.stream_id, events.c.stream_version).in_(keys))
    else:
        stmt = (
            sa.select(*cols)
            .where(events.c.stream_id.in_([STREAM_PREFIX + r.id for r in rows]))
            .order_by(events.c.stream_id, events.c.stream_version)
        )
    out: dict[str, list[tuple[str, dict[str, Any], datetime]]] = {}
    for e in (await conn.execute(stmt)).all():
        _, data = registry.upcast(e.type, e.schema_version, e.data)
        out.setdefault(e.stream_id[len(STREAM_PREFIX) :], []).append((e.type, data, e.occurred_at))
    return out


def when(value: datetime | None, tz: Any) -> str | None:
    return value.astimezone(tz).replace(microsecond=0).isoformat() if value is not None else None


def service_notice(row: Any, tz: Any) -> str:
    if row.status in ("resolved", "closed"):
        return "已办结"
    if row.status == "withdrawn":
        return "已撤回"
    if row.deadline is not None:
        return f"{_TIER.get(row.tier, '')}办理中，限 {row.deadline.astimezone(tz):%Y-%m-%d} 前办结"
    return f"{_TIER.get(row.tier, '')}办理中"


def request_fields(
    row: Any,
    events_of: list[tuple[str, dict[str, Any], datetime]],
    tz: Any,
    *,
    extensions: bool,
) -> dict[str, Any]:
    full = bool(row.full)
    location = row.location or {}
    status = open311_status(row.status)
    updated = row.updated_at
    if status == "closed":
        updated = row.closed_at or row.withdrawn_at or row.resolved_at or updated
    last = events_of[-1] if events_of else None
    out: dict[str, Any] = {
        "service_request_id": row.id,
        "status": status,
        "status_notes": note_text(last[0], last[1], full=full) if last else None,
        "service_name": row.service_name or row.category,
        "service_code": row.category,
        "description": row.description if full else None,
        "agency_responsible": row.agency_responsible,
        "service_notice": service_notice(row, tz),
        "requested_datetime": when(row.submitted_at, tz),
        "updated_datetime": when(updated, tz),
        "expected_datetime": when(row.deadline, tz),
        "address": location.get("address"),
        "address_id": location.get("address_id"),
        "zipcode": location.get("zipcode"),
        "lat": location.get("lat"),
        "long": location.get("long"),
        "media_url": row.media_url,
    }
    if extensions:
        shown = [("urgency", "紧急程度", row.urgency)]
        if full:
            shown = [
                ("enterprise_id", "企业统一社会信用代码", row.enterprise_id),
                ("enterprise_name", "企业名称", row.enterprise_name),
                ("title", "问题标题", row.title),
                *shown,
            ]
        out["attributes"] = [
            {"label": label, "name": name, "value": value, "code": name} for name, label, value in shown
        ]
        out["extended_attributes"] = {
            "channel": row.source,
            "tier": row.tier,
            "dispatchroom_status": row.status,
            "holder_unit_id": row.holder_unit_id,
            "photos": [row.media_url] if row.media_url else [],
        }
        out["notes"] = [
            {
                "datetime": when(at, tz),
                "description": note_text(kind, data, full=full),
                "type": kind.removeprefix("problem."),
            }
            for kind, data, at in events_of
            if kind not in ("problem.reminded",)
        ]
    return out


@dataclass(frozen=True)
class UpdateQuery:
    window: Window
    ids: tuple[str, ...] = ()
    page: int = 1
    page_size: int = MAX_RESULTS


async def find_updates(
    conn: AsyncConnection,
    query: UpdateQuery,
    *,
    caller: Caller | None,
    subtree: Collection[str],
    public: bool,
) -> list[Any]:
    """Problem events portals hear about, oldest first, with whether the reader sees them in full."""
    where, full = _visible(caller, subtree, public)
    stmt = (
        sa.select(
            events.c.event_id,
            events.c.type,
            events.c.schema_version,
            events.c.data,
            events.c.occurred_at,
            problem_view.c.id.label("problem_id"),
            sa.case((full, sa.true()), else_=sa.false()).label("full"),
        )
        .select_from(
            events.join(event_positions, event_positions.c.event_row == events.c.id).join(
                problem_view, problem_view.c.id == problem_id_of(events.c.stream_id)
            )
        )
        .where(
            events.c.stream_id.startswith(STREAM_PREFIX),
            events.c.type.in_(UPDATE_TYPES),
            events.c.occurred_at >= query.window.start,
            events.c.occurred_at <= query.window.end,
        )
        .order_by(events.c.occurred_at, event_positions.c.position)
        .limit(query.page_size)
        .offset((query.page - 1) * query.page_size)
    )
    if query.ids:
        stmt = stmt.where(events.c.stream_id.in_([STREAM_PREFIX + i for i in query.ids]))
    if where is not None:
        stmt = stmt.where(where)
    return list((await conn.execute(stmt)).all())


def update_fields(row: Any, tz: Any) -> dict[str, Any]:
    _, data = registry.upcast(row.type, row.schema_version, row.data)
    return {
        "update_id": str(row.event_id),
        "service_request_id": row.problem_id,
        "status": extended_status(row.type, data),
        "updated_datetime": when(row.occurred_at, tz),
        "description": note_text(row.type, data, full=bool(row.full)),
        "media_url": None,
        "external_status_code": row.type.removeprefix("problem."),
    }
