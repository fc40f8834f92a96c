"""Statistics of the command room: solve rates and aging, for now or as of any past instant.

Every figure is one set-based query over the temporal model (`problem_history`): the intervals in
force at the instant asked about (`valid_from <= T < valid_to`; without `as_of`, the intervals
still going on), restricted to the caller's scope, grouped in SQL. Whatever depends on the work
calendar is turned into instants first (the aging buckets' edges, the response window's cut-off),
so the database only compares timestamps. `docs/statistics.md` defines every figure.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import astuple, dataclass, fields, replace
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum
from types import SimpleNamespace
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.sql import operators
from sqlalchemy.sql.elements import BinaryExpression

from app.core.clock import Clock
from app.core.db import Database
from app.core.errors import AppError, register
from app.core.security import Caller, Role
from app.directory.rules import RulesRepository
from app.directory.service import Directory
from app.directory.tables import categories, units
from app.projections import params  # noqa: F401  (registers as_of_in_future)
from app.projections.history import (
    answered_now,
    begun_after,
    ended_across,
    history_scope,
    open_now,
    problem_history,
    unanswered_now,
    valid_at,
)
from app.projections.periods import start_of_day
from app.projections.problem_view import ACTIVE_STATUSES, SOLVED_STATUSES, problem_view, scope_filter
from app.projections.settled import Settled
from app.projections.tallies import (
    COUNTS,
    RESPONDED,
    TALLIED_RESPONSE_DAYS,
    first_month_from,
    month_start,
    problem_tallies,
)
from app.routing.calendar import WorkCalendar
from app.routing.tree import TIER_ORDER

register("invalid_range", 422, "Invalid range", "`from` must lie before `to`.")

TIER_NAMES = {"local": "基层服务队（组）", "district": "区级", "city": "市级"}
BUCKETS = ("0-3", "4-7", "8-15", "16-30", "31+")
_BUCKET_EDGES = (4, 8, 16, 31)  # an age of at least k days leaves the bucket below k


class GroupBy(StrEnum):
    tier = "tier"
    unit = "unit"
    district = "district"
    category = "category"


class Basis(StrEnum):
    calendar = "calendar"
    working = "working"


def rate(numerator: int, denominator: int) -> float | None:
    """numerator ÷ denominator as a fraction rounded half-up to 3 decimals (45/87 → 0.517); None
    when there is nothing to divide by."""
    if denominator == 0:
        return None
    exact = Decimal(numerator) / Decimal(denominator)
    return float(exact.quantize(Decimal("0.001"), rounding=ROUND_HALF_UP))


@dataclass
class Figures:
    """The counts of one group; rates derive from them (`as_dict`)."""

    received: int = 0
    solved: int = 0
    solved_on_the_spot: int = 0
    on_time: int = 0
    feedback_count: int = 0
    satisfied: int = 0
    response_due: int = 0
    responded: int = 0
    open: int = 0
    overdue: int = 0
    returned: int = 0
    joint: int = 0

    def add(self, other: Figures) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def subtract(self, other: Figures) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) - getattr(other, f.name))

    @property
    def solve_rate(self) -> float | None:
        return rate(self.solved, self.received)

    @property
    def on_time_rate(self) -> float | None:
        return rate(self.on_time, self.solved)

    @property
    def satisfaction_rate(self) -> float | None:
        return rate(self.satisfied, self.feedback_count)

    @property
    def response_rate(self) -> float | None:
        return rate(self.responded, self.response_due)

    def as_dict(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "solved": self.solved,
            "solve_rate": self.solve_rate,
            "solved_on_the_spot": self.solved_on_the_spot,
            "on_time": self.on_time,
            "on_time_rate": self.on_time_rate,
            "feedback_count": self.feedback_count,
            "satisfied": self.satisfied,
            "satisfaction_rate": self.satisfaction_rate,
            "response_due": self.response_due,
            "responded": self.responded,
            "response_rate": self.response_rate,
            "open": self.open,
            "overdue": self.overdue,
            "returned": self.returned,
            "joint": self.joint,
        }


@dataclass(frozen=True)
class Cohort:
    """Which problems count: received (submitted) in [start, end), optionally of one district or
    category, or only the jointly handled ones (with cooperating units)."""

    start: datetime | None = None
    end: datetime | None = None
    district_id: str | None = None
    category: str | None = None
    joint: bool | None = None

    def conditions(self) -> list[sa.ColumnElement[bool]]:
        h = problem_history.c
        out: list[sa.ColumnElement[bool]] = []
        if self.start is not None:
            out.append(h.submitted_at >= self.start)
        if self.end is not None:
            out.append(h.submitted_at < self.end)
        if self.district_id:
            out.append(h.district_id == self.district_id)
        if self.category:
            out.append(h.category == self.category)
        if self.joint is not None:
            out.append(h.cooperators > 0 if self.joint else h.cooperators == 0)
        return out


def group_key(group_by: GroupBy) -> sa.ColumnElement[Any]:
    """The group a problem falls in: for tier and unit, where it is now, or for solved problems
    the tier and unit that solved it (SPEC §8)."""
    h = problem_history.c
    solved = h.status.in_(SOLVED_STATUSES)
    match group_by:
        case GroupBy.tier:
            return sa.case((solved, h.solved_tier), else_=h.tier)
        case GroupBy.unit:
            return sa.case((solved, h.solved_by_unit_id), else_=h.holder_unit_id)
        case GroupBy.district:
            return h.district_id
        case GroupBy.category:
            return h.category


def _count(condition: sa.ColumnElement[bool]) -> sa.ColumnElement[int]:
    return sa.func.coalesce(sa.func.sum(sa.case((condition, 1), else_=0)), 0)


def figures_columns(at: datetime, window: int, cutoff: datetime) -> list[sa.ColumnElement[Any]]:
    """The counts of `Figures` as SQL aggregates over intervals in force at `at`."""
    h = problem_history.c
    solved = h.status.in_(SOLVED_STATUSES)
    active = h.status.in_(ACTIVE_STATUSES)
    return [
        sa.func.count().label("received"),
        _count(solved).label("solved"),
        _count(solved & (h.solved_tier == "local") & (h.escalations == 0)).label("solved_on_the_spot"),
        _count(solved & (h.deadline.is_(None) | (h.resolved_at <= h.deadline))).label("on_time"),
        _count(h.feedback_score.is_not(None)).label("feedback_count"),
        _count(h.satisfied.is_(True)).label("satisfied"),
        _count(h.assigned_at.is_not(None) & (h.responded_at.is_not(None) | (h.assigned_at < cutoff))).label(
            "response_due"
        ),
        _count(h.responded_at.is_not(None) & (h.response_days <= window)).label("responded"),
        _count(active).label("open"),
        _count(active & (h.deadline < at)).label("overdue"),
        _count(h.returns > 0).label("returned"),
        _count(h.cooperators > 0).label("joint"),
    ]


@dataclass(frozen=True)
class Group:
    key: str | None
    name: str | None
    figures: Figures
    district_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"key": self.key, "name": self.name}
        if self.district_id is not None:
            out["district_id"] = self.district_id
        return {**out, **self.figures.as_dict()}


class Statistics:
    """The queries behind `/v1/stats/*` and `/v1/reports/*`."""

    def __init__(
        self,
        db: Database,
        calendar: WorkCalendar,
        rules: RulesRepository,
        directory: Directory,
        clock: Clock,
    ) -> None:
        self.db = db
        self.calendar = calendar
        self.rules = rules
        self.directory = directory
        self.clock = clock
        self.settled = Settled()

    @property
    def tz(self) -> Any:
        return self.calendar.tz

    # -- building blocks -------------------------------------------------------------------

    async def scope(self, caller: Caller) -> sa.ColumnElement[bool] | None:
        """The caller's scope on `problem_history` (the problem view's `scope_filter`, restated)."""
        subtree: frozenset[str] = frozenset()
        if caller.role is Role.handler and caller.unit_id:
            subtree = await self.directory.subtree(caller.unit_id)
        return history_scope(scope_filter(caller, subtree))

    def instant(self, as_of: datetime | None) -> datetime:
        """The instant figures describe: `as_of`, or now."""
        now = self.clock.now()
        if as_of is None:
            return now
        if as_of > now:
            raise AppError("as_of_in_future", "as_of lies in the future", as_of=as_of.isoformat())
        return as_of.astimezone(UTC)

    def response_cutoff(self, at: datetime, window: int) -> datetime:
        """Assignments that started before this instant had their response window (the end of
        the `window`-th working day after the day of assignment) end before `at`."""
        day = self.calendar.business_date(at)
        while self.calendar.end_of_day(self.calendar.add_working_days(day - timedelta(days=1), window)) >= at:
            day -= timedelta(days=1)
        return start_of_day(day, self.tz)

    def age_edges(self, at: datetime, basis: Basis) -> list[datetime]:
        """For each bucket edge k (4, 8, 16, 31 days): an open problem is at least k days old at
        `at` exactly when it was submitted before the instant returned for k."""
        today = self.calendar.business_date(at)
        edges: list[datetime] = []
        for k in _BUCKET_EDGES:
            if basis is Basis.calendar:
                last = today - timedelta(days=k)
            else:
                last, counted = today, 0
                while counted < k:
                    counted += self.calendar.is_workday(last)
                    last -= timedelta(days=1)
            edges.append(start_of_day(last + timedelta(days=1), self.tz))
        return edges

    async def figures(
        self,
        scope: sa.ColumnElement[bool] | None,
        group_by: GroupBy,
        cohort: Cohort,
        as_of: datetime | None,
        *,
        at: datetime | None = None,
    ) -> dict[str | None, Figures]:
        """Figures per group of the problems in `cohort` and scope, as of `as_of` (None: their
        current intervals, judged at `at`, default now). The current figures of whole months
        come from the tallies (`app.projections.tallies`), the rest from the temporal model."""
        at = at or as_of or self.clock.now()
        rules = await self.rules.current()
        window = rules.response_window_days
        cutoff = self.response_cutoff(at, window)
        if as_of is None:
            found = await self._from_tallies(scope, group_by, cohort, at, window, cutoff)
            if found is not None:
                return found
        elif as_of < start_of_day(self.calendar.business_date(self.clock.now()), self.tz):
            return await self._settled_figures(scope, group_by, cohort, as_of, window, cutoff)
        elif at == as_of:
            return await self._as_of(scope, group_by, cohort, as_of, window, cutoff)
        return await self._from_history(scope, group_by, cohort, as_of, at, window, cutoff)

    async def _as_of(
        self,
        scope: sa.ColumnElement[bool] | None,
        group_by: GroupBy,
        cohort: Cohort,
        as_of: datetime,
        window: int,
        cutoff: datetime,
    ) -> dict[str | None, Figures]:
        """Figures as of a past instant, judged then: derived from the present (`_derived`), or
        where that cannot answer or would read more (`_derives`), the intervals then in force."""
        found = (
            await self._derived(scope, group_by, cohort, as_of, window, cutoff)
            if self._derives(cohort, as_of)
            else None
        )
        if found is None:
            return await self._from_history(scope, group_by, cohort, as_of, as_of, window, cutoff)
        return found

    async def _derived(
        self,
        scope: sa.ColumnElement[bool] | None,
        group_by: GroupBy,
        cohort: Cohort,
        as_of: datetime,
        window: int,
        cutoff: datetime,
    ) -> dict[str | None, Figures] | None:
        """Figures as of a past instant T, judged at T: the current figures (the tallies) judged at
        T, less the current intervals begun after T, plus the intervals in force at T that have
        ended since. The last two are ranges at the recent end of their indexes, where the
        intervals in force at T are an entry per problem. None where the tallies cannot answer
        (`_tallied`)."""
        if self._tallied(scope, cohort) is None:
            return None
        tallied, begun, ended = await asyncio.gather(
            self._from_tallies(scope, group_by, cohort, as_of, window, cutoff),
            self._from_history(scope, group_by, cohort, None, as_of, window, cutoff, begun_after(as_of)),
            self._from_history(scope, group_by, cohort, None, as_of, window, cutoff, ended_across(as_of)),
        )
        if tallied is None:
            return None
        for k, figures in begun.items():
            tallied.setdefault(k, Figures()).subtract(figures)
        for k, figures in ended.items():
            tallied.setdefault(k, Figures()).add(figures)
        return {k: f for k, f in tallied.items() if f.received}

    def _derives(self, cohort: Cohort, as_of: datetime) -> bool:
        """Whether to derive figures as of `as_of` from the present, which reads what changed after
        it, rather than read the intervals then in force of the problems received up to it: the
        one covering the shorter time (every problem's history, for a cohort without a start)."""
        end = as_of if cohort.end is None else min(cohort.end, as_of)
        return cohort.start is None or self.clock.now() - as_of < end - cohort.start

    async def _settled_figures(
        self,
        scope: sa.ColumnElement[bool] | None,
        group_by: GroupBy,
        cohort: Cohort,
        as_of: datetime,
        window: int,
        cutoff: datetime,
    ) -> dict[str | None, Figures]:
        """Figures as of a past day, remembered while the past they describe stays unchanged
        (`app.projections.settled`)."""
        scope_key = "" if scope is None else str(scope.compile(compile_kwargs={"literal_binds": True}))
        key = (scope_key, group_by, cohort, as_of, window, cutoff)
        digest = settled_digest(key)
        async with self.db.read() as conn:
            changed = await Settled.changed_since(conn, as_of)
            found = self.settled.get(key, changed)
            if found is None and (stored := await Settled.stored(conn, digest, changed)) is not None:
                found = _figures_from_json(stored[1])
                self.settled.put(key, stored[0], found)
            position = await Settled.position(conn) if found is None else 0
        if found is None:
            found = await self._as_of(scope, group_by, cohort, as_of, window, cutoff)
            self.settled.put(key, position, found)
            async with self.db.transaction() as conn:
                await Settled.store(conn, digest, position, _figures_json(found), self.clock.now())
        return {k: replace(f) for k, f in found.items()}

    async def _from_history(
        self,
        scope: sa.ColumnElement[bool] | None,
        group_by: GroupBy,
        cohort: Cohort,
        as_of: datetime | None,
        at: datetime,
        window: int,
        cutoff: datetime,
        intervals: sa.ColumnElement[bool] | None = None,
    ) -> dict[str | None, Figures]:
        """Figures per group over the intervals in force at `as_of` (None: the current ones), or
        over `intervals` if given, judged at `at`."""
        key = group_key(group_by).label("key")
        valid = valid_at(as_of) if intervals is None else intervals
        stmt = (
            sa.select(key, *figures_columns(at, window, cutoff))
            .where(valid, problem_history.c.status != "withdrawn", *cohort.conditions())
            .group_by(key)
        )
        if scope is not None:
            stmt = stmt.where(scope)
        async with self.db.read() as conn:
            rows = (await conn.execute(stmt)).all()
        names = {f.name for f in fields(Figures)}
        return {r.key: Figures(**{n: int(getattr(r, n)) for n in names}) for r in rows}

    async def _from_tallies(
        self,
        scope: sa.ColumnElement[bool] | None,
        group_by: GroupBy,
        cohort: Cohort,
        at: datetime,
        window: int,
        cutoff: datetime,
    ) -> dict[str | None, Figures] | None:
        """The current figures with the whole months of the cohort read from the tallies, or
        None where they cannot answer (`_tallied`)."""
        found = self._tallied(scope, cohort)
        if found is None:
            return None
        district, months, edges = found
        t = problem_tallies.c
        tally_key = _tally_key(group_by)
        conditions = _tally_conditions(months, cohort, district)
        sums = [sa.func.sum(t[c]).label(c) for c in COUNTS]
        joint = sa.func.sum(sa.case((t.joint, t.received), else_=0)).label("joint")
        whole = Cohort(*months, cohort.district_id, cohort.category, cohort.joint)
        async with self.db.read() as conn:
            tallied = (
                await conn.execute(sa.select(tally_key, *sums, joint).where(*conditions).group_by(tally_key))
            ).all()
            corrections = {
                r.key: r
                for r in await conn.execute(self._corrections(scope, group_by, whole, at, window, cutoff))
            }
        within = RESPONDED[: window + 1]
        out: dict[str | None, Figures] = {}
        for r in tallied:
            k = r.key or None
            c = corrections.get(k)
            out[k] = Figures(
                received=int(r.received),
                solved=int(r.solved),
                solved_on_the_spot=int(r.solved_on_the_spot),
                on_time=int(r.on_time),
                feedback_count=int(r.feedback_count),
                satisfied=int(r.satisfied),
                response_due=int(r.assigned_responded)
                + int(r.assigned_unanswered)
                - (int(c.in_window) if c else 0),
                responded=sum(int(getattr(r, d)) for d in within) + (int(c.answered_beyond) if c else 0),
                open=int(r.open),
                overdue=int(r.open_with_deadline) - (int(c.not_due) if c else 0),
                returned=int(r.returned),
                joint=int(r.joint),
            )
        for edge in edges:
            part = await self._from_history(scope, group_by, edge, None, at, window, cutoff)
            for k, figures in part.items():
                out.setdefault(k, Figures()).add(figures)
        return out

    def _tallied(
        self, scope: sa.ColumnElement[bool] | None, cohort: Cohort
    ) -> tuple[str | None, tuple[datetime | None, datetime | None], list[Cohort]] | None:
        """What the tallies answer of `cohort` in `scope`: (its district or None for all, its whole
        months, the rest of it as cohorts for the temporal model); None where they cannot (a scope
        other than a district; no whole month)."""
        district = _district_scope(scope)
        if district is False:
            return None
        months, edges = self._months(cohort)
        return None if months is None else (district, months, edges)

    def _months(
        self, cohort: Cohort, before: datetime | None = None
    ) -> tuple[tuple[datetime | None, datetime | None] | None, list[Cohort]]:
        """The whole months of `cohort` (as `[first, last)` month starts, None for unbounded;
        only months starting before `before` if given), and the rest of it as cohorts for the
        temporal model. (None, [cohort]): no whole month."""
        tz = self.tz
        first = first_month_from(cohort.start, tz) if cohort.start is not None else None
        last = month_start(cohort.end, tz) if cohort.end is not None else None
        if before is not None and (last is None or before < last):
            last = before
        if first is not None and last is not None and first >= last:
            return None, [cohort]
        rest = []
        if cohort.start is not None and first is not None and cohort.start < first:
            rest.append(replace(cohort, end=first))
        if last is not None and (cohort.end is None or last < cohort.end):
            rest.append(replace(cohort, start=last))
        return (first, last), rest

    def _corrections(
        self,
        scope: sa.ColumnElement[bool] | None,
        group_by: GroupBy,
        cohort: Cohort,
        at: datetime,
        window: int,
        cutoff: datetime,
    ) -> sa.Select[Any]:
        """Per group, what the tallies' counts need taken away or added at `at`, each a short
        range at the recent end of its partial index: the open problems whose deadline is still
        ahead (not overdue), the unanswered assignments still within their window (not due yet),
        and with a window beyond the tallied days the answers given in between."""
        h = problem_history.c
        key = group_key(group_by).label("key")
        common = [*cohort.conditions(), *([scope] if scope is not None else [])]
        one, zero = sa.literal(1), sa.literal(0)
        arms = [
            sa.select(key, one.label("d"), zero.label("w"), zero.label("b")).where(
                open_now(), h.deadline >= at, *common
            ),
            sa.select(key, zero, one, zero).where(unanswered_now(), h.assigned_at >= cutoff, *common),
        ]
        if window > TALLIED_RESPONSE_DAYS:
            arms.append(
                sa.select(key, zero, zero, one).where(
                    answered_now(),
                    h.response_days > TALLIED_RESPONSE_DAYS,
                    h.response_days <= window,
                    *common,
                )
            )
        both = sa.union_all(*arms).subquery()
        return sa.select(
            both.c.key,
            sa.func.sum(both.c.d).label("not_due"),
            sa.func.sum(both.c.w).label("in_window"),
            sa.func.sum(both.c.b).label("answered_beyond"),
        ).group_by(both.c.key)

    async def names(self, group_by: GroupBy, keys: Sequence[str | None]) -> dict[str, tuple[str, str | None]]:
        """Display names of group keys (and a unit's district)."""
        wanted = sorted(k for k in keys if k is not None)
        if group_by is GroupBy.tier:
            return {k: (TIER_NAMES.get(k, k), None) for k in wanted}
        if not wanted:
            return {}
        async with self.db.read() as conn:
            if group_by is GroupBy.unit:
                rows = await conn.execute(
                    sa.select(units.c.id, units.c.name, units.c.district_id).where(units.c.id.in_(wanted))
                )
                return {r.id: (r.name, r.district_id) for r in rows}
            if group_by is GroupBy.district:
                rows = await conn.execute(
                    sa.select(units.c.district_id, units.c.name).where(
                        units.c.kind == "district_dispatch_room", units.c.district_id.in_(wanted)
                    )
                )
                return {r.district_id: (r.name, r.district_id) for r in rows}
            rows = await conn.execute(
                sa.select(categories.c.code, categories.c.name).where(categories.c.code.in_(wanted))
            )
            return {r.code: (r.name, None) for r in rows}

    async def groups(
        self, group_by: GroupBy, by_key: Mapping[str | None, Figures]
    ) -> tuple[list[Group], Figures]:
        names = await self.names(group_by, list(by_key))
        total = Figures()
        out: list[Group] = []
        for key, figures in by_key.items():
            total.add(figures)
            name, district = names.get(key, (None, None)) if key is not None else (None, None)
            out.append(Group(key, name, figures, district if group_by is GroupBy.unit else None))
        order = {t.value: i for i, t in enumerate(TIER_ORDER)}
        out.sort(
            key=lambda g: (
                (order.get(g.key or "", 99), g.key or "") if group_by is GroupBy.tier else (g.key or "",)
            )
        )
        return out, total

    # -- the endpoints ---------------------------------------------------------------------

    async def solve_rates(
        self, caller: Caller, group_by: GroupBy, cohort: Cohort, as_of: datetime | None
    ) -> dict[str, Any]:
        if cohort.start and cohort.end and cohort.start >= cohort.end:
            raise AppError("invalid_range", "from must lie before to")
        at = self.instant(as_of)
        rules = await self.rules.current()
        by_key = await self.figures(await self.scope(caller), group_by, cohort, as_of and at, at=at)
        groups, total = await self.groups(group_by, by_key)
        return {
            "group_by": group_by.value,
            "from": self.local(cohort.start),
            "to": self.local(cohort.end),
            "as_of": self.local(at),
            "response_window_days": rules.response_window_days,
            "groups": [g.as_dict() for g in groups],
            "total": {"key": None, "name": "合计", **total.as_dict()},
        }

    async def aging(
        self,
        caller: Caller,
        basis: Basis,
        group_by: GroupBy | None,
        cohort: Cohort,
        as_of: datetime | None,
        limit: int,
    ) -> dict[str, Any]:
        at = self.instant(as_of)
        h = problem_history.c
        e4, e8, e16, e31 = self.age_edges(at, basis)
        bucket = sa.case(
            (h.submitted_at < e31, "31+"),
            (h.submitted_at < e16, "16-30"),
            (h.submitted_at < e8, "8-15"),
            (h.submitted_at < e4, "4-7"),
            else_="0-3",
        ).label("bucket")
        key = (group_key(group_by) if group_by else sa.literal(None, sa.String)).label("key")
        active = h.status.in_(ACTIVE_STATUSES)
        now = open_now() if as_of is None else sa.and_(valid_at(at), active)
        conditions = [now, *cohort.conditions()]
        scope = await self.scope(caller)
        if scope is not None:
            conditions.append(scope)
        # The open problems now, judged at `at`: their partial index, and in all or one district
        # the tallies for the months before the one of the 31-day edge (31+ throughout,
        # `_aging_tallied`). As of a past instant, less those begun since and plus those open
        # then that have ended since (as `_as_of` does for the solve rates), or for a cohort
        # shorter than the time since, the intervals in force then directly.
        derived = as_of is None or self._derives(cohort, at)
        district = _district_scope(scope) if derived else False
        months: tuple[datetime | None, datetime | None] | None = None
        rest = [cohort]
        if district is not False:
            months, rest = self._months(cohort, month_start(e31, self.tz))

        def counts(*where: sa.ColumnElement[bool]) -> sa.Select[Any]:
            return (
                sa.select(key, bucket, sa.func.count().label("n"), _count(h.deadline < at).label("overdue"))
                .where(*where, *([scope] if scope is not None else []))
                .group_by(key, bucket)
            )

        async def present() -> list[Any]:
            rows: list[Any] = []
            async with self.db.read() as conn:
                for part in rest:
                    rows += (
                        await conn.execute(counts(open_now() if derived else now, *part.conditions()))
                    ).all()
                if months is not None and district is not False:
                    rows += await self._aging_tallied(
                        conn, scope, key, group_by, cohort, months, district, at
                    )
            return rows

        async def counted(sign: int, *where: sa.ColumnElement[bool]) -> list[Any]:
            async with self.db.read() as conn:
                found = await conn.execute(counts(*where, *cohort.conditions()))
                return [
                    SimpleNamespace(key=r.key, bucket=r.bucket, n=sign * r.n, overdue=sign * r.overdue)
                    for r in found
                ]

        # Each part on its own connection, side by side.
        parts = [present()]
        if as_of is not None and derived:
            parts += [counted(-1, open_now(), begun_after(at)), counted(1, ended_across(at), active)]
        *found, oldest = await asyncio.gather(
            *parts, self.items(conditions, (h.submitted_at, h.problem_id), limit, at)
        )
        rows = [r for part in found for r in part]
        by_key: dict[str | None, dict[str, Any]] = {}
        for r in rows:
            entry = by_key.setdefault(r.key, {"open": 0, "overdue": 0, "buckets": dict.fromkeys(BUCKETS, 0)})
            entry["open"] += r.n
            entry["overdue"] += r.overdue
            entry["buckets"][r.bucket] += r.n
        by_key = {k: v for k, v in by_key.items() if v["open"]}
        names = await self.names(group_by, list(by_key)) if group_by else {}
        total: dict[str, Any] = {"open": 0, "overdue": 0, "buckets": dict.fromkeys(BUCKETS, 0)}
        groups = []
        for k in sorted(by_key, key=lambda x: x or ""):
            entry = by_key[k]
            total["open"] += entry["open"]
            total["overdue"] += entry["overdue"]
            for b in BUCKETS:
                total["buckets"][b] += entry["buckets"][b]
            if group_by is not None:
                groups.append({"key": k, "name": names.get(k, (None, None))[0] if k else None, **entry})
        if group_by is GroupBy.tier:
            order = {t.value: i for i, t in enumerate(TIER_ORDER)}
            groups.sort(key=lambda g: order.get(g["key"] or "", 99))
        return {
            "basis": basis.value,
            "group_by": group_by.value if group_by else None,
            "as_of": self.local(at),
            "buckets": list(BUCKETS),
            "groups": groups,
            "total": {"key": None, "name": "合计", **total},
            "oldest": oldest,
        }

    async def _aging_tallied(
        self,
        conn: Any,
        scope: sa.ColumnElement[bool] | None,
        key: sa.ColumnElement[Any],
        group_by: GroupBy | None,
        cohort: Cohort,
        months: tuple[datetime | None, datetime | None],
        district: str | None,
        at: datetime,
    ) -> list[Any]:
        """(key, "31+", open, overdue) per group (`key`: its expression on `problem_history`) for
        the problems of whole months older than the 31-day edge: their open problems from the
        tallies, the overdue among them less those whose deadline is still ahead."""
        t = problem_tallies.c
        h = problem_history.c
        tally_key = _tally_key(group_by) if group_by else sa.literal(None, sa.String).label("key")
        tallied = await conn.execute(
            sa.select(tally_key, sa.func.sum(t.open).label("n"), sa.func.sum(t.open_with_deadline).label("d"))
            .where(*_tally_conditions(months, cohort, district))
            .group_by(tally_key)
        )
        whole = replace(cohort, start=months[0], end=months[1])
        ahead = sa.select(key, sa.func.count().label("n")).where(
            open_now(), h.deadline >= at, *whole.conditions(), *([scope] if scope is not None else [])
        )
        not_due = {r.key: int(r.n) for r in await conn.execute(ahead.group_by(key))}
        return [
            SimpleNamespace(
                key=r.key or None, bucket="31+", n=int(r.n), overdue=int(r.d) - not_due.get(r.key or None, 0)
            )
            for r in tallied
        ]

    async def items(
        self,
        conditions: list[sa.ColumnElement[bool]],
        order: tuple[sa.ColumnElement[Any], ...],
        limit: int,
        at: datetime,
    ) -> list[dict[str, Any]]:
        """Problems matching `conditions` on the temporal model, with what a list of them shows
        (the aging's oldest, the report's overdue list), judged at `at`."""
        if not limit:
            return []
        h = problem_history.c
        stmt = (
            sa.select(
                h.problem_id,
                h.tier,
                h.status,
                h.holder_unit_id,
                h.deadline,
                h.submitted_at,
                h.district_id,
                h.category,
                problem_view.c.title,
                problem_view.c.enterprise_name,
            )
            .join(problem_view, problem_view.c.id == h.problem_id)
            .where(*conditions)
            .order_by(*order)
            .limit(limit)
        )
        async with self.db.read() as conn:
            rows = (await conn.execute(stmt)).all()
        holders = await self.names(GroupBy.unit, [r.holder_unit_id for r in rows])
        calendar = self.calendar
        out = []
        for r in rows:
            overdue = r.status in ACTIVE_STATUSES and r.deadline is not None and r.deadline < at
            out.append(
                {
                    "id": r.problem_id,
                    "title": r.title,
                    "enterprise_name": r.enterprise_name,
                    "district_id": r.district_id,
                    "category": r.category,
                    "tier": r.tier,
                    "status": r.status,
                    "holder_unit_id": r.holder_unit_id,
                    "holder_name": holders.get(r.holder_unit_id, (None, None))[0]
                    if r.holder_unit_id
                    else None,
                    "submitted_at": self.local(r.submitted_at),
                    "age_days": calendar.calendar_days_elapsed(r.submitted_at, at),
                    "age_working_days": calendar.working_days_elapsed(r.submitted_at, at),
                    "deadline": self.local(r.deadline),
                    "overdue": overdue,
                    "overdue_days": calendar.calendar_days_elapsed(r.deadline, at) if overdue else 0,
                    "overdue_working_days": calendar.working_days_elapsed(r.deadline, at) if overdue else 0,
                }
            )
        return out

    def local(self, value: datetime | None) -> datetime | None:
        return value.astimezone(self.tz) if value is not None else None


def _tally_key(group_by: GroupBy) -> sa.ColumnElement[Any]:
    """`group_key` on the tallies."""
    t = problem_tallies.c
    columns = {
        GroupBy.tier: t.tier_key,
        GroupBy.unit: t.unit_key,
        GroupBy.district: t.district_id,
        GroupBy.category: t.category,
    }
    return columns[group_by].label("key")


def _tally_conditions(
    months: tuple[datetime | None, datetime | None], cohort: Cohort, district: str | None
) -> list[sa.ColumnElement[bool]]:
    """The tally rows of these months, in the cohort's district, category and jointness."""
    t = problem_tallies.c
    first, last = months
    out: list[sa.ColumnElement[bool]] = []
    if first is not None:
        out.append(t.month >= first)
    if last is not None:
        out.append(t.month < last)
    for column, value in (
        (t.district_id, cohort.district_id),
        (t.district_id, district),
        (t.category, cohort.category),
    ):
        if value:
            out.append(column == value)
    if cohort.joint is not None:
        out.append(t.joint.is_(cohort.joint))
    return out


def _district_scope(scope: sa.ColumnElement[bool] | None) -> str | Literal[False] | None:
    """The district a scope on `problem_history` is limited to: None for no limit, the district
    for `district_id = …`, False for any other scope (the tallies cannot say)."""
    if scope is None:
        return None
    if (
        isinstance(scope, BinaryExpression)
        and scope.operator is operators.eq
        and scope.left is problem_history.c.district_id
        and isinstance(scope.right, sa.BindParameter)
        and isinstance(scope.right.value, str)
    ):
        return str(scope.right.value)
    return False


_FIGURE_NAMES = tuple(f.name for f in fields(Figures))


def settled_digest(key: tuple[Any, ...]) -> str:
    """A stable name for a question about the past (`_settled_figures`' key), for every process."""
    scope_key, group_by, cohort, as_of, window, cutoff = key
    parts = [
        scope_key,
        group_by.value,
        [None if v is None else v.isoformat() if isinstance(v, datetime) else v for v in astuple(cohort)],
        as_of.isoformat(),
        window,
        cutoff.isoformat(),
    ]
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _figures_json(found: Mapping[str | None, Figures]) -> list[Any]:
    return [[k, [getattr(f, n) for n in _FIGURE_NAMES]] for k, f in found.items()]


def _figures_from_json(value: list[Any]) -> dict[str | None, Figures]:
    return {k: Figures(**dict(zip(_FIGURE_NAMES, counts, strict=True))) for k, counts in value}
