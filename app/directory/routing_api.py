"""`/v1/routing/rules` and `/v1/calendar`: the routing rules and the work calendar as data."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response, status

from app.core.deps import AdminDep, CallerDep, MetaDep, parse_if_match
from app.core.errors import AppError, responses
from app.core.pagination import DEFAULT_LIMIT, MAX_LIMIT, Page, decode_cursor, next_page
from app.core.types import INT32_MAX
from app.directory.calendar import CalendarOverrides
from app.directory.rules import RulesRepository
from app.directory.schemas import (
    CalendarDayOut,
    CalendarOut,
    OverrideIn,
    OverrideOut,
    RuleSetIn,
    RuleSetOut,
    RuleVersionOut,
)
from app.routing.calendar import WorkCalendar, fallback_warning, official_years
from app.routing.rules import RuleSet

router = APIRouter(prefix="/v1")

MAX_CALENDAR_DAYS = 366


async def get_rules(request: Request) -> RulesRepository:
    rules: RulesRepository = request.app.state.rules
    return rules


async def get_overrides(request: Request) -> CalendarOverrides:
    overrides: CalendarOverrides = request.app.state.calendar_overrides
    return overrides


RulesDep = Annotated[RulesRepository, Depends(get_rules)]
OverridesDep = Annotated[CalendarOverrides, Depends(get_overrides)]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Page size.")]
Cursor = Annotated[str | None, Query(max_length=500, description="`next_cursor` of the previous page.")]
DayPath = Annotated[date, Path(description="The date (YYYY-MM-DD).")]


def _rules_out(row: Any | None, response: Response) -> RuleSetOut:
    if row is None:
        out = RuleSetOut(**RuleSet().to_data())
    else:
        out = RuleSetOut(
            version=row.version,
            **row.rules,
            note=row.note,
            changed_at=row.changed_at,
            changed_by=row.changed_by,
            changed_by_name=row.changed_by_name,
        )
    response.headers["ETag"] = f'"{out.version}"'
    return out


# -- routing rules ---------------------------------------------------------------------------


@router.get(
    "/routing/rules",
    tags=["routing"],
    operation_id="get_routing_rules",
    summary="The routing rules in force",
    response_model=RuleSetOut,
    responses=responses(401, 404, 422),
)
async def get_routing_rules(
    caller: CallerDep,
    rules: RulesDep,
    response: Response,
    version: Annotated[
        int | None, Query(ge=1, le=INT32_MAX, description="A past version instead of the current one.")
    ] = None,
) -> RuleSetOut:
    """Every key may read the rules (dispatch rooms see what `assign` will propose). The `ETag`
    is the rule-set version; version 0 is the built-in defaults (no routes)."""
    row = await rules.version(version)
    if row is None and version is not None:
        raise AppError("not_found", f"there is no rule-set version {version}")
    return _rules_out(row, response)


@router.put(
    "/routing/rules",
    tags=["routing"],
    operation_id="replace_routing_rules",
    summary="Replace the routing rules (admin)",
    response_model=RuleSetOut,
    responses=responses(400, 401, 403, 409, 412, 422),
)
async def replace_routing_rules(
    body: RuleSetIn,
    caller: AdminDep,
    meta: MetaDep,
    rules: RulesDep,
    response: Response,
    if_match: Annotated[
        str | None,
        Header(
            alias="If-Match",
            max_length=40,
            description='The rule-set version you read (its ETag, e.g. `"3"`); on mismatch 412.',
        ),
    ] = None,
) -> RuleSetOut:
    """Admin only. The body is the whole rule set (what is left out takes its default). Each change
    is a `routing.rules_changed` event with the next version, who made it and what changed
    (`/v1/routing/rules/history`); a body equal to the rules in force changes nothing.

    Refused with 422 `invalid_rules` (each problem in `errors`) when a route names a district
    without a dispatch room, an unknown category, or lead/cooperating units that are not active
    function groups of the route's district. New commands use the new rules at once in this
    process and within `ROUTING_REFRESH_SECONDS` in every other."""
    data = body.model_dump(exclude={"note"})
    row = await rules.replace(caller, data, if_match=parse_if_match(if_match), note=body.note, meta=meta)
    return _rules_out(row, response)


@router.get(
    "/routing/rules/history",
    tags=["routing"],
    operation_id="list_routing_rule_versions",
    summary="Who changed the routing rules, and what",
    response_model=Page[RuleVersionOut],
    responses=responses(400, 401, 422),
)
async def list_routing_rule_versions(
    caller: CallerDep, rules: RulesDep, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Page[RuleVersionOut]:
    """Versions newest first; `GET /v1/routing/rules?version=N` shows one in full."""
    after = decode_cursor(cursor, 1)
    rows = await rules.history(limit=limit + 1, before=int(after[0]) if after else None)
    page, next_cursor = next_page(rows, limit, lambda r: [r.version])
    return Page[RuleVersionOut](
        items=[RuleVersionOut.model_validate(r, from_attributes=True) for r in page], next_cursor=next_cursor
    )


# -- calendar --------------------------------------------------------------------------------


@router.get(
    "/calendar",
    tags=["calendar"],
    operation_id="get_calendar",
    summary="Working days in a date range",
    response_model=CalendarOut,
    responses=responses(401, 422),
)
async def get_calendar(
    request: Request,
    caller: CallerDep,
    rules: RulesDep,
    from_: Annotated[date, Query(alias="from", description="First day.")],
    to: Annotated[date, Query(description=f"Last day (at most {MAX_CALENDAR_DAYS} days on).")],
) -> CalendarOut:
    """Each day with whether it is a working day (工作日) and where that comes from. Days beyond
    the official holiday data count Monday–Friday plus overrides, and `warnings` says so."""
    if to < from_ or (to - from_).days >= MAX_CALENDAR_DAYS:
        raise AppError(
            "validation_failed",
            f"`to` must be on or after `from`, at most {MAX_CALENDAR_DAYS} days in all",
            errors=[{"loc": ["query", "to"], "msg": "out of range", "type": "range"}],
        )
    await rules.refresh()
    calendar: WorkCalendar = request.app.state.calendar
    days = [from_ + timedelta(days=i) for i in range((to - from_).days + 1)]
    fallback = sorted({d.year for d in days if not calendar.is_official(d.year)})
    return CalendarOut(
        days=[
            CalendarDayOut(date=d, working=calendar.is_workday(d), source=calendar.source(d)) for d in days
        ],
        official_years=list(official_years()),
        warnings=[fallback_warning(fallback)] if fallback else [],
    )


@router.get(
    "/calendar/overrides",
    tags=["calendar"],
    operation_id="list_calendar_overrides",
    summary="Admin overrides of the work calendar",
    response_model=Page[OverrideOut],
    responses=responses(400, 401, 422),
)
async def list_calendar_overrides(
    caller: CallerDep,
    overrides: OverridesDep,
    from_: Annotated[date | None, Query(alias="from", description="First day.")] = None,
    to: Annotated[date | None, Query(description="Last day.")] = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[OverrideOut]:
    """Extra holidays (`working: false`) and extra working days (`working: true`), by date."""
    after = decode_cursor(cursor, 1)
    start = from_
    if after:
        try:
            start = date.fromisoformat(str(after[0])) + timedelta(days=1)
        except ValueError as exc:
            raise AppError("invalid_cursor", "the cursor is not one this service issued") from exc
    rows = await overrides.list(start, to, limit=limit + 1)
    page, next_cursor = next_page(rows, limit, lambda r: [r.day.isoformat()])
    return Page[OverrideOut](items=[_override_out(r) for r in page], next_cursor=next_cursor)


def _override_out(row: Any) -> OverrideOut:
    return OverrideOut(
        date=row.day, working=row.working, note=row.note, updated_at=row.updated_at, updated_by=row.updated_by
    )


@router.put(
    "/calendar/overrides/{day}",
    tags=["calendar"],
    operation_id="set_calendar_override",
    summary="Make a date a holiday or a working day (admin)",
    response_model=OverrideOut,
    responses=responses(401, 403, 409, 422),
)
async def set_calendar_override(
    day: DayPath, body: OverrideIn, caller: AdminDep, meta: MetaDep, overrides: OverridesDep
) -> OverrideOut:
    """Admin only: a local decision wins over the official calendar and the Monday–Friday
    fallback (a `calendar.override_set` event). Deadlines computed from now on count with it;
    deadlines already set stay as recorded. Every process sees the change within
    `ROUTING_REFRESH_SECONDS`."""
    return _override_out(await overrides.set(caller, day, body.working, body.note, meta))


@router.delete(
    "/calendar/overrides/{day}",
    tags=["calendar"],
    operation_id="remove_calendar_override",
    summary="Remove an override (admin)",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=responses(401, 403, 404, 409, 422),
)
async def remove_calendar_override(
    day: DayPath, caller: AdminDep, meta: MetaDep, overrides: OverridesDep
) -> Response:
    """Admin only: the date counts as the official calendar (or the fallback) says again."""
    await overrides.remove(caller, day, meta)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
