"""Unit rankings per period with the two supervision rules of SPEC §1.

* **Ranking**: the lead units of one tier (service groups and teams, district function groups, or
  city departments) ranked by a score of the problems received in the period, as the period
  stood at its end (or now, while it runs): solve rate, on-time rate or satisfaction rate.
  Equal scores share a rank (1, 2, 2, 4).
* **Bijie's rule** (毕节): a unit that was last while below the target in 2 consecutive periods
  gets a yellow warning, in 3 a red one. The evidence is each of those periods' figures.
* **Jiangshan's rule** (江山): each unit's progress is `ahead` (score at least target + margin),
  `normal` (at least the target), `lagging` (below it) or `no_progress` (nothing solved).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa

from app.core.security import SYSTEM, Caller, Role
from app.directory.tables import units
from app.projections.periods import Period, PeriodKind
from app.projections.settled import Settled
from app.projections.stats import Cohort, Figures, GroupBy, Statistics
from app.routing.tree import LEAD_KINDS, Tier, UnitKind

WARNING_PERIODS = 3  # red after three periods; the ranking looks back that far
# The dispatch cadence's periods whose closed figures the background work prepares (SPEC §1:
# 一旬一调度, 一月一通报, and the quarter's review); halves and years are computed when asked.
PREPARED_KINDS = (PeriodKind.dekad, PeriodKind.month, PeriodKind.quarter)

log = logging.getLogger(__name__)


class Score(StrEnum):
    solve_rate = "solve_rate"
    on_time_rate = "on_time_rate"
    satisfaction_rate = "satisfaction_rate"


class Progress(StrEnum):
    ahead = "ahead"
    normal = "normal"
    lagging = "lagging"
    no_progress = "no_progress"


@dataclass
class Standing:
    """A unit in one period's ranking."""

    unit_id: str
    name: str | None
    district_id: str | None
    figures: Figures
    score: float | None
    rank: int | None = None
    last: bool = False

    def below(self, target: float) -> bool:
        return self.score is not None and self.score < target


@dataclass
class Ranking:
    period: Period
    as_of: datetime
    standings: dict[str, Standing] = field(default_factory=dict)

    @property
    def ranked(self) -> int:
        return sum(1 for s in self.standings.values() if s.rank is not None)


def score_of(figures: Figures, score: Score) -> float | None:
    value: float | None = getattr(figures, score.value)
    return value


def classify(standing: Standing, target: float, margin: float) -> Progress | None:
    if standing.figures.received == 0:
        return None
    if standing.figures.solved == 0:
        return Progress.no_progress
    if standing.score is None:
        return None
    if standing.score >= round(target + margin, 6):
        return Progress.ahead
    if standing.score >= target:
        return Progress.normal
    return Progress.lagging


def rank(standings: dict[str, Standing]) -> None:
    """Competition ranking by score (equal scores share a rank); the last are the units with the
    lowest score, when not every ranked unit has the same one."""
    scored = sorted((s for s in standings.values() if s.score is not None), key=lambda s: -(s.score or 0))
    for s in scored:
        s.rank = 1 + sum(1 for o in scored if (o.score or 0) > (s.score or 0))
    if len(scored) >= 2 and scored[0].score != scored[-1].score:
        for s in scored:
            s.last = s.score == scored[-1].score


@dataclass(frozen=True)
class UnitInfo:
    name: str
    district_id: str | None
    kind: str


@dataclass
class PeriodFigures:
    """Every unit's figures for the problems received in a period, as it stood at `as_of`."""

    period: Period
    as_of: datetime
    by_unit: dict[str | None, Figures]

    def ranking(self, tier: Tier, score: Score, info: dict[str, UnitInfo]) -> Ranking:
        kinds = {k.value for k in LEAD_KINDS[tier]}
        out = Ranking(self.period, self.as_of)
        for unit_id, figures in self.by_unit.items():
            unit = info.get(unit_id or "")
            if unit_id is None or unit is None or unit.kind not in kinds:
                continue
            out.standings[unit_id] = Standing(
                unit_id, unit.name, unit.district_id, figures, score_of(figures, score)
            )
        rank(out.standings)
        return out


class Rankings:
    def __init__(self, stats: Statistics) -> None:
        self.stats = stats

    async def period_figures(
        self, scope: sa.ColumnElement[bool] | None, period: Period, as_of: datetime, *, present: bool = False
    ) -> PeriodFigures:
        """The period as it stood at its end, or at `as_of` if that comes first (`present`:
        `as_of` is now, so a period still running is read from the current state)."""
        tz = self.stats.tz
        at = min(period.end(tz), as_of)
        if period.start(tz) > at:
            return PeriodFigures(period, at, {})
        cohort = Cohort(period.start(tz), period.end(tz))
        current = present and at == as_of
        by_unit = await self.stats.figures(scope, GroupBy.unit, cohort, None if current else at, at=at)
        return PeriodFigures(period, at, by_unit)

    async def history(
        self, scope: sa.ColumnElement[bool] | None, period: Period, as_of: datetime, *, present: bool = False
    ) -> list[PeriodFigures]:
        """The period and the ones before it that the warnings look back over, read side by
        side (each is one query on its own connection: a cold month as of its end is an index
        range of its own, so three run in about the time of one on a database with idle cores)."""
        periods = [period]
        while len(periods) < WARNING_PERIODS:
            periods.append(periods[-1].previous())
        return list(
            await asyncio.gather(*(self.period_figures(scope, p, as_of, present=present) for p in periods))
        )

    async def prepare_closed(self, now: datetime, kinds: Sequence[PeriodKind] = PREPARED_KINDS) -> int:
        """Compute, if no process has yet, the figures that rankings and bulletins read of the
        closed periods (the last `WARNING_PERIODS` of each kind in `kinds`, as of their ends), for
        the whole city and for each district's dispatch room, so that nobody waits for them on a
        first question (`app.projections.settled`). Returns how many it read."""
        async with self.stats.db.read() as conn:
            room = UnitKind.district_dispatch_room.value
            rooms = sa.select(units.c.district_id).where(units.c.kind == room)
            districts = sorted((await conn.execute(rooms)).scalars())
        dispatchers = (Caller(f"prepare-{d}", d, Role.dispatcher, district_id=d) for d in districts)
        callers = [SYSTEM, *dispatchers]
        async with self.stats.db.transaction() as conn:
            await Settled.prune(conn, now)
        today = self.stats.calendar.business_date(now)
        count = 0
        for caller in callers:
            scope = await self.stats.scope(caller)
            for kind in kinds:
                period = Period.containing(kind, today).previous()
                for _ in range(WARNING_PERIODS):
                    await self.period_figures(scope, period, now)
                    period = period.previous()
                    count += 1
        return count

    async def run_preparer(self, stop: asyncio.Event, interval: float) -> None:
        """Background work: `prepare_closed` now and then (each period is computed once, by
        whichever process gets there first; later passes find it stored)."""
        while not stop.is_set():
            try:
                await self.prepare_closed(self.stats.clock.now())
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("preparing the closed periods' figures failed; retrying later")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)

    async def unit_info(self, history: list[PeriodFigures]) -> dict[str, UnitInfo]:
        keys = sorted({k for h in history for k in h.by_unit if k is not None})
        if not keys:
            return {}
        async with self.stats.db.read() as conn:
            rows = (
                await conn.execute(
                    sa.select(units.c.id, units.c.name, units.c.district_id, units.c.kind).where(
                        units.c.id.in_(keys)
                    )
                )
            ).all()
        return {r.id: UnitInfo(r.name, r.district_id, r.kind) for r in rows}

    async def rankings(
        self,
        caller: Caller,
        period: Period,
        *,
        tier: Tier,
        score: Score,
        target: float,
        margin: float,
        as_of: datetime | None,
    ) -> dict[str, Any]:
        at = self.stats.instant(as_of)
        history = await self.history(await self.stats.scope(caller), period, at, present=as_of is None)
        info = await self.unit_info(history)
        rankings = [h.ranking(tier, score, info) for h in history]
        return render(rankings, tier=tier, score=score, target=target, margin=margin, stats=self.stats)


def render(
    history: list[Ranking], *, tier: Tier, score: Score, target: float, margin: float, stats: Statistics
) -> dict[str, Any]:
    """The ranking of `history[0]` with warnings that look back over the earlier periods."""
    current = history[0]

    def evidence(unit_id: str) -> list[dict[str, Any]]:
        out = []
        for r in history:
            s = r.standings.get(unit_id)
            if s is None or not (s.last and s.below(target)):
                break
            out.append(
                {
                    "period": r.period.code,
                    "label": r.period.label,
                    "as_of": stats.local(r.as_of),
                    "rank": s.rank,
                    "ranked": r.ranked,
                    "score": s.score,
                    "target": target,
                    "received": s.figures.received,
                    "solved": s.figures.solved,
                }
            )
        return out

    groups = []
    warnings = []
    total = Figures()
    ordered = sorted(
        current.standings.values(),
        key=lambda s: (s.rank is None, s.rank or 0, -s.figures.received, s.unit_id),
    )
    for s in ordered:
        total.add(s.figures)
        streak = evidence(s.unit_id)
        warning = "red" if len(streak) >= 3 else "yellow" if len(streak) == 2 else None
        progress = classify(s, target, margin)
        groups.append(
            {
                "key": s.unit_id,
                "name": s.name,
                "district_id": s.district_id,
                "rank": s.rank,
                "score": s.score,
                "last": s.last,
                "below_target": s.below(target),
                "progress": progress.value if progress else None,
                "warning": warning,
                "evidence": streak if warning else [],
                **s.figures.as_dict(),
            }
        )
        if warning:
            warnings.append(
                {
                    "unit_id": s.unit_id,
                    "name": s.name,
                    "level": warning,
                    "rule": "bijie",
                    "reason": f"last and below the target ({target:.0%}) "
                    f"in {len(streak)} consecutive periods",
                    "evidence": streak,
                }
            )
    return {
        "period": period_json(current.period, stats),
        "as_of": stats.local(current.as_of),
        "tier": tier.value,
        "score": score.value,
        "target": target,
        "ahead_margin": margin,
        "previous_periods": [
            {**period_json(r.period, stats), "as_of": stats.local(r.as_of), "ranked": r.ranked}
            for r in history[1:]
        ],
        "groups": groups,
        "total": {"key": None, "name": "合计", **total.as_dict()},
        "warnings": warnings,
    }


def period_json(period: Period, stats: Statistics) -> dict[str, Any]:
    return {
        "code": period.code,
        "kind": period.kind.value,
        "label": period.label,
        "from": stats.local(period.start(stats.tz)),
        "to": stats.local(period.end(stats.tz)),
    }
