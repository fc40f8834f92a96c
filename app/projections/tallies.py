"""Monthly tallies of the problems' current state (`problem_tallies`), so that solve rates over
months of problems add up a few thousand rows instead of one entry per problem.

One row per month of submission (city time), district, category, group keys (the tier and unit
a problem counts under: where it is now, or who solved it) and whether it is handled jointly,
holding the counts of `Figures` that depend only on a problem's current interval, and for the
figures that depend on the instant asked about or on the rules in force, counts they can be
derived from with a short range at the recent end of a partial index of `problem_history`
(`Statistics`): overdue = open with a deadline − those whose deadline is still ahead; due
responses = answered + unanswered − those assigned within the window; responded = the answers
per working day up to the window (tallied per day up to `TALLIED_RESPONSE_DAYS`). Many problems
may be open or answered late; few have a deadline ahead or an assignment from the last days.

The tallies are a sum over the intervals still going on, kept by the temporal model's follower
in its batch's transaction: before it replaces a batch of problems' intervals it takes their
current intervals' contributions away, after it adds the new ones'. A rebuild recomputes them
from the fresh temporal model (`recompute`). Withdrawn problems count nowhere.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from functools import cache
from operator import add, sub
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from app.core.db import UTCDateTime, member_of, metadata
from app.projections.problem_view import ACTIVE_STATUSES, SOLVED_STATUSES

KEY = ("month", "district_id", "category", "tier_key", "unit_key", "joint")
# Answers within this many working days are tallied per day; a response window beyond it
# (the rules allow up to 60) adds the answers in between from the index of answers.
TALLIED_RESPONSE_DAYS = 5
RESPONDED = tuple(f"responded_{d}" for d in range(TALLIED_RESPONSE_DAYS + 1))
COUNTS = (
    "received",
    "solved",
    "solved_on_the_spot",
    "on_time",
    "feedback_count",
    "satisfied",
    "assigned_responded",  # assigned and answered: due whatever the instant
    "assigned_unanswered",  # assigned, not answered: due once the window has run out
    *RESPONDED,  # answered after d working days (d = 0 … TALLIED_RESPONSE_DAYS)
    "open",
    "open_with_deadline",  # overdue once the deadline has passed
    "returned",
)
# What a contribution reads from an interval.
SOURCE_COLUMNS = (
    "submitted_at",
    "district_id",
    "category",
    "status",
    "tier",
    "solved_tier",
    "holder_unit_id",
    "solved_by_unit_id",
    "cooperators",
    "escalations",
    "deadline",
    "resolved_at",
    "feedback_score",
    "satisfied",
    "assigned_at",
    "responded_at",
    "response_days",
    "returns",
)

problem_tallies = sa.Table(
    "problem_tallies",
    metadata,
    sa.Column("month", UTCDateTime, primary_key=True, comment="Start of the month of submission (city time)"),
    sa.Column("district_id", sa.String(12), primary_key=True),
    sa.Column("category", sa.String(64), primary_key=True),
    sa.Column("tier_key", sa.String(16), primary_key=True, comment="Tier now, or the solving tier ('' none)"),
    sa.Column("unit_key", sa.String(64), primary_key=True, comment="Holder now, or the solver ('' none)"),
    sa.Column("joint", sa.Boolean, primary_key=True),
    *[sa.Column(name, sa.Integer, nullable=False) for name in COUNTS],
)

Key = tuple[datetime, str, str, str, str, bool]


def month_start(instant: datetime, tz: ZoneInfo) -> datetime:
    """The start of the city-time month `instant` falls in, in UTC."""
    local = instant.astimezone(tz)
    return _month_start(local.year, local.month, tz)


@cache
def _month_start(year: int, month: int, tz: ZoneInfo) -> datetime:
    return datetime(year, month, 1, tzinfo=tz).astimezone(UTC)


def next_month(start: datetime, tz: ZoneInfo) -> datetime:
    local = start.astimezone(tz)
    year, month = (local.year + 1, 1) if local.month == 12 else (local.year, local.month + 1)
    return datetime(year, month, 1, tzinfo=tz).astimezone(UTC)


def first_month_from(instant: datetime, tz: ZoneInfo) -> datetime:
    """The first month start at or after `instant`."""
    start = month_start(instant, tz)
    return start if start == instant else next_month(start, tz)


# The counts of RESPONDED by the working days an answer took (none of them: not answered, or later).
_NOT_RESPONDED = (0,) * len(RESPONDED)
_RESPONDED_AFTER: dict[Any, tuple[int, ...]] = {
    d: tuple(int(d == k) for k in range(len(RESPONDED))) for d in range(len(RESPONDED))
}


def contribution(row: Mapping[Any, Any], tz: ZoneInfo) -> tuple[Key, tuple[int, ...]] | None:
    """What one current interval (a row of `SOURCE_COLUMNS` by name) adds to the tallies (None: a
    withdrawn problem). The conditions are `stats.figures_columns`' restated on one row;
    `tests/projections` checks they agree."""
    status = row["status"]
    if status == "withdrawn":
        return None
    solved = status in SOLVED_STATUSES
    solved_tier, deadline = row["solved_tier"], row["deadline"]
    key = (
        month_start(row["submitted_at"], tz),
        row["district_id"],
        row["category"],
        (solved_tier if solved else row["tier"]) or "",
        (row["solved_by_unit_id"] if solved else row["holder_unit_id"]) or "",
        row["cooperators"] > 0,
    )
    resolved_at = row["resolved_at"]
    on_time = solved and (deadline is None or (resolved_at is not None and resolved_at <= deadline))
    answered = row["responded_at"] is not None
    assigned = row["assigned_at"] is not None
    active = status in ACTIVE_STATUSES
    days = row["response_days"] if answered else None
    counts = (
        1,
        int(solved),
        int(solved and solved_tier == "local" and row["escalations"] == 0),
        int(on_time),
        int(row["feedback_score"] is not None),
        int(row["satisfied"] is True),
        int(assigned and answered),
        int(assigned and not answered),
        *_RESPONDED_AFTER.get(days, _NOT_RESPONDED),
        int(active),
        int(active and deadline is not None),
        int(row["returns"] > 0),
    )
    return key, counts


def tally(
    rows: Iterable[Mapping[Any, Any]], tz: ZoneInfo, sign: int = 1, into: dict[Key, list[int]] | None = None
) -> dict[Key, list[int]]:
    """Sum the contributions of `rows` (current intervals, by column name) into `into`, times
    `sign`."""
    out = into if into is not None else {}
    combine = add if sign == 1 else sub
    for row in rows:
        found = contribution(row, tz)
        if found is None:
            continue
        key, counts = found
        acc = out.get(key)
        if acc is None:
            out[key] = list(counts) if sign == 1 else [-c for c in counts]
        else:
            out[key] = list(map(combine, acc, counts))
    return out


class Tallies:
    """The summary of the temporal model that its follower and rebuilds keep (`StreamProjection.summary`)."""

    table = problem_tallies

    def __init__(self, tz: ZoneInfo) -> None:
        self.tz = tz
        # Per table object (a rebuild's fresh tables get their own, held weakly) and dialect.
        self._built: weakref.WeakKeyDictionary[sa.Table, dict[str, tuple[sa.Insert, sa.Delete]]] = (
            weakref.WeakKeyDictionary()
        )

    async def read(
        self, conn: AsyncConnection, source: sa.Table, keys: Sequence[str]
    ) -> dict[Key, list[int]]:
        """The contributions of these problems' current intervals, taken away (before a replace)."""
        out: dict[Key, list[int]] = {}
        columns = [source.c[c] for c in SOURCE_COLUMNS]
        for i in range(0, len(keys), 500):
            rows = await conn.execute(
                sa.select(*columns).where(
                    source.c.valid_to.is_(None),
                    member_of(conn.dialect.name, source.c.problem_id, keys[i : i + 500]),
                )
            )
            tally(rows.mappings(), self.tz, -1, out)
        return out

    async def apply(
        self,
        conn: AsyncConnection,
        target: sa.Table,
        before: dict[Key, list[int]] | None,
        new_rows: Sequence[Mapping[str, Any]],
    ) -> None:
        """Add the new rows' current intervals to `before` (what `read` took away) and write the
        difference."""
        delta = before if before is not None else {}
        tally((r for r in new_rows if r["valid_to"] is None), self.tz, 1, delta)
        changed = [(k, v) for k, v in delta.items() if any(v)]
        if not changed:
            return
        add_rows, drop_empty = self._statements(conn.dialect.name, target)
        await conn.execute(add_rows, [_params(k, v) for k, v in changed])
        gone = [_params(k, v) for k, v in changed if v[0] < 0]
        if gone:
            await conn.execute(drop_empty, [{f"k_{c}": p[c] for c in KEY} for p in gone])

    def _statements(self, dialect: str, target: sa.Table) -> tuple[sa.Insert, sa.Delete]:
        """`apply`'s two statements on `target`, built once per table (a follower runs them every
        batch: building the upsert's `excluded` columns anew cost more than executing it)."""
        built = self._built.setdefault(target, {})
        found = built.get(dialect)
        if found is None:
            ins: Any = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(target)
            ins = ins.on_conflict_do_update(
                index_elements=list(KEY), set_={c: target.c[c] + ins.excluded[c] for c in COUNTS}
            )
            drop = sa.delete(target).where(
                *[target.c[c] == sa.bindparam(f"k_{c}") for c in KEY], target.c.received == 0
            )
            found = built[dialect] = (ins, drop)
        return found

    def add(
        self, totals: dict[Key, list[int]] | None, rows: Sequence[Mapping[str, Any]]
    ) -> dict[Key, list[int]]:
        """Add the contributions of fresh rows (whole streams) to `totals` (None: none yet)."""
        return tally((r for r in rows if r["valid_to"] is None), self.tz, 1, totals)

    def merge(
        self, totals: dict[Key, list[int]] | None, other: dict[Key, list[int]] | None
    ) -> dict[Key, list[int]] | None:
        """The sum of two `add` results (ranges of streams built apart)."""
        if totals is None or other is None:
            return totals if other is None else other
        for key, counts in other.items():
            acc = totals.get(key)
            totals[key] = counts if acc is None else list(map(add, acc, counts))
        return totals

    async def fill(self, conn: AsyncConnection, target: sa.Table, totals: dict[Key, list[int]] | None) -> int:
        """Write `totals` into the empty `target`; returns its rows."""
        rows = [_params(k, v) for k, v in (totals or {}).items()]
        for i in range(0, len(rows), 5_000):
            await conn.execute(sa.insert(target), rows[i : i + 5_000])
        return len(rows)

    async def recompute(self, conn: AsyncConnection, source: sa.Table, target: sa.Table) -> int:
        """Fill `target` (empty) from every current interval of `source`; returns its rows."""
        result = await conn.stream(
            sa.select(*[source.c[c] for c in SOURCE_COLUMNS]).where(source.c.valid_to.is_(None)),
        )
        totals: dict[Key, list[int]] = {}
        async for partition in result.mappings().partitions(10_000):
            tally(partition, self.tz, 1, totals)
        return await self.fill(conn, target, totals)


def _params(key: Key, counts: Sequence[int]) -> dict[str, Any]:
    return {**dict(zip(KEY, key, strict=True)), **dict(zip(COUNTS, counts, strict=True))}
