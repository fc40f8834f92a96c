"""The dispatch report (调度通报) of a period: what a dispatch room publishes after each ten-day
dispatch, month, quarter, half year or year. Totals of the problems received in the period,
the flow between tiers during it, the per-unit table with ranks, progress classes and
warnings, the overdue list, and the warnings with their evidence; as JSON, CSV or Excel.

CSV and Excel carry the same sections with Chinese titles; CSV is UTF-8 with a byte-order mark
(so that Excel opens it right), rates as percentages with one decimal.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from openpyxl import Workbook
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter

from app.core.security import Caller
from app.projections.history import problem_history, valid_at
from app.projections.periods import Period
from app.projections.problem_view import ACTIVE_STATUSES, SOLVED_STATUSES
from app.projections.rankings import Rankings, Score, period_json, render
from app.projections.stats import TIER_NAMES, Cohort, GroupBy, Statistics
from app.routing.tree import TIER_OF_KIND, TIER_ORDER, UnitKind

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
STATUS_NAMES = {
    "open": "待交办",
    "assigned": "已交办",
    "in_progress": "办理中",
    "deferred": "缓办",
    "resolved": "已办结",
    "closed": "已销号",
    "withdrawn": "已撤回",
}
PROGRESS_NAMES = {"ahead": "领先", "normal": "正常", "lagging": "滞后", "no_progress": "无进展"}
WARNING_NAMES = {"yellow": "黄牌预警", "red": "红牌预警"}
HELD = ("assigned", "in_progress", "deferred")


class DispatchReports:
    def __init__(self, stats: Statistics, rankings: Rankings) -> None:
        self.stats = stats
        self.rankings = rankings

    async def report(
        self,
        caller: Caller,
        period: Period,
        *,
        as_of: datetime | None,
        score: Score,
        target: float,
        margin: float,
        overdue_limit: int = 500,
    ) -> dict[str, Any]:
        stats = self.stats
        tz = stats.tz
        now = stats.instant(as_of)
        at = min(period.end(tz), now)
        start, end = period.start(tz), period.end(tz)
        scope = await stats.scope(caller)
        present = as_of is None and at == now  # a period still running, asked about now
        history = await self.rankings.history(scope, period, now, present=as_of is None)
        info = await self.rankings.unit_info(history)
        ranked = {
            tier: render(
                [h.ranking(tier, score, info) for h in history],
                tier=tier,
                score=score,
                target=target,
                margin=margin,
                stats=stats,
            )
            for tier in TIER_ORDER
        }
        standing = {g["key"]: g for r in ranked.values() for g in r["groups"]}
        by_tier = await stats.figures(scope, GroupBy.tier, Cohort(start, end), None if present else at, at=at)
        tiers, total = await stats.groups(GroupBy.tier, by_tier)
        units = []
        for unit_id, figures in history[0].by_unit.items():
            unit = info.get(unit_id or "")
            tier = TIER_OF_KIND[UnitKind(unit.kind)].value if unit else None
            s = standing.get(unit_id, {})
            units.append(
                {
                    "key": unit_id,
                    "name": unit.name if unit else None,
                    "tier": tier,
                    "district_id": unit.district_id if unit else None,
                    "rank": s.get("rank"),
                    "progress": s.get("progress"),
                    "warning": s.get("warning"),
                    **figures.as_dict(),
                }
            )
        order = {t.value: i for i, t in enumerate(TIER_ORDER)}
        units.sort(
            key=lambda u: (order.get(u["tier"] or "", 9), u["rank"] is None, u["rank"] or 0, u["key"] or "")
        )
        overdue, overdue_count = await self.overdue(scope, at, overdue_limit)
        return {
            "title": f"助企问题调度通报（{period.label}）",
            "period": period_json(period, stats),
            "as_of": stats.local(at),
            "generated_at": stats.local(stats.clock.now()),
            "scope": {"role": caller.role.value if caller.role else None, "district_id": caller.district_id},
            "score": score.value,
            "target": target,
            "total": {"key": None, "name": "合计", **total.as_dict()},
            "tiers": [g.as_dict() for g in tiers],
            "flow": await self.flow(scope, start, min(end, at)),
            "groups": units,
            "overdue_count": overdue_count,
            "overdue": overdue,
            "warnings": [{**w, "tier": t.value} for t, r in ranked.items() for w in r["warnings"]],
        }

    async def flow(
        self, scope: sa.ColumnElement[bool] | None, start: datetime, until: datetime
    ) -> dict[str, Any]:
        """What moved during [start, until]: the transitions between consecutive intervals."""
        h = problem_history.c
        stmt = (
            sa.select(h.from_tier, h.tier, h.from_status, h.status, sa.func.count().label("n"))
            .where(h.valid_from >= start, h.valid_from <= until)
            .group_by(h.from_tier, h.tier, h.from_status, h.status)
        )
        if scope is not None:
            stmt = stmt.where(scope)
        async with self.stats.db.read() as conn:
            rows = (await conn.execute(stmt)).all()
        escalated: dict[tuple[str, str], int] = {}
        tiers = {t.value: 0 for t in TIER_ORDER}
        assigned, returned, solved = dict(tiers), dict(tiers), dict(tiers)
        received = reopened = withdrawn = 0
        for r in rows:
            if r.from_status is None:
                received += r.n
            elif r.from_tier != r.tier:
                escalated[(r.from_tier, r.tier)] = escalated.get((r.from_tier, r.tier), 0) + r.n
            elif r.from_status == "open" and r.status in HELD:
                assigned[r.tier] += r.n
            elif r.from_status in HELD and r.status == "open":
                returned[r.tier] += r.n
            if r.status in SOLVED_STATUSES and r.from_status not in SOLVED_STATUSES:
                solved[r.tier] += r.n
            if r.from_status in SOLVED_STATUSES and r.status not in SOLVED_STATUSES:
                reopened += r.n
            if r.status == "withdrawn" and r.from_status != "withdrawn":
                withdrawn += r.n
        return {
            "from": self.stats.local(start),
            "until": self.stats.local(until),
            "received": received,
            "escalated": [
                {"from_tier": f, "to_tier": t, "count": n}
                for (f, t), n in sorted(
                    escalated.items(), key=lambda kv: (_tier_index(kv[0][0]), _tier_index(kv[0][1]))
                )
            ],
            "assigned": assigned,
            "returned": returned,
            "solved": solved,
            "reopened": reopened,
            "withdrawn": withdrawn,
        }

    async def overdue(
        self, scope: sa.ColumnElement[bool] | None, at: datetime, limit: int
    ) -> tuple[list[dict[str, Any]], int]:
        """Problems overdue at `at` (any submission date), the longest overdue first."""
        h = problem_history.c
        conditions = [valid_at(at), h.status.in_(ACTIVE_STATUSES), h.deadline < at]
        if scope is not None:
            conditions.append(scope)
        count = sa.select(sa.func.count()).select_from(problem_history).where(*conditions)
        async with self.stats.db.read() as conn:
            total = int((await conn.execute(count)).scalar_one())
        return await self.stats.items(conditions, (h.deadline, h.problem_id), limit, at), total


def _tier_index(tier: str) -> int:
    return [t.value for t in TIER_ORDER].index(tier) if tier in TIER_NAMES else 9


# -- rendering ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Col:
    key: str
    title: str
    kind: str = "text"  # text, int, rate, datetime


UNIT_COLUMNS = (
    Col("rank", "排名", "int"),
    Col("name", "单位"),
    Col("key", "单位编号"),
    Col("tier_name", "层级"),
    Col("district_id", "所属区"),
    Col("received", "收集问题（件）", "int"),
    Col("solved", "已解决（件）", "int"),
    Col("solve_rate", "解决率", "rate"),
    Col("solved_on_the_spot", "现场解决（件）", "int"),
    Col("on_time", "按时办结（件）", "int"),
    Col("on_time_rate", "按时办结率", "rate"),
    Col("feedback_count", "回访（件）", "int"),
    Col("satisfied", "满意（件）", "int"),
    Col("satisfaction_rate", "满意率", "rate"),
    Col("response_due", "应签收（件）", "int"),
    Col("responded", "按时签收（件）", "int"),
    Col("response_rate", "响应率", "rate"),
    Col("open", "在办（件）", "int"),
    Col("overdue", "超期（件）", "int"),
    Col("returned", "退回（件）", "int"),
    Col("joint", "联合办理（件）", "int"),
    Col("progress_name", "进度评价"),
    Col("warning_name", "预警"),
)
TOTAL_ROWS = (
    ("received", "收集问题（件）", "int"),
    ("solved", "已解决（件）", "int"),
    ("solve_rate", "解决率", "rate"),
    ("solved_on_the_spot", "现场解决（件）", "int"),
    ("on_time", "按时办结（件）", "int"),
    ("on_time_rate", "按时办结率", "rate"),
    ("feedback_count", "回访（件）", "int"),
    ("satisfaction_rate", "满意率", "rate"),
    ("response_rate", "响应率", "rate"),
    ("open", "在办（件）", "int"),
    ("overdue", "超期（件）", "int"),
    ("returned", "退回（件）", "int"),
    ("joint", "联合办理（件）", "int"),
)
FLOW_COLUMNS = (Col("step", "环节"), Col("from", "从"), Col("to", "到"), Col("count", "件数", "int"))
OVERDUE_COLUMNS = (
    Col("id", "问题编号"),
    Col("title", "问题标题"),
    Col("enterprise_name", "企业"),
    Col("district_id", "所属区"),
    Col("tier_name", "层级"),
    Col("status_name", "状态"),
    Col("holder_name", "承办单位"),
    Col("deadline", "办理期限", "datetime"),
    Col("overdue_days", "超期天数", "int"),
    Col("overdue_working_days", "超期工作日", "int"),
    Col("submitted_at", "提交时间", "datetime"),
)
WARNING_COLUMNS = (
    Col("name", "单位"),
    Col("unit_id", "单位编号"),
    Col("tier_name", "层级"),
    Col("level_name", "预警"),
    Col("evidence_text", "依据"),
)


def sections(report: dict[str, Any]) -> list[tuple[str, Sequence[Col], list[dict[str, Any]]]]:
    """The report as titled tables (sheet name, columns, rows), shared by CSV and Excel."""
    total = report["total"]
    summary = [{"item": title, "value": total[key], "kind": kind} for key, title, kind in TOTAL_ROWS]
    flow = report["flow"]
    flow_rows: list[dict[str, Any]] = [{"step": "收集问题", "from": "", "to": "", "count": flow["received"]}]
    for edge in flow["escalated"]:
        flow_rows.append(
            {
                "step": "上交",
                "from": TIER_NAMES[edge["from_tier"]],
                "to": TIER_NAMES[edge["to_tier"]],
                "count": edge["count"],
            }
        )
    for step, key in (("交办", "assigned"), ("退回", "returned"), ("办结", "solved")):
        for tier, n in flow[key].items():
            if n:
                flow_rows.append({"step": step, "from": TIER_NAMES[tier], "to": "", "count": n})
    for step, key in (("重新办理", "reopened"), ("撤回", "withdrawn")):
        if flow[key]:
            flow_rows.append({"step": step, "from": "", "to": "", "count": flow[key]})
    units = [
        {
            **u,
            "tier_name": TIER_NAMES.get(u["tier"] or "", ""),
            "progress_name": PROGRESS_NAMES.get(u["progress"] or "", ""),
            "warning_name": WARNING_NAMES.get(u["warning"] or "", ""),
        }
        for u in report["groups"]
    ]
    overdue = [
        {
            **o,
            "tier_name": TIER_NAMES.get(o["tier"], o["tier"]),
            "status_name": STATUS_NAMES.get(o["status"], ""),
        }
        for o in report["overdue"]
    ]
    warnings = [
        {
            **w,
            "tier_name": TIER_NAMES.get(w["tier"], ""),
            "level_name": WARNING_NAMES[w["level"]],
            "evidence_text": "；".join(
                f"{e['label']}第{e['rank']}名/共{e['ranked']}个，{_percent(e['score'])}（目标{_percent(e['target'])}）"
                for e in w["evidence"]
            ),
        }
        for w in report["warnings"]
    ]
    return [
        ("汇总", (Col("item", "指标"), Col("value", "数值")), summary),
        ("层级流转", FLOW_COLUMNS, flow_rows),
        ("单位情况", UNIT_COLUMNS, units),
        ("超期问题", OVERDUE_COLUMNS, overdue),
        ("预警", WARNING_COLUMNS, warnings),
    ]


def _kind(row: dict[str, Any], col: Col) -> str:
    """The summary's value column mixes counts and rates: each row says which it holds."""
    return str(row.get("kind", col.kind)) if col.key == "value" else col.kind


def _percent(value: float | None) -> str:
    return "" if value is None else f"{value * 100:.1f}%"


def _text(value: Any, kind: str) -> str:
    if value is None:
        return ""
    if kind == "rate":
        return _percent(value)
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    return str(value)


def to_csv(report: dict[str, Any]) -> bytes:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\r\n")
    w.writerow([report["title"]])
    w.writerow(["统计截至", _text(report["as_of"], "datetime")])
    for title, columns, rows in sections(report):
        w.writerow([])
        w.writerow([f"【{title}】"])
        w.writerow([c.title for c in columns])
        for row in rows:
            w.writerow([_text(row.get(c.key), _kind(row, c)) for c in columns])
    return ("\ufeff" + out.getvalue()).encode("utf-8")


_HEADER_FONT = Font(bold=True)
_HEADER_FILL = PatternFill("solid", fgColor="DDEBF7")
_FORMATS = {"int": "0", "rate": "0.0%", "datetime": "yyyy-mm-dd hh:mm"}


def to_xlsx(report: dict[str, Any]) -> bytes:
    wb = Workbook()
    wb.remove(wb.active)
    for title, columns, rows in sections(report):
        ws = wb.create_sheet(title)
        first = 1
        if title == "汇总":
            ws.append([report["title"]])
            ws.append(["统计截至", _excel(report["as_of"])])
            ws["A1"].font = Font(bold=True, size=14)
            ws["B2"].number_format = _FORMATS["datetime"]
            ws.append([])
            first = 4
        ws.append([c.title for c in columns])
        for cell in ws[first]:
            cell.font = _HEADER_FONT
            cell.fill = _HEADER_FILL
            cell.alignment = Alignment(horizontal="center", vertical="center", wrap_text=True)
        for row in rows:
            ws.append([_excel(row.get(c.key)) for c in columns])
            for cell, col in zip(ws[ws.max_row], columns, strict=True):
                kind = _kind(row, col)
                if kind in _FORMATS:
                    cell.number_format = _FORMATS[kind]
        ws.freeze_panes = ws.cell(row=first + 1, column=1)
        for i, col in enumerate(columns, start=1):
            width = max([_width(col.title), *(_width(_text(r.get(col.key), _kind(r, col))) for r in rows)])
            ws.column_dimensions[get_column_letter(i)].width = min(60, width + 2)
    buffer = io.BytesIO()
    wb.save(buffer)
    return buffer.getvalue()


def _excel(value: Any) -> Any:
    # Excel has no time zones: instants are written as the city's local time.
    if isinstance(value, datetime):
        return value.replace(tzinfo=None)
    return value


def _width(text: str) -> int:
    return sum(2 if ord(ch) > 0x2E80 else 1 for ch in text)
