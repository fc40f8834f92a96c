"""The problem view: one row per problem with its current state, plus `problem_units` (which
units have a stake in it: reporter, holder, lead, cooperators) for scoping.

Rows are written by the problem projector (`app.problems.projection`) in the same statement as
the events; this module owns the tables, the API representation with aging, the caller's scope
as SQL, and the list query.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field

from app.core.db import JSONType, UTCDateTime, metadata
from app.core.security import Caller, Role
from app.core.types import Duration
from app.routing.calendar import WorkCalendar

ACTIVE_STATUSES = ("open", "assigned", "in_progress", "deferred")
SOLVED_STATUSES = ("resolved", "closed")
FLAGS = ("unrouted", "returned_too_often")
# The condition of the partial index on flagged problems, written once: a query uses the index
# only when its WHERE clause contains this condition as written (SQLite) or provably implies it
# (PostgreSQL, which cannot see through bound parameters, hence literal SQL).
NEEDS_ATTENTION = sa.text("needs_attention")
# The scheduler's work lists (`app.problems.scheduler`): a column per kind of automatic action,
# set only while the problem may still need it, with an index of the rows where it is set, so
# that finding what is due is a short range scan however many problems there are.
PENDING = ("pending_overdue", "pending_reminder", "pending_review", "pending_close")


def _pending_index(column: str) -> sa.Index:
    where = sa.text(f"{column} IS NOT NULL")
    return sa.Index(f"ix_problem_view_{column}", column, "id", sqlite_where=where, postgresql_where=where)


problem_view = sa.Table(
    "problem_view",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("enterprise_id", sa.String(18), nullable=False),
    sa.Column("enterprise_name", sa.String(200), nullable=False),
    sa.Column("district_id", sa.String(12), nullable=False),
    sa.Column("category", sa.String(64), nullable=False),
    sa.Column("title", sa.String(200), nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("urgency", sa.String(10), nullable=False),
    sa.Column("source", sa.String(64), nullable=True),
    sa.Column("reported_by", sa.String(200), nullable=True),
    sa.Column("reporter_unit_id", sa.String(64), nullable=False),
    sa.Column("submitted_by", sa.String(40), nullable=True),
    sa.Column("tier", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("room_unit_id", sa.String(64), nullable=True),
    sa.Column("lead_unit_id", sa.String(64), nullable=True),
    sa.Column("holder_unit_id", sa.String(64), nullable=True),
    sa.Column("cooperating_unit_ids", JSONType, nullable=False),
    sa.Column("deadline", UTCDateTime, nullable=True),
    sa.Column("review_on", sa.Date, nullable=True),
    sa.Column("submitted_at", UTCDateTime, nullable=False),
    sa.Column("tier_entered_at", UTCDateTime, nullable=False),
    sa.Column("holder_since", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("accepted_at", UTCDateTime, nullable=True),
    sa.Column("resolved_at", UTCDateTime, nullable=True),
    sa.Column("closed_at", UTCDateTime, nullable=True),
    sa.Column("withdrawn_at", UTCDateTime, nullable=True),
    sa.Column("solved_tier", sa.String(16), nullable=True),
    sa.Column("solved_by_unit_id", sa.String(64), nullable=True),
    sa.Column("resolution", sa.Text, nullable=True),
    sa.Column("escalations", sa.Integer, nullable=False),
    sa.Column("returns", sa.Integer, nullable=False),
    sa.Column("supervisions", sa.Integer, nullable=False),
    sa.Column("reminders", sa.Integer, nullable=False),
    sa.Column("reopens", sa.Integer, nullable=False),
    sa.Column("extension_request", JSONType, nullable=True),
    sa.Column("return_request", JSONType, nullable=True),
    sa.Column("feedback_score", sa.SmallInteger, nullable=True),
    sa.Column("satisfied", sa.Boolean, nullable=True),
    sa.Column("rule_version", sa.Integer, nullable=True),
    sa.Column("unrouted", sa.Boolean, nullable=False),
    sa.Column("returned_too_often", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("status_note", sa.Text, nullable=True, comment="What the enterprise is told"),
    sa.Column(
        "needs_attention",
        sa.Boolean,
        nullable=False,
        server_default=sa.false(),
        comment="unrouted or returned_too_often: for the commander",
    ),
    sa.Column("pending_overdue", UTCDateTime, nullable=True, comment="Deadline not yet marked overdue"),
    sa.Column("pending_reminder", UTCDateTime, nullable=True, comment="Deadline not yet reminded of"),
    sa.Column("pending_review", sa.Date, nullable=True, comment="Review date not yet reminded of"),
    sa.Column("pending_close", UTCDateTime, nullable=True, comment="Resolved, awaiting feedback, since"),
    sa.Column("paused_seconds", sa.Integer, nullable=False),
    sa.Column("last_event", sa.String(60), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("location", JSONType, nullable=True, comment="address, address_id, zipcode, lat, long"),
    sa.Column("media_url", sa.String(1000), nullable=True),
    sa.Index("ix_problem_view_submitted_at_id", "submitted_at", "id"),
    # A district's problems in a status, newest first: the page reads its rows and no others.
    sa.Index("ix_problem_view_district_status_submitted", "district_id", "status", "submitted_at", "id"),
    sa.Index("ix_problem_view_status_deadline", "status", "deadline"),
    sa.Index("ix_problem_view_holder_unit_id", "holder_unit_id"),
    sa.Index("ix_problem_view_lead_unit_id", "lead_unit_id"),
    sa.Index("ix_problem_view_enterprise_id", "enterprise_id"),
    sa.Index("ix_problem_view_source", "source"),
    *(_pending_index(column) for column in PENDING),
    sa.Index(
        "ix_problem_view_needs_attention",
        "submitted_at",
        "id",
        sqlite_where=NEEDS_ATTENTION,
        postgresql_where=NEEDS_ATTENTION,
    ),
)

problem_units = sa.Table(
    "problem_units",
    metadata,
    sa.Column("problem_id", sa.String(36), primary_key=True),
    sa.Column("unit_id", sa.String(64), primary_key=True),
    sa.Index("ix_problem_units_unit_id_problem_id", "unit_id", "problem_id"),
)


# -- scope -------------------------------------------------------------------------------------


def scope_filter(caller: Caller, subtree: Collection[str] = ()) -> sa.ColumnElement[bool] | None:
    """The problems a caller may see, as SQL (None: all). Mirrors `domain.relations`."""
    role = caller.role
    if role in (Role.admin, Role.commander) or caller.is_system:
        return None
    if role is Role.viewer:
        return None if caller.district_id is None else problem_view.c.district_id == caller.district_id
    if role is Role.dispatcher:
        return problem_view.c.district_id == caller.district_id
    if role is Role.portal:
        return problem_view.c.source == caller.source if caller.source else sa.false()
    if role is Role.handler and subtree:
        return problem_view.c.id.in_(
            sa.select(problem_units.c.problem_id).where(problem_units.c.unit_id.in_(sorted(subtree)))
        )
    return sa.false()


# -- API representation ------------------------------------------------------------------------


class ProblemOut(BaseModel):
    """A problem as the API shows it: its current state and its aging."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "id": "6f1c2a8e-3d1b-4c57-9a0e-2b7d4f1e9c30",
                "enterprise_id": "91220102MA17W1P07X",
                "enterprise_name": "长春一汽富维汽车零部件有限公司",
                "category": "utilities",
                "title": "新厂房双回路供电接入",
                "description": "新建厂房需要双回路供电，申请已提交三个月未获答复。",
                "urgency": "normal",
                "tier": "district",
                "status": "assigned",
                "lead_unit_id": "220102-utilities",
                "cooperating_unit_ids": ["220102-approvals"],
                "holder_unit_id": "220102-utilities",
                "district_id": "220102",
                "deadline": "2026-12-04T23:59:59+08:00",
                "overdue": False,
                "age_days": 6,
                "age_working_days": 4,
                "submitted_at": "2026-11-15T09:30:00+08:00",
                "resolved_at": None,
                "version": 4,
            }
        }
    )

    id: str
    enterprise_id: str
    enterprise_name: str
    category: str
    title: str
    description: str | None = Field(description="Withheld (null) where the caller may not see it.")
    urgency: str
    source: str | None
    reported_by: str | None
    reporter_unit_id: str = Field(description="The unit that found the problem (谁发现谁跟踪).")
    tier: str = Field(description="`local`, `district` or `city`.")
    status: str = Field(
        description="`open`, `assigned`, `in_progress`, `deferred`, `resolved`, `closed`, `withdrawn`."
    )
    lead_unit_id: str | None = Field(description="The lead unit (牵头); null while `open` at a room.")
    cooperating_unit_ids: list[str] = Field(description="Cooperating units (配合).")
    holder_unit_id: str | None = Field(
        description="Who holds it now: the room while `open`, else the lead unit."
    )
    room_unit_id: str | None = Field(description="The room of the current tier (null at `local`).")
    district_id: str
    deadline: datetime | None = Field(description="End of the last working day allowed, with offset.")
    overdue: bool
    age_days: int = Field(description="Calendar days since submission (frozen when solved or withdrawn).")
    age_working_days: int = Field(
        description="Working days since submission (the submission day does not count)."
    )
    tier_age_days: int = Field(description="Calendar days at the current tier.")
    time_to_deadline: Duration | None = Field(
        description="Time left until the deadline (ISO 8601 duration; negative when overdue); "
        "null when solved."
    )
    time_to_resolve: Duration | None = Field(description="Submission to resolution, for solved problems.")
    review_on: date | None = Field(description="Deferred problems: the review date.")
    status_note: str | None = Field(
        description="What the enterprise is told about where its problem stands (Chinese): "
        "accepted, escalated, assigned, an approved extension and its new date, deferred with "
        "the explanation and review date, resolved, closed, withdrawn."
    )
    submitted_at: datetime
    tier_entered_at: datetime
    accepted_at: datetime | None
    resolved_at: datetime | None
    closed_at: datetime | None
    withdrawn_at: datetime | None
    solved_tier: str | None
    resolution: str | None
    escalations: int
    returns: int
    supervisions: int
    reopens: int
    extension_request: dict[str, Any] | None
    return_request: dict[str, Any] | None
    feedback_score: int | None
    satisfied: bool | None
    reminders: int
    rule_version: int | None = Field(
        description="The version of the routing rules under which it was last routed "
        "(submitted, escalated or assigned)."
    )
    unrouted: bool = Field(description="Open at a district room with no routing rule for its category.")
    flags: list[str] = Field(
        description="Why the commander should look at it: `unrouted`, `returned_too_often` "
        "(returned more often than the rules' `max_returns`)."
    )
    needs_attention: bool = Field(description="Any of `flags` is set.")
    last_event: str
    version: int = Field(description="Number of events in the problem's stream; also its ETag.")
    location: dict[str, Any] | None = Field(
        None, description="Where the problem is: `address`, `address_id`, `zipcode`, `lat`, `long`."
    )
    media_url: str | None = Field(None, description="A photo or document of the problem.")


@dataclass(frozen=True)
class Aging:
    age_days: int
    age_working_days: int
    tier_age_days: int
    overdue: bool
    time_to_deadline: timedelta | None
    time_to_resolve: timedelta | None


def aging(row: Any, now: datetime, calendar: WorkCalendar) -> Aging:
    """Aging of a problem row at instant `now` (SPEC §5)."""
    active = row.status in ACTIVE_STATUSES
    end = now
    if row.status in SOLVED_STATUSES and row.resolved_at is not None:
        end = row.resolved_at
    elif row.status in SOLVED_STATUSES and row.closed_at is not None:
        end = row.closed_at
    elif row.status == "withdrawn" and row.withdrawn_at is not None:
        end = row.withdrawn_at
    end = min(end, now)
    deadline = row.deadline
    return Aging(
        age_days=calendar.calendar_days_elapsed(row.submitted_at, end),
        age_working_days=calendar.working_days_elapsed(row.submitted_at, end),
        tier_age_days=calendar.calendar_days_elapsed(row.tier_entered_at, end),
        overdue=bool(active and deadline is not None and now > deadline),
        time_to_deadline=(deadline - now) if active and deadline is not None else None,
        time_to_resolve=(row.resolved_at - row.submitted_at) if row.resolved_at is not None else None,
    )


def to_api(row: Any, now: datetime, calendar: WorkCalendar, *, tz: Any, redact: bool = False) -> ProblemOut:
    if isinstance(row, sa.Row):  # plain attributes: a Row resolves each name (~1 µs; ~55 reads here)
        row = SimpleNamespace(**dict(zip(row._fields, row, strict=True)))
    age = aging(row, now, calendar)

    def local(value: datetime | None) -> datetime | None:
        return value.astimezone(tz) if value is not None else None

    return ProblemOut(
        id=row.id,
        enterprise_id=row.enterprise_id,
        enterprise_name=row.enterprise_name,
        category=row.category,
        title=row.title,
        description=None if redact else row.description,
        urgency=row.urgency,
        source=row.source,
        reported_by=row.reported_by,
        reporter_unit_id=row.reporter_unit_id,
        tier=row.tier,
        status=row.status,
        lead_unit_id=row.lead_unit_id,
        cooperating_unit_ids=list(row.cooperating_unit_ids or []),
        holder_unit_id=row.holder_unit_id,
        room_unit_id=row.room_unit_id,
        district_id=row.district_id,
        deadline=local(row.deadline),
        overdue=age.overdue,
        age_days=age.age_days,
        age_working_days=age.age_working_days,
        tier_age_days=age.tier_age_days,
        time_to_deadline=age.time_to_deadline,
        time_to_resolve=age.time_to_resolve,
        review_on=row.review_on,
        status_note=row.status_note,
        submitted_at=local(row.submitted_at),
        tier_entered_at=local(row.tier_entered_at),
        accepted_at=local(row.accepted_at),
        resolved_at=local(row.resolved_at),
        closed_at=local(row.closed_at),
        withdrawn_at=local(row.withdrawn_at),
        solved_tier=row.solved_tier,
        resolution=row.resolution,
        escalations=row.escalations,
        returns=row.returns,
        supervisions=row.supervisions,
        reopens=row.reopens,
        extension_request=row.extension_request,
        return_request=row.return_request,
        feedback_score=row.feedback_score,
        satisfied=row.satisfied,
        reminders=row.reminders,
        rule_version=row.rule_version,
        unrouted=row.unrouted,
        flags=[name for name in FLAGS if getattr(row, name)],
        needs_attention=row.needs_attention,
        last_event=row.last_event,
        version=row.version,
        location=getattr(row, "location", None),
        media_url=getattr(row, "media_url", None),
    )


# -- queries -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProblemFilter:
    status: tuple[str, ...] = ()
    tier: tuple[str, ...] = ()
    holder_unit_id: str | None = None
    lead_unit_id: str | None = None
    district_id: str | None = None
    category: tuple[str, ...] = ()
    enterprise_id: str | None = None
    overdue: bool | None = None
    submitted_from: datetime | None = None
    submitted_to: datetime | None = None
    needs_attention: bool | None = None
    flags: tuple[str, ...] = ()


def list_query(
    flt: ProblemFilter,
    scope: sa.ColumnElement[bool] | None,
    now: datetime,
    *,
    after: tuple[datetime, str] | None,
    limit: int,
) -> sa.Select[Any]:
    """Problems newest first by (submitted_at, id), a stable keyset order."""
    pv = problem_view.c
    stmt = sa.select(problem_view).order_by(pv.submitted_at.desc(), pv.id.desc()).limit(limit)
    conditions: list[Any] = filter_conditions(
        flt, pv, now, key=pv.id, enterprise_id=pv.enterprise_id, after=after
    )
    # Flags live on the current view only (the temporal model does not keep them).
    if flt.needs_attention is not None or flt.flags:
        if flt.needs_attention is False:
            conditions.append(sa.not_(pv.needs_attention))
        else:  # every flag implies needs_attention: the small partial index serves these lists
            conditions.append(NEEDS_ATTENTION)
        for name in flt.flags:
            conditions.append(pv[name].is_(True))
    return stmt.where(*([scope] if scope is not None else []), *conditions)


def filter_conditions(
    flt: ProblemFilter,
    c: Any,
    now: datetime,
    *,
    key: sa.ColumnElement[str],
    enterprise_id: sa.ColumnElement[str],
    after: tuple[datetime, str] | None,
) -> list[sa.ColumnElement[bool]]:
    """The filter (and the keyset cursor) as conditions on `c`: the problem view's columns, or
    the temporal model's (`app.projections.history`), judged at `now`."""
    conditions: list[sa.ColumnElement[bool]] = []
    if flt.status:
        conditions.append(c.status.in_(flt.status))
    if flt.tier:
        conditions.append(c.tier.in_(flt.tier))
    if flt.holder_unit_id:
        conditions.append(c.holder_unit_id == flt.holder_unit_id)
    if flt.lead_unit_id:
        conditions.append(c.lead_unit_id == flt.lead_unit_id)
    if flt.district_id:
        conditions.append(c.district_id == flt.district_id)
    if flt.category:
        conditions.append(c.category.in_(flt.category))
    if flt.enterprise_id:
        conditions.append(enterprise_id == flt.enterprise_id)
    if flt.overdue is not None:
        is_overdue = sa.and_(c.status.in_(ACTIVE_STATUSES), c.deadline < now)
        conditions.append(is_overdue if flt.overdue else sa.not_(is_overdue) | c.deadline.is_(None))
    if flt.submitted_from:
        conditions.append(c.submitted_at >= flt.submitted_from)
    if flt.submitted_to:
        conditions.append(c.submitted_at < flt.submitted_to)
    if after is not None:
        at, last_id = after
        conditions.append(sa.or_(c.submitted_at < at, sa.and_(c.submitted_at == at, key < last_id)))
    return conditions
