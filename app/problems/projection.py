"""The problem projector: the problem view row is a function of the aggregate's state, so the
same code serves the inline projection (written with the events) and a rebuild from the log."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from app.core.db import upsert
from app.problems.domain import ProblemState, Status
from app.projections.problem_view import problem_units, problem_view


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


def view_writes(dialect: str, before: ProblemState | None, after: ProblemState) -> list[sa.Executable]:
    """Statements that move the problem view from `before` to `after` (None: a new problem)."""
    row = view_row(after)
    stmts: list[sa.Executable] = []
    if before is None:
        stmts.append(sa.insert(problem_view).values(row))
    else:
        stmts.append(
            sa.update(problem_view)
            .where(problem_view.c.id == after.id, problem_view.c.version == before.version)
            .values({k: v for k, v in row.items() if k != "id"})
        )
    old = before.involved_units if before else frozenset()
    new = after.involved_units
    removed = sorted(old - new)
    added = sorted(new - old)
    if removed:
        stmts.append(
            sa.delete(problem_units).where(
                problem_units.c.problem_id == after.id, problem_units.c.unit_id.in_(removed)
            )
        )
    # One single-row statement per unit: SQLAlchemy caches their compiled form (a multi-row
    # VALUES would be compiled anew for every command).
    stmts += [
        upsert(
            dialect,
            problem_units,
            {"problem_id": after.id, "unit_id": u},
            key=["problem_id", "unit_id"],
            update=[],
        )
        for u in added
    ]
    return stmts
