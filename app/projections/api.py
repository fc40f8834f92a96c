"""`/v1/stats/*` and `/v1/reports/dispatch`: the command room's figures, scoped by the caller's
role (a district's dispatcher sees its district, a handler what its units hold, cooperate on or
reported, a portal what it submitted). Definitions: `docs/statistics.md`.

(No `from __future__ import annotations`: FastAPI reads the parameter types at registration.)
"""

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field

from app.core.deps import CallerDep, SettingsDep
from app.core.errors import AppError, responses
from app.projections.params import InstantParam, as_of_instant, instant
from app.projections.periods import parse_period
from app.projections.rankings import Rankings, Score
from app.projections.reports import XLSX, DispatchReports, to_csv, to_xlsx
from app.projections.stats import Basis, Cohort, GroupBy, Statistics
from app.routing.tree import Tier

router = APIRouter(prefix="/v1", tags=["statistics"])

DEFINITIONS = """
**Which problems count.** Without `from`/`to`, every problem received so far; with them, the
problems received (submitted) in `[from, to)` (a date as `to` includes that day). Withdrawn
problems count nowhere.

**As of.** Without `as_of`, each problem's current state, judged now; with `as_of`, the state
each problem was in at that instant (its events up to then, whatever happened later), judged
at that instant. A date means the end of that day.

**Groups.** `tier`: the tier the problem is at now, solved problems the tier that solved them.
`unit`: the unit holding it now (the room while it waits there), solved problems the unit that
solved it. `district`, `category`: the problem's own.

**Figures** (counts of problems): `received`; `solved` (resolved or closed); `solve_rate` =
solved ÷ received; `solved_on_the_spot` (solved at the local tier, never escalated); `on_time`
(solved no later than the deadline in force when it was resolved); `on_time_rate` = on_time ÷
solved; `feedback_count` (problems with the enterprise's feedback; the latest counts);
`satisfied` (latest feedback 4 or 5); `satisfaction_rate` = satisfied ÷ feedback_count;
`response_due` (problems whose lead unit's assignment was answered, or whose response window has
ended), `responded` (answered — accepted, deferred or resolved — within the window:
`response_window_days` working days after the day of assignment, from the current routing
rules), `response_rate` = responded ÷ response_due; `open` (not solved: open, assigned,
in progress or deferred); `overdue` (open and past its deadline; a deferred problem's deadline is
its review date's); `returned` (returned by a lead unit at least once); `joint` (jointly handled:
with cooperating units).

**Rates** are fractions from 0 to 1, rounded half-up to 3 decimals (45 of 87 → 0.517), and null
when there is nothing to divide by. `total` adds up the groups' counts and recomputes the rates.
"""


async def get_stats(request: Request) -> Statistics:
    stats: Statistics = request.app.state.services.stats
    return stats


StatsDep = Annotated[Statistics, Depends(get_stats)]


AsOf = Annotated[
    InstantParam,
    Query(description="What was true at this instant (ISO datetime; a date means the end of that day)."),
]
From = Annotated[InstantParam, Query(alias="from", description="Received from (inclusive).")]
To = Annotated[InstantParam, Query(description="Received before (exclusive; a date includes that day).")]
DistrictParam = Annotated[str | None, Query(max_length=12, description="Only this district.")]
CategoryParam = Annotated[str | None, Query(max_length=64, description="Only this category.")]
JointParam = Annotated[
    bool | None, Query(description="true: only jointly handled problems (with cooperating units).")
]


class FiguresOut(BaseModel):
    key: str | None = Field(
        description="The group (tier, unit id, district code or category); null in `total`."
    )
    name: str | None = Field(description="The group's name.")
    received: int = Field(description="Problems received (withdrawn ones excluded).")
    solved: int = Field(description="Resolved or closed.")
    solve_rate: float | None = Field(description="solved ÷ received.")
    solved_on_the_spot: int = Field(description="Solved at the local tier, never escalated.")
    on_time: int = Field(description="Solved no later than the deadline in force at resolution.")
    on_time_rate: float | None = Field(description="on_time ÷ solved.")
    feedback_count: int = Field(description="Problems with the enterprise's feedback (the latest counts).")
    satisfied: int = Field(description="Latest feedback satisfied (4 or 5).")
    satisfaction_rate: float | None = Field(description="satisfied ÷ feedback_count.")
    response_due: int = Field(description="Assignments answered, or whose response window has ended.")
    responded: int = Field(description="Answered (accepted, deferred, resolved) within the window.")
    response_rate: float | None = Field(description="responded ÷ response_due.")
    open: int = Field(description="Not solved yet (open, assigned, in progress, deferred).")
    overdue: int = Field(description="Open and past the deadline.")
    returned: int = Field(description="Returned by a lead unit at least once.")
    joint: int = Field(description="Jointly handled (with cooperating units).")


class UnitFiguresOut(FiguresOut):
    district_id: str | None = Field(None, description="The unit's district (group_by=unit).")


class SolveRatesOut(BaseModel):
    group_by: str
    from_: datetime | None = Field(alias="from")
    to: datetime | None
    as_of: datetime = Field(description="The instant the figures describe.")
    response_window_days: int = Field(description="The response window in force (routing rules).")
    groups: list[UnitFiguresOut]
    total: FiguresOut


@router.get(
    "/stats/solve-rates",
    operation_id="get_solve_rates",
    summary="Solve rates",
    response_model=SolveRatesOut,
    response_model_by_alias=True,
    responses=responses(401, 422),
    description="Solve rates and the other figures of SPEC §5 per group, in the caller's scope.\n"
    + DEFINITIONS,
)
async def solve_rates(
    caller: CallerDep,
    stats: StatsDep,
    settings: SettingsDep,
    group_by: GroupBy = GroupBy.tier,
    from_: From = None,
    to: To = None,
    as_of: AsOf = None,
    district_id: DistrictParam = None,
    category: CategoryParam = None,
    joint: JointParam = None,
) -> dict[str, Any]:
    cohort = Cohort(instant(from_, settings), instant(to, settings, end=True), district_id, category, joint)
    return await stats.solve_rates(
        caller, group_by, cohort, as_of_instant(as_of, settings, stats.clock.now())
    )


class AgingGroupOut(BaseModel):
    key: str | None
    name: str | None
    open: int = Field(description="Open (unsolved) problems.")
    overdue: int = Field(description="Of which past their deadline.")
    buckets: dict[str, int] = Field(
        description="Open problems by age since submission: 0-3, 4-7, 8-15, 16-30, 31+."
    )


class OldestOut(BaseModel):
    id: str
    title: str
    enterprise_name: str
    district_id: str
    category: str
    tier: str
    status: str
    holder_unit_id: str | None
    holder_name: str | None
    submitted_at: datetime
    age_days: int = Field(description="Calendar days since submission.")
    age_working_days: int = Field(
        description="Working days since submission (the day itself does not count)."
    )
    deadline: datetime | None
    overdue: bool


class AgingOut(BaseModel):
    basis: str
    group_by: str | None
    as_of: datetime
    buckets: list[str]
    groups: list[AgingGroupOut]
    total: AgingGroupOut
    oldest: list[OldestOut]


@router.get(
    "/stats/aging",
    operation_id="get_aging",
    summary="Aging of open problems",
    response_model=AgingOut,
    responses=responses(401, 422),
)
async def aging(
    caller: CallerDep,
    stats: StatsDep,
    settings: SettingsDep,
    basis: Annotated[
        Basis,
        Query(description="Age in calendar days, or in working days (the submission day does not count)."),
    ] = Basis.calendar,
    group_by: GroupBy | None = None,
    as_of: AsOf = None,
    from_: From = None,
    to: To = None,
    district_id: DistrictParam = None,
    category: CategoryParam = None,
    limit: Annotated[
        int, Query(ge=0, le=100, description="How many of the oldest open problems to list.")
    ] = 10,
) -> dict[str, Any]:
    """Open (unsolved) problems by age since submission in buckets of 0–3, 4–7, 8–15, 16–30 and
    31+ days, per group (tier and unit: where they are now), with the number overdue, and the
    oldest open problems. As of now or `as_of` (their state then, their age then)."""
    cohort = Cohort(instant(from_, settings), instant(to, settings, end=True), district_id, category)
    return await stats.aging(
        caller, basis, group_by, cohort, as_of_instant(as_of, settings, stats.clock.now()), limit
    )


PeriodParam = Annotated[
    str,
    Query(
        max_length=12,
        description="`2026-11` (month), `2026-11-D2` (second ten-day period 旬: days 11–20), "
        "`2026-Q4`, `2026-H2`, `2026`.",
        examples=["2026-11"],
    ),
]
ScoreParam = Annotated[Score, Query(description="What units are ranked by.")]
TargetParam = Annotated[
    float | None, Query(ge=0, le=1, description="Target score (default: RANKING_TARGET).")
]
MarginParam = Annotated[
    float | None,
    Query(ge=0, le=1, description="`ahead` from target + margin (default: RANKING_AHEAD_MARGIN)."),
]


class EvidenceOut(BaseModel):
    period: str
    label: str
    as_of: datetime
    rank: int | None
    ranked: int = Field(description="Units ranked in that period.")
    score: float | None
    target: float
    received: int
    solved: int


class StandingOut(UnitFiguresOut):
    rank: int | None = Field(description="1 = best; equal scores share a rank; null: nothing to score.")
    score: float | None
    last: bool = Field(description="Among the lowest scores (when not every unit scores the same).")
    below_target: bool
    progress: str | None = Field(
        description="Jiangshan: ahead, normal, lagging, no_progress (nothing solved)."
    )
    warning: str | None = Field(
        description="Bijie: yellow (last and below target 2 periods running), red (3)."
    )
    evidence: list[EvidenceOut] = Field(description="The periods that earned the warning.")


class WarningOut(BaseModel):
    unit_id: str
    name: str | None
    level: str
    rule: str
    reason: str
    evidence: list[EvidenceOut]


class PeriodOut(BaseModel):
    code: str
    kind: str
    label: str
    from_: datetime = Field(alias="from")
    to: datetime


class PreviousPeriodOut(PeriodOut):
    as_of: datetime
    ranked: int


class RankingsOut(BaseModel):
    period: PeriodOut
    as_of: datetime
    tier: str
    score: str
    target: float
    ahead_margin: float
    previous_periods: list[PreviousPeriodOut]
    groups: list[StandingOut]
    total: FiguresOut
    warnings: list[WarningOut]


async def get_rankings(request: Request) -> Rankings:
    rankings: Rankings = request.app.state.services.rankings
    return rankings


@router.get(
    "/stats/rankings",
    operation_id="get_rankings",
    summary="Unit rankings with warnings",
    response_model=RankingsOut,
    response_model_by_alias=True,
    responses=responses(401, 422),
)
async def rankings(
    caller: CallerDep,
    rankings: Annotated[Rankings, Depends(get_rankings)],
    settings: SettingsDep,
    period: PeriodParam,
    score: ScoreParam = Score.solve_rate,
    tier: Annotated[Tier, Query(description="Rank the lead units of this tier.")] = Tier.district,
    target: TargetParam = None,
    ahead_margin: MarginParam = None,
    as_of: AsOf = None,
) -> dict[str, Any]:
    """The lead units of a tier ranked by `score` over the problems received in the period, as the
    period stood at its end (or now, while it runs; or at `as_of`). Figures as in
    `/v1/stats/solve-rates`, grouped by unit.

    **Bijie's rule**: a unit that was last while below the target in 2 consecutive periods of
    this kind gets a `yellow` warning, in 3 a `red` one; `evidence` lists those periods' figures.
    **Jiangshan's rule**: `ahead` (score ≥ target + margin), `normal` (≥ target), `lagging`
    (below), `no_progress` (nothing solved)."""
    return await rankings.rankings(
        caller,
        parse_period(period),
        tier=tier,
        score=score,
        target=settings.ranking_target if target is None else target,
        margin=settings.ranking_ahead_margin if ahead_margin is None else ahead_margin,
        as_of=as_of_instant(as_of, settings, rankings.stats.clock.now()),
    )


class FlowEdgeOut(BaseModel):
    from_tier: str
    to_tier: str
    count: int


class FlowOut(BaseModel):
    from_: datetime = Field(alias="from")
    until: datetime
    received: int = Field(description="Problems submitted during the period.")
    escalated: list[FlowEdgeOut] = Field(description="Escalations between tiers during the period.")
    assigned: dict[str, int] = Field(description="Per tier: handed by the room to a lead unit.")
    returned: dict[str, int] = Field(description="Per tier: returned to the room by the lead unit.")
    solved: dict[str, int] = Field(description="Per tier: solved during the period.")
    reopened: int
    withdrawn: int


class ReportUnitOut(UnitFiguresOut):
    tier: str | None
    rank: int | None = Field(description="Rank among the lead units of its tier (rooms are not ranked).")
    progress: str | None
    warning: str | None


class OverdueOut(BaseModel):
    id: str
    title: str
    enterprise_name: str
    district_id: str
    category: str
    tier: str
    status: str
    holder_unit_id: str | None
    holder_name: str | None
    deadline: datetime | None
    overdue_days: int
    overdue_working_days: int
    submitted_at: datetime


class ReportWarningOut(WarningOut):
    tier: str


class ScopeOut(BaseModel):
    role: str | None
    district_id: str | None


class ReportOut(BaseModel):
    title: str
    period: PeriodOut
    as_of: datetime
    generated_at: datetime
    scope: ScopeOut
    score: str
    target: float
    total: FiguresOut = Field(description="The problems received in the period, as of `as_of`.")
    tiers: list[FiguresOut] = Field(description="The same by tier.")
    flow: FlowOut
    groups: list[ReportUnitOut] = Field(description="Per unit (rooms included), ranked within its tier.")
    overdue_count: int = Field(description="Problems overdue at `as_of` (any submission date).")
    overdue: list[OverdueOut] = Field(description="The longest overdue first (at most 500).")
    warnings: list[ReportWarningOut]


async def get_reports(request: Request) -> DispatchReports:
    reports: DispatchReports = request.app.state.services.reports
    return reports


def negotiate(fmt: str | None, accept: str | None) -> str:
    if fmt is not None:
        return fmt
    for part in (accept or "*/*").split(","):
        media = part.split(";")[0].strip().lower()
        if media in ("*/*", "application/*", "application/json"):
            return "json"
        if media in ("text/csv", "text/*"):
            return "csv"
        if media == XLSX:
            return "xlsx"
    raise AppError("not_acceptable", "the report comes as application/json, text/csv or " + XLSX)


@router.get(
    "/reports/dispatch",
    operation_id="get_dispatch_report",
    summary="Dispatch report of a period (调度通报)",
    response_model=ReportOut,
    response_model_by_alias=True,
    responses={
        200: {
            "description": "The report as JSON, CSV or Excel",
            "content": {
                "text/csv": {
                    "schema": {"type": "string"},
                    "example": "\ufeff助企问题调度通报（2026年11月）\r\n统计截至,2026-11-16 09:00\r\n\r\n"
                    "【汇总】\r\n指标,数值\r\n收集问题（件）,175\r\n已解决（件）,90\r\n解决率,51.4%\r\n",
                },
                XLSX: {"schema": {"type": "string", "format": "binary"}},
            },
        },
        **responses(401, 406, 422),
    },
)
async def dispatch_report(
    request: Request,
    caller: CallerDep,
    reports: Annotated[DispatchReports, Depends(get_reports)],
    settings: SettingsDep,
    period: PeriodParam,
    format_: Annotated[
        str | None,
        Query(alias="format", pattern="^(json|csv|xlsx)$", description="Overrides `Accept`."),
    ] = None,
    score: ScoreParam = Score.solve_rate,
    target: TargetParam = None,
    ahead_margin: MarginParam = None,
    as_of: AsOf = None,
) -> Any:
    """The bulletin a dispatch room publishes for a period (一旬一调度, 一月一通报): totals of the
    problems received in the period, the flow between tiers during it, the per-unit table with
    ranks, progress classes and warnings, the overdue list, and the warnings with their evidence.
    As the period stood at its end (or now, while it runs). `format=json|csv|xlsx` or `Accept`
    (`application/json`, `text/csv`, or the Excel type); CSV and Excel have Chinese titles."""
    fmt = negotiate(format_, request.headers.get("accept"))
    chosen = parse_period(period)
    report = await reports.report(
        caller,
        chosen,
        as_of=as_of_instant(as_of, settings, reports.stats.clock.now()),
        score=score,
        target=settings.ranking_target if target is None else target,
        margin=settings.ranking_ahead_margin if ahead_margin is None else ahead_margin,
    )
    if fmt == "json":
        return report
    filename = f"dispatch-report-{chosen.code}.{fmt}"
    body = to_csv(report) if fmt == "csv" else to_xlsx(report)
    media = "text/csv; charset=utf-8" if fmt == "csv" else XLSX
    return Response(
        body, media_type=media, headers={"Content-Disposition": f'attachment; filename="{filename}"'}
    )
