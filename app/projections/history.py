"""The temporal read model (`problem_history`): one row per problem per interval during which
its tier, status, holder, deadline and the other figures statistics need stayed the same, with
`valid_from` (inclusive) and `valid_to` (exclusive; null for the interval that is still going
on). "As of T" is then a range query (`valid_from <= T < valid_to`), and "during a period" a
range over `valid_from`, instead of a replay of the log.

Rows are a pure function of a problem's events (`app.problems.projection.history_rows`), built
by a follower (`StreamFollower`) and by rebuilds through the same code. Intervals follow business
time (`occurred_at`): imported history lands where it happened. Events of one instant collapse
into one interval (the state after the last of them), and events that change none of the tracked
columns (progress notes, supervision, reminders) start no interval.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql import visitors

from app.core.db import UTCDateTime, metadata
from app.projections.problem_view import ACTIVE_STATUSES, ProblemFilter, filter_conditions, problem_view

# The columns whose change starts a new interval.
TRACKED = (
    "tier",
    "status",
    "holder_unit_id",
    "lead_unit_id",
    "cooperators",
    "deadline",
    "resolved_at",
    "solved_tier",
    "solved_by_unit_id",
    "escalations",
    "returns",
    "reopens",
    "feedback_score",
    "satisfied",
    "assigned_at",
    "responded_at",
    "response_days",
)

# Conditions of the partial indexes on the current intervals, as literal SQL written once: a
# query uses such an index only when its WHERE clause contains the condition as written (SQLite)
# or provably implies it (PostgreSQL, which cannot see through bound parameters).
OPEN_NOW = "valid_to IS NULL AND status IN ({})".format(", ".join(f"'{s}'" for s in ACTIVE_STATUSES))
UNANSWERED_NOW = (
    "valid_to IS NULL AND assigned_at IS NOT NULL AND responded_at IS NULL AND status <> 'withdrawn'"
)
ANSWERED_NOW = "valid_to IS NULL AND responded_at IS NOT NULL AND status <> 'withdrawn'"
# What grouping, scoping and cohorts read of an interval.
_GROUPS = (
    "problem_id",
    "district_id",
    "category",
    "source",
    "cooperators",
    "status",
    "tier",
    "solved_tier",
    "holder_unit_id",
    "solved_by_unit_id",
)

problem_history = sa.Table(
    "problem_history",
    metadata,
    sa.Column("problem_id", sa.String(36), primary_key=True),
    sa.Column("valid_from", UTCDateTime, primary_key=True),
    sa.Column("valid_to", UTCDateTime, nullable=True),
    # Fixed at submission (copied so that cohorts, groups and scope need no join).
    sa.Column("submitted_at", UTCDateTime, nullable=False),
    sa.Column("district_id", sa.String(12), nullable=False),
    sa.Column("category", sa.String(64), nullable=False),
    sa.Column("source", sa.String(64), nullable=True),
    # Where the previous interval stood (null for the first): flows between tiers and statuses.
    sa.Column("from_tier", sa.String(16), nullable=True),
    sa.Column("from_status", sa.String(16), nullable=True),
    # The tracked state.
    sa.Column("tier", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("holder_unit_id", sa.String(64), nullable=True),
    sa.Column("lead_unit_id", sa.String(64), nullable=True),
    sa.Column("cooperators", sa.Integer, nullable=False),
    sa.Column("deadline", UTCDateTime, nullable=True),
    sa.Column("resolved_at", UTCDateTime, nullable=True),
    sa.Column("solved_tier", sa.String(16), nullable=True),
    sa.Column("solved_by_unit_id", sa.String(64), nullable=True),
    sa.Column("escalations", sa.Integer, nullable=False),
    sa.Column("returns", sa.Integer, nullable=False),
    sa.Column("reopens", sa.Integer, nullable=False),
    sa.Column("feedback_score", sa.SmallInteger, nullable=True),
    sa.Column("satisfied", sa.Boolean, nullable=True),
    sa.Column("assigned_at", UTCDateTime, nullable=True, comment="Start of the lead unit's assignment"),
    sa.Column("responded_at", UTCDateTime, nullable=True, comment="First accept/defer/resolve after it"),
    sa.Column(
        "response_days",
        sa.SmallInteger,
        nullable=True,
        comment="Working days from assignment to response (0: the same day)",
    ),
    # Cohorts (the problems received in a period) as of any instant: index-only scans on
    # PostgreSQL, whatever order the rows were written in.
    sa.Index(
        "ix_problem_history_submitted_at",
        "submitted_at",
        postgresql_include=[
            "problem_id",
            "valid_from",
            "valid_to",
            "district_id",
            "category",
            "source",
            *TRACKED,
        ],
    ),
    # What moved during a period: the transitions that happened in it.
    sa.Index(
        "ix_problem_history_valid_from",
        "valid_from",
        postgresql_include=[
            "problem_id",
            "district_id",
            "source",
            "from_tier",
            "tier",
            "from_status",
            "status",
        ],
    ),
    # The open problems now, by submission (aging) and by deadline (the overdue).
    sa.Index(
        "ix_problem_history_open",
        "submitted_at",
        postgresql_where=sa.text(OPEN_NOW),
        sqlite_where=sa.text(OPEN_NOW),
        postgresql_include=[*_GROUPS, "deadline"],
    ),
    sa.Index(
        "ix_problem_history_open_deadline",
        "deadline",
        postgresql_where=sa.text(OPEN_NOW),
        sqlite_where=sa.text(OPEN_NOW),
        postgresql_include=[*_GROUPS, "submitted_at"],
    ),
    # The assignments not answered yet (by assignment), and the answers (by working days taken):
    # the statistics' corrections of the tallies (`app.projections.tallies`).
    sa.Index(
        "ix_problem_history_unanswered",
        "assigned_at",
        postgresql_where=sa.text(UNANSWERED_NOW),
        sqlite_where=sa.text(UNANSWERED_NOW),
        postgresql_include=[*_GROUPS, "submitted_at"],
    ),
    sa.Index(
        "ix_problem_history_answered",
        "response_days",
        postgresql_where=sa.text(ANSWERED_NOW),
        sqlite_where=sa.text(ANSWERED_NOW),
        postgresql_include=[*_GROUPS, "submitted_at"],
    ),
    # The intervals still going on: the current state, for statistics without `as_of`. On
    # PostgreSQL it carries every column a figure reads, so those are index-only scans of one
    # narrow entry per problem instead of visits to a history several times that size.
    sa.Index(
        "ix_problem_history_current",
        "district_id",
        "submitted_at",
        postgresql_where=sa.text("valid_to IS NULL"),
        sqlite_where=sa.text("valid_to IS NULL"),
        postgresql_include=["category", "source", *TRACKED],
    ),
    # As of a past instant T, the intervals in force then are the current ones less those begun
    # after T, plus those in force at T that have ended since (`begun_after`, `ended_across`):
    # two ranges at the recent end of these indexes, however many problems there are
    # (`Statistics._as_of`). Each carries what a figure, a group, a cohort and a scope read.
    sa.Index(
        "ix_problem_history_begun",
        "valid_from",
        postgresql_where=sa.text("valid_to IS NULL"),
        sqlite_where=sa.text("valid_to IS NULL"),
        postgresql_include=["submitted_at", "district_id", "category", "source", *TRACKED],
    ),
    sa.Index(
        "ix_problem_history_ended",
        "valid_to",
        postgresql_where=sa.text("valid_to IS NOT NULL"),
        sqlite_where=sa.text("valid_to IS NOT NULL"),
        postgresql_include=["valid_from", "submitted_at", "district_id", "category", "source", *TRACKED],
    ),
)


def _literal(value: str) -> sa.ColumnElement[str]:
    return sa.literal_column(f"'{value}'")


def open_now() -> sa.ColumnElement[bool]:
    """`OPEN_NOW` as an expression on `problem_history` (the same terms: the index applies)."""
    h = problem_history.c
    return sa.and_(h.valid_to.is_(None), h.status.in_([_literal(s) for s in ACTIVE_STATUSES]))


def unanswered_now() -> sa.ColumnElement[bool]:
    h = problem_history.c
    return sa.and_(
        h.valid_to.is_(None),
        h.assigned_at.is_not(None),
        h.responded_at.is_(None),
        h.status != _literal("withdrawn"),
    )


def answered_now() -> sa.ColumnElement[bool]:
    h = problem_history.c
    return sa.and_(h.valid_to.is_(None), h.responded_at.is_not(None), h.status != _literal("withdrawn"))


def valid_at(instant: datetime | None, table: sa.Table = problem_history) -> sa.ColumnElement[bool]:
    """The intervals in force at `instant` (None: the current ones)."""
    h = table.c
    if instant is None:
        return h.valid_to.is_(None)
    return sa.and_(h.valid_from <= instant, sa.or_(h.valid_to.is_(None), h.valid_to > instant))


def begun_after(instant: datetime) -> sa.ColumnElement[bool]:
    """The current intervals that began after `instant`: the problems received or changed since."""
    h = problem_history.c
    return sa.and_(h.valid_to.is_(None), h.valid_from > instant)


def ended_across(instant: datetime) -> sa.ColumnElement[bool]:
    """The intervals in force at `instant` that have ended since. With the current intervals not
    `begun_after` it, they are `valid_at(instant)`."""
    h = problem_history.c
    return sa.and_(h.valid_to > instant, h.valid_from <= instant)


_SCOPE_COLUMNS = {"id": "problem_id", "district_id": "district_id", "source": "source"}


class _NotAdaptable(Exception):
    pass


def history_scope(scope: sa.ColumnElement[bool] | None) -> sa.ColumnElement[bool] | None:
    """The caller's scope (`problem_view.scope_filter`, stated on the problem view) restated on
    `problem_history`. Columns the history carries are swapped in place; anything else falls back
    to a semi-join on the problem view, which is always right, only slower."""
    if scope is None:
        return None

    def swap(element: Any, **_: Any) -> Any:
        if isinstance(element, sa.Column) and element.table is problem_view:
            name = _SCOPE_COLUMNS.get(element.name)
            if name is None:
                raise _NotAdaptable(element.name)
            return problem_history.c[name]
        return None

    try:
        adapted: sa.ColumnElement[bool] = visitors.replacement_traverse(scope, {}, swap)
    except _NotAdaptable:
        return problem_history.c.problem_id.in_(sa.select(problem_view.c.id).where(scope))
    return adapted


def as_of_list_query(
    flt: ProblemFilter,
    scope: sa.ColumnElement[bool] | None,
    as_of: datetime,
    *,
    after: tuple[datetime, str] | None,
    limit: int,
) -> sa.Select[Any]:
    """The ids of the problems that matched `flt` at `as_of` (state filters on the interval in
    force then; the problem's fixed facts and the caller's scope on the problem view), newest
    first by (submitted_at, id) like the current list."""
    h, pv = problem_history.c, problem_view.c
    stmt = (
        sa.select(h.problem_id, h.submitted_at)
        .select_from(problem_history.join(problem_view, pv.id == h.problem_id))
        .where(valid_at(as_of))
        .order_by(h.submitted_at.desc(), h.problem_id.desc())
        .limit(limit)
    )
    conditions = filter_conditions(
        flt, h, as_of, key=h.problem_id, enterprise_id=pv.enterprise_id, after=after
    )
    return stmt.where(*([scope] if scope is not None else []), *conditions)
