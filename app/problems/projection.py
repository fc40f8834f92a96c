"""The problem projector: the problem view row is a function of the aggregate's state, so the
same code serves the inline projection (written with the events) and a rebuild from the log.
The temporal model (`problem_history`) is a function of the stream's events: a follower keeps it
and rebuilds write it through the same function (`history_rows`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import cache, partial
from operator import itemgetter
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from app.core.db import upsert
from app.events import RecordedEvent, Write
from app.problems import domain
from app.problems.domain import FactLike, ProblemState, Status
from app.projections.history import TRACKED, problem_history
from app.projections.problem_view import problem_units, problem_view
from app.projections.settled import ChangeLog
from app.projections.streams import Rows, StreamProjection
from app.projections.tallies import Tallies
from app.routing.calendar import WorkCalendar

STREAM_PREFIX = "problem-"


def view_row(state: ProblemState) -> dict[str, Any]:
    return {
        "id": state.id,
        "enterprise_id": state.enterprise_id,
        "enterprise_name": state.enterprise_name,
        "district_id": state.district_id,
        "category": state.category,
        "title": state.title,
        "description": state.description,
        "urgency": state.urgency.value,
        "source": state.source,
        "reported_by": state.reported_by,
        "reporter_unit_id": state.reporter_unit_id,
        "submitted_by": state.submitted_by,
        "tier": state.tier.value,
        "status": state.status.value,
        "room_unit_id": state.room_unit_id,
        "lead_unit_id": state.lead_unit_id,
        "holder_unit_id": state.holder_unit_id,
        "cooperating_unit_ids": list(state.cooperating_unit_ids),
        "deadline": state.deadline,
        "review_on": state.review_on,
        "submitted_at": state.submitted_at,
        "tier_entered_at": state.tier_entered_at,
        "holder_since": state.holder_since,
        "updated_at": state.updated_at,
        "accepted_at": state.accepted_at,
        "resolved_at": state.resolved_at,
        "closed_at": state.closed_at,
        "withdrawn_at": state.withdrawn_at,
        "solved_tier": state.solved_tier.value if state.solved_tier else None,
        "solved_by_unit_id": state.solved_by_unit_id,
        "resolution": state.resolution,
        "escalations": state.escalations,
        "returns": state.returns,
        "supervisions": state.supervisions,
        "reminders": state.reminders,
        "reopens": state.reopens,
        "extension_request": state.extension_request,
        "return_request": state.return_request,
        "feedback_score": state.feedback_score,
        "satisfied": state.satisfied,
        "rule_version": state.rule_version,
        "unrouted": state.unrouted,
        "returned_too_often": state.returned_too_often,
        "status_note": state.status_note,
        "needs_attention": bool(state.flags),
        **pending(state),
        "paused_seconds": state.paused_seconds,
        "last_event": state.last_event,
        "version": state.version,
        "location": state.location,
        "media_url": state.media_url,
    }


def pending(state: ProblemState) -> dict[str, Any]:
    """The scheduler's work lists: what the problem may still need (see `problem_view.PENDING`)."""
    active, deadline = state.is_active, state.deadline
    unmarked = active and deadline is not None and state.overdue_noted_for != deadline
    return {
        "pending_overdue": deadline if unmarked else None,
        "pending_reminder": deadline if unmarked and state.reminded_for != deadline else None,
        "pending_review": state.review_on
        if state.status is Status.deferred and state.review_reminded_on != state.review_on
        else None,
        "pending_close": state.resolved_at if state.status is Status.resolved else None,
    }


@cache
def _view_insert(columns: tuple[str, ...]) -> sa.Insert:
    return sa.insert(problem_view).values({c: _bind("pv_", c) for c in columns})


@cache
def _view_update(columns: tuple[str, ...]) -> sa.Update:
    return (
        sa.update(problem_view)
        .where(
            problem_view.c.id == sa.bindparam("pvw_id", type_=problem_view.c.id.type),
            problem_view.c.version == sa.bindparam("pvw_version", type_=problem_view.c.version.type),
        )
        .values({c: _bind("pv_", c) for c in columns if c != "id"})
    )


@cache
def _units_delete(dialect: str) -> sa.Delete:
    units = (
        problem_units.c.unit_id == sa.any_(sa.bindparam("pud_units", type_=postgresql.ARRAY(sa.String)))
        if dialect == "postgresql"  # an array: one statement shape for any count
        else problem_units.c.unit_id.in_(sa.bindparam("pud_units", expanding=True, type_=sa.String))
    )
    return sa.delete(problem_units).where(
        problem_units.c.problem_id == sa.bindparam("pud_problem_id", type_=problem_units.c.problem_id.type),
        units,
    )


@cache
def _unit_insert(dialect: str, index: int) -> sa.Insert:
    # One single-row statement per added unit: a multi-row VALUES would change shape with the count.
    values = {"problem_id": _bind(f"pu{index}_", "problem_id"), "unit_id": _bind(f"pu{index}_", "unit_id")}
    return upsert(dialect, problem_units, values, key=["problem_id", "unit_id"], update=[])


def _bind(prefix: str, column: str) -> sa.BindParameter[Any]:
    table = problem_units if column in ("problem_id", "unit_id") else problem_view
    return sa.bindparam(prefix + column, type_=table.c[column].type)


def view_writes(dialect: str, before: ProblemState | None, after: ProblemState) -> list[Write]:
    """Statements that move the problem view from `before` to `after` (None: a new problem).
    Their statements are built once per shape (see `Write`): the append is the hot path."""
    row = view_row(after)
    columns = tuple(row)
    values = {f"pv_{k}": v for k, v in row.items()}
    writes: list[Write] = []
    if before is None:
        writes.append(Write(_view_insert(columns), values))
    else:
        values.update(pvw_id=after.id, pvw_version=before.version)
        del values["pv_id"]
        writes.append(Write(_view_update(columns), values))
    old = before.involved_units if before else frozenset()
    new = after.involved_units
    removed = sorted(old - new)
    added = sorted(new - old)
    if removed:
        writes.append(Write(_units_delete(dialect), {"pud_problem_id": after.id, "pud_units": removed}))
    writes += [
        Write(_unit_insert(dialect, i), {f"pu{i}_problem_id": after.id, f"pu{i}_unit_id": u})
        for i, u in enumerate(added)
    ]
    return writes


# -- rebuilding and following ------------------------------------------------------------------


def view_stream_rows(stream_id: str, events: Sequence[RecordedEvent]) -> Rows:
    """The problem view row and `problem_units` rows of one stream (what the inline writes add up to)."""
    problem_id = stream_id[len(STREAM_PREFIX) :]
    state = domain.fold(problem_id, events)
    if state is None:
        return {}
    units = [{"problem_id": problem_id, "unit_id": u} for u in sorted(state.involved_units)]
    return {problem_view.name: [view_row(state)], problem_units.name: units}


# The events a problem's intervals depend on. The others (notes, supervision, reminders, overdue
# marks, requests awaiting a ruling) change neither a tracked column nor the response clock, nor
# anything those are computed from, and a stream's business times never go back: its intervals
# are the same without them (`tests/projections`: test_rebuild, test_properties). Any new type is read.
HISTORY_TYPES = tuple(
    t
    for t in domain.EVENT_DESCRIPTIONS
    if t
    not in (
        domain.PROGRESS_REPORTED,
        domain.SUPERVISED,
        domain.REMINDED,
        domain.OVERDUE,
        domain.RETURN_REQUESTED,
        domain.RETURN_REFUSED,
        domain.EXTENSION_REQUESTED,
    )
)
# Events that start a lead unit's assignment (the response clock), end it, or answer it.
_ASSIGNING = frozenset({domain.SUBMITTED, domain.ASSIGNED})
_UNASSIGNING = frozenset({domain.ESCALATED, domain.RETURNED})
_RESPONDING = frozenset({domain.ACCEPTED, domain.DEFERRED, domain.RESOLVED})


def response_days(assigned_at: datetime, responded_at: datetime, calendar: WorkCalendar) -> int:
    """The smallest n such that the response came by the end of the n-th working day after the
    day of assignment (0: the same day). Accepted "within n working days" ⇔ response_days <= n."""
    assigned = calendar.business_date(assigned_at)
    responded = calendar.business_date(responded_at)
    if responded <= assigned:
        return 0
    days = calendar.working_days_between(assigned, responded)
    return days if calendar.is_workday(responded) else days + 1


_TRACKED_OF = itemgetter(*TRACKED)


def history_rows(problem_id: str, facts: Sequence[FactLike], calendar: WorkCalendar) -> list[dict[str, Any]]:
    """The problem's intervals (`problem_history`): the tracked state after the events of each
    instant, a new row whenever it changes."""
    rows: list[dict[str, Any]] = []
    state: ProblemState | None = None
    assigned_at: datetime | None = None
    responded_at: datetime | None = None
    days: int | None = None  # response_days(assigned_at, responded_at) once both are known
    tracked: tuple[Any, ...] | None = None  # the last row's values of TRACKED
    i, n = 0, len(facts)
    while i < n:
        at = facts[i].occurred_at  # later than every instant before (those events are folded)
        while i < n and facts[i].occurred_at <= at:
            fact = facts[i]
            state = domain.initial(problem_id, fact) if state is None else domain.evolve(state, fact)
            if fact.type in _ASSIGNING:
                assigned_at, responded_at, days = at, None, None
            elif fact.type in _UNASSIGNING:
                assigned_at, responded_at, days = None, None, None
            elif fact.type in _RESPONDING and assigned_at is not None and responded_at is None:
                responded_at = at
                days = response_days(assigned_at, responded_at, calendar)
            i += 1
        assert state is not None
        last = rows[-1] if rows else None
        row = {
            "problem_id": problem_id,
            "valid_from": at,
            "valid_to": None,
            "submitted_at": state.submitted_at,
            "district_id": state.district_id,
            "category": state.category,
            "source": state.source,
            "from_tier": last["tier"] if last else None,
            "from_status": last["status"] if last else None,
            "tier": state.tier.value,
            "status": state.status.value,
            "holder_unit_id": state.holder_unit_id,
            "lead_unit_id": state.lead_unit_id,
            "cooperators": len(state.cooperating_unit_ids),
            "deadline": state.deadline,
            "resolved_at": state.resolved_at,
            "solved_tier": state.solved_tier.value if state.solved_tier else None,
            "solved_by_unit_id": state.solved_by_unit_id,
            "escalations": state.escalations,
            "returns": state.returns,
            "reopens": state.reopens,
            "feedback_score": state.feedback_score,
            "satisfied": state.satisfied,
            "assigned_at": assigned_at,
            "responded_at": responded_at,
            "response_days": days,
        }
        now = _TRACKED_OF(row)
        if now == tracked:
            continue
        if last is not None:
            last["valid_to"] = at
        rows.append(row)
        tracked = now
    return rows


def history_stream_rows(calendar: WorkCalendar, stream_id: str, events: Sequence[RecordedEvent]) -> Rows:
    problem_id = stream_id[len(STREAM_PREFIX) :]
    return {problem_history.name: history_rows(problem_id, events, calendar)}


def problem_projections(calendar: WorkCalendar) -> list[StreamProjection]:
    """The problem's read models, for the projection registry (wired in `app.main`)."""
    return [
        StreamProjection(
            name="problem_view",
            prefix=STREAM_PREFIX,
            tables=(problem_view, problem_units),
            keys={problem_view.name: "id", problem_units.name: "problem_id"},
            rows=view_stream_rows,
            description="Current state of every problem (inline: written with the events).",
        ),
        StreamProjection(
            name="problem_history",
            prefix=STREAM_PREFIX,
            tables=(problem_history,),
            keys={problem_history.name: "problem_id"},
            rows=partial(history_stream_rows, calendar),
            follows=True,
            types=HISTORY_TYPES,
            description="Intervals of each problem's tier, status, holder and deadline (as-of statistics), "
            "and their monthly tallies.",
            summary=Tallies(calendar.tz),
            changes=ChangeLog(),
        ),
    ]
