"""What the board shows, computed by the services behind the statistics API (`Statistics`,
`Rankings`, `DispatchReports`), never recomputed here: each figure on the board is the figure
the API gives the same caller (`tests/board/` compares them).

* headline: `/v1/stats/solve-rates?from=<period start>&to=<period end>` (total), now; and the
  same for the previous period as it stood at its end (the change);
* flow: the dispatch report's `flow` for the period;
* by district: `/v1/stats/solve-rates?group_by=district` for the period;
* by unit and the rankings: `/v1/stats/rankings?period=…&tier=…`;
* aging: `/v1/stats/aging?basis=…` (every open problem in scope, whatever the period);
* overdue: the dispatch report's overdue list, now (longest overdue first).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from app.board.charts import Bar, BarChart, FlowDiagram, Histogram, bar_chart, flow_diagram, histogram
from app.board.i18n import Lang, Words, period_label
from app.core.security import Caller
from app.core.settings import Settings
from app.directory.tables import units
from app.events.store import RecordedEvent
from app.projections.periods import Period, PeriodKind
from app.projections.rankings import Rankings, Score, Standing, classify
from app.projections.reports import DispatchReports
from app.projections.runner import checkpoints
from app.projections.stats import BUCKETS, Basis, Cohort, Figures, GroupBy, Statistics
from app.routing.tree import Tier, UnitKind

HISTORY = "problem_history"  # the follower the figures come from
OVERDUE_ROWS = 10
PANELS = ("headline", "flow", "districts", "units", "aging", "overdue", "rankings")
# Which way is good for each headline figure: +1 up, -1 down, 0 neither.
HEADLINE = (
    ("received", 0, False),
    ("solved", 1, False),
    ("solve_rate", 1, True),
    ("solved_on_the_spot", 1, False),
    ("on_time_rate", 1, True),
    ("satisfaction_rate", 1, True),
    ("open", -1, False),
    ("overdue", -1, False),
)


@dataclass(frozen=True)
class View:
    """One board: who looks (already narrowed to the district asked for), at which period."""

    caller: Caller
    period: Period
    tier: Tier
    basis: Basis
    lang: Lang
    district: str | None
    can_switch: bool = False  # the key sees the whole city, so the board offers every district

    @property
    def words(self) -> Words:
        return Words(self.lang)


def current_period(now: datetime, tz: Any) -> Period:
    return Period.containing(PeriodKind.month, now.astimezone(tz).date())


def percent(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value * 100:.{digits}f}%"


def tile(name: str, good: int, is_rate: bool, now: dict[str, Any], before: dict[str, Any] | None,
         words: Words) -> dict[str, Any]:  # fmt: skip
    value = now[name]
    shown = percent(value) if is_rate else str(value)
    delta: float | None = None
    if before is not None and value is not None and before.get(name) is not None:
        delta = value - before[name]
    if delta is None:
        change, trend = words.no_previous, "neutral"
    else:
        arrow = "▲" if delta > 0 else "▼" if delta < 0 else "＝"
        points = " 个百分点" if words.lang is Lang.zh else " pt"
        amount = f"{abs(delta) * 100:.1f}{points}" if is_rate else f"{abs(int(delta))}"
        change = f"{arrow} {amount}" if delta else f"{arrow} 0"
        trend = "neutral" if not delta or not good else ("good" if (delta > 0) == (good > 0) else "bad")
    return {
        "name": name,
        "label": getattr(words, name),
        "value": value,
        "shown": shown,
        "change": change,
        "trend": trend,
    }


class Board:
    def __init__(
        self, stats: Statistics, rankings: Rankings, reports: DispatchReports, settings: Settings
    ) -> None:
        self.stats = stats
        self.rankings = rankings
        self.reports = reports
        self.settings = settings

    @property
    def tz(self) -> Any:
        return self.stats.tz

    def now(self) -> datetime:
        return self.stats.clock.now()

    async def districts(self) -> list[tuple[str, str]]:
        """(code, name) of every district with a dispatch room, for the district switch."""
        async with self.stats.db.read() as conn:
            rows = await conn.execute(
                sa.select(units.c.district_id, units.c.name)
                .where(units.c.kind == UnitKind.district_dispatch_room.value)
                .order_by(units.c.district_id)
            )
            return [(r.district_id, short_district(r.name)) for r in rows]

    async def history_checkpoint(self) -> int:
        """How far the temporal model (where the figures come from) has read the feed."""
        async with self.stats.db.read() as conn:
            found = await conn.execute(sa.select(checkpoints.c.position).where(checkpoints.c.name == HISTORY))
            return int(found.scalar() or 0)

    def panels(self, view: View) -> Panels:
        return Panels(self, view)


def short_district(room_name: str) -> str:
    """The district's name from its room's: 南关区助企行动调度室 → 南关区."""
    name = room_name.removesuffix("调度室") or room_name
    cut = name.find("区")
    return name[: cut + 1] if cut > 0 else name


class Panels:
    """The data of each panel of one board request (computed on demand, each service call once)."""

    def __init__(self, board: Board, view: View) -> None:
        self.board = board
        self.view = view
        self._memo: dict[str, Any] = {}

    async def _once(self, key: str, compute: Callable[[], Awaitable[Any]]) -> Any:
        if key not in self._memo:
            self._memo[key] = await compute()
        return self._memo[key]

    @property
    def cohort(self) -> Cohort:
        tz = self.board.tz
        return Cohort(self.view.period.start(tz), self.view.period.end(tz))

    @property
    def target(self) -> float:
        return self.board.settings.ranking_target

    async def get(self, name: str) -> dict[str, Any]:
        method: Callable[[], Awaitable[dict[str, Any]]] = getattr(self, f"panel_{name}")
        return await method()

    # -- the panels ------------------------------------------------------------------------

    async def panel_headline(self) -> dict[str, Any]:
        stats, view = self.board.stats, self.view
        current = await stats.solve_rates(view.caller, GroupBy.tier, self.cohort, None)
        previous_period = view.period.previous()
        tz = self.board.tz
        before_at = min(previous_period.end(tz) - timedelta(microseconds=1), self.board.now())
        previous = await stats.solve_rates(
            view.caller,
            GroupBy.tier,
            Cohort(previous_period.start(tz), previous_period.end(tz)),
            before_at,
        )
        before = previous["total"] if previous["total"]["received"] else None
        words = view.words
        return {
            "tiles": [tile(n, good, rate, current["total"], before, words) for n, good, rate in HEADLINE],
            "total": current["total"],
            "previous": previous["total"],
            "previous_label": period_label(previous_period, view.lang),
            "as_of": current["as_of"],
        }

    async def panel_flow(self) -> dict[str, Any]:
        board, view = self.board, self.view
        tz = board.tz
        scope = await board.stats.scope(view.caller)
        start, end = view.period.start(tz), view.period.end(tz)
        flow = await board.reports.flow(scope, start, min(end, board.now()))
        words = view.words
        escalated = [(e["from_tier"], e["to_tier"], e["count"]) for e in flow["escalated"]]
        labels = {t: words[f"flow_{t}"] for t in ("local", "district", "city")}
        diagram: FlowDiagram = flow_diagram(labels, flow["received"], flow["solved"], escalated)
        return {"flow": flow, "diagram": diagram}

    async def panel_districts(self) -> dict[str, Any]:
        view = self.view
        body = await self.board.stats.solve_rates(view.caller, GroupBy.district, self.cohort, None)
        groups = sorted(
            body["groups"], key=lambda g: (g["solve_rate"] is None, -(g["solve_rate"] or 0), g["key"] or "")
        )
        margin = self.board.settings.ranking_ahead_margin
        bars = [
            Bar(
                short_district(g["name"] or g["key"] or ""),
                g["solve_rate"],
                progress_class(g, self.target, margin),
                percent(g["solve_rate"]),
            )
            for g in groups
        ]
        chart: BarChart = bar_chart(bars, target=self.target)
        return {"groups": groups, "chart": chart, "target": self.target}

    async def _rankings(self) -> dict[str, Any]:
        async def compute() -> dict[str, Any]:
            settings = self.board.settings
            return await self.board.rankings.rankings(
                self.view.caller,
                self.view.period,
                tier=self.view.tier,
                score=Score.solve_rate,
                target=settings.ranking_target,
                margin=settings.ranking_ahead_margin,
                as_of=None,
            )

        result: dict[str, Any] = await self._once("rankings", compute)
        return result

    async def panel_units(self) -> dict[str, Any]:
        ranking = await self._rankings()
        words = self.view.words
        bars = [
            Bar(g["name"] or g["key"], g["score"], g["progress"] or "none", percent(g["score"]),
                note=words[g["warning"]] if g["warning"] else "", note_css=g["warning"] or "")
            for g in ranking["groups"]
        ]  # fmt: skip
        chart = bar_chart(bars, target=ranking["target"])
        return {"ranking": ranking, "chart": chart, "target": ranking["target"]}

    async def panel_rankings(self) -> dict[str, Any]:
        ranking = await self._rankings()
        classes = dict.fromkeys(("ahead", "normal", "lagging", "no_progress"), 0)
        for g in ranking["groups"]:
            if g["progress"] in classes:
                classes[g["progress"]] += 1
        order = {"red": 0, "yellow": 1}
        progress_order = {"no_progress": 0, "lagging": 1, "normal": 2, "ahead": 3}
        watch = sorted(
            ranking["groups"],
            key=lambda g: (
                order.get(g["warning"] or "", 2),
                progress_order.get(g["progress"] or "", 4),
                g["score"] if g["score"] is not None else 2,
                g["key"],
            ),
        )
        return {"ranking": ranking, "classes": classes, "watch": watch}

    async def panel_aging(self) -> dict[str, Any]:
        view = self.view
        aging = await self.board.stats.aging(view.caller, view.basis, None, Cohort(), None, 0)
        by_bucket_overdue = await self.overdue_by_bucket(aging)
        buckets = [(b, aging["total"]["buckets"][b], by_bucket_overdue.get(b, 0)) for b in BUCKETS]
        chart: Histogram = histogram(buckets)
        return {"aging": aging, "chart": chart}

    async def overdue_by_bucket(self, aging: dict[str, Any]) -> dict[str, int]:
        """The overdue part of each age bucket, from the overdue list (ages as the aging counts
        them). The list holds at most 500; beyond that the split is not drawn."""
        overdue = await self._overdue()
        if overdue["count"] > len(overdue["items"]):
            return {}
        key = "age_days" if self.view.basis is Basis.calendar else "age_working_days"
        out: dict[str, int] = {}
        for item in overdue["items"]:
            out[bucket_of(item[key])] = out.get(bucket_of(item[key]), 0) + 1
        return out

    async def _overdue(self) -> dict[str, Any]:
        async def compute() -> dict[str, Any]:
            board = self.board
            scope = await board.stats.scope(self.view.caller)
            items, count = await board.reports.overdue(scope, board.now(), 500)
            names = await board.stats.names(GroupBy.category, [i["category"] for i in items])
            for item in items:
                item["category_name"] = names.get(item["category"], (item["category"], None))[0]
            return {"items": items, "count": count}

        result: dict[str, Any] = await self._once("overdue", compute)
        return result

    async def panel_overdue(self) -> dict[str, Any]:
        overdue = await self._overdue()
        days = "overdue_days" if self.view.basis is Basis.calendar else "overdue_working_days"
        return {"rows": overdue["items"][:OVERDUE_ROWS], "count": overdue["count"], "days_key": days}


def bucket_of(days: int) -> str:
    """The aging bucket (`0-3` … `31+`) of an age in days."""
    for name in BUCKETS[:-1]:
        if days <= int(name.split("-")[1]):
            return name
    return BUCKETS[-1]


def progress_class(group: dict[str, Any], target: float, margin: float) -> str:
    """Jiangshan's class of a group's solve rate, as the rankings classify units."""
    counts = {f.name: group[f.name] for f in fields(Figures)}
    standing = Standing(group["key"], group["name"], None, Figures(**counts), group["solve_rate"])
    found = classify(standing, target, margin)
    return found.value if found else "none"


# -- the problem page --------------------------------------------------------------------------

DETAIL_KEYS = ("reason", "note", "resolution", "explanation", "comment", "status_note")


def timeline(
    events: Sequence[RecordedEvent], words: Words, units: Mapping[str, str], tz: Any
) -> list[dict[str, Any]]:
    """Each event of a problem as the page lists it: when, what, at which tier, who, details."""
    out = []
    tier = "local"
    for e in events:
        data, meta = e.data, e.metadata
        if e.type == "problem.escalated" and data.get("to_tier"):
            tier = str(data["to_tier"])
        if meta.get("role") == "system" or meta.get("actor") == "system":
            who = words.system
        else:
            who = " · ".join(p for p in (meta.get("actor_name"), words.role(meta.get("role"))) if p)
        details = next((str(data[k]) for k in DETAIL_KEYS if data.get(k)), "")
        if e.type == "problem.assigned" and data.get("lead_unit_id"):
            lead = units.get(data["lead_unit_id"], data["lead_unit_id"])
            details = f"{words.holder}：{lead}" + (f"；{details}" if details else "")
        if e.type == "problem.feedback_received" and data.get("score") is not None:
            details = f"{data['score']}/5" + (f"；{details}" if details else "")
        out.append(
            {
                "at": e.occurred_at.astimezone(tz),
                "what": words.event(e.type),
                "tier": words.tier(tier),
                "who": who,
                "details": details,
                "css": e.type.removeprefix("problem.").replace("_", "-"),
            }
        )
    return out


def deadline_history(events: Sequence[RecordedEvent], words: Words, tz: Any) -> list[dict[str, Any]]:
    """Every event that set, moved or cleared the deadline, with the one it replaced."""
    out = []
    current: datetime | None = None
    for e in events:
        if "deadline" not in e.data:
            continue
        raw = e.data["deadline"]
        deadline = datetime.fromisoformat(raw).astimezone(tz) if raw else None
        if deadline == current:
            continue
        out.append(
            {"at": e.occurred_at.astimezone(tz), "what": words.event(e.type), "deadline": deadline,
             "previous": current}
        )  # fmt: skip
        current = deadline
    return out
