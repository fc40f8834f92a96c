"""`/board`: the wall board's pages, its panels as fragments, its live stream, its stylesheet
and script. HTML and SVG rendered by jinja2 on the server; the script (`static/board.js`, no
library) only listens to the stream and re-fetches the panels. Errors are problem+json like
everywhere else; a browser without a key is sent to `/board/open`.

(No `from __future__ import annotations`: FastAPI reads the parameter types at registration.)
"""

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from importlib import resources
from typing import Annotated, Any
from urllib.parse import urlencode

import orjson
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from jinja2 import Environment, PackageLoader, select_autoescape
from pydantic import BaseModel

from app.board.auth import board_caller, clear_cookie, presented, same_origin, scoped, set_cookie
from app.board.i18n import Lang, Words, period_label
from app.board.palette import css_variables
from app.board.service import PANELS, Board, View, current_period, deadline_history, percent, timeline
from app.core.errors import AppError
from app.core.security import Caller
from app.feed.api import wait_for_feed
from app.feed.reader import TypeFilter, head, read_feed
from app.problems.service import ProblemService
from app.projections.periods import parse_period
from app.projections.problem_view import to_api
from app.projections.stats import Basis, GroupBy
from app.routing.tree import Tier

router = APIRouter(prefix="/board", include_in_schema=False)

STREAM_BATCH = 200
HEARTBEAT_SECONDS = 15.0
RECHECK_SECONDS = 5.0  # how often an open stream checks that its key still works
SETTLE_SECONDS = 5.0  # how long a change waits for the statistics to include it
PROBLEM_EVENTS = TypeFilter.parse(["problem.*"])
NO_STORE = {"Cache-Control": "no-store"}


def _truncate(value: str, length: int = 11) -> str:
    return value if len(value) <= length else value[: length - 1] + "…"


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else ""


def _evidence_lines(evidence: list[dict[str, Any]], w: Words) -> list[str]:
    """A warning's evidence, a line per period (the hover title and the click box)."""
    return [
        w("evidence_line", label=e["label"], rank=e["rank"], ranked=e["ranked"], score=percent(e["score"]),
          target=percent(e["target"], 0), received=e["received"], solved=e["solved"])
        for e in evidence
    ]  # fmt: skip


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("app.board", "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        percent=percent,
        truncate_label=_truncate,
        when=_when,
        evidence_lines=_evidence_lines,
        figure_rows=lambda groups: [
            [g["name"] or g["key"], g["received"], g["solved"], percent(g["solve_rate"])] for g in groups
        ],
        ranking_rows=lambda groups, w: [
            [
                g["name"] or g["key"],
                g["rank"] if g["rank"] is not None else "—",
                g["received"],
                g["solved"],
                percent(g["score"]),
                w[g["progress"]] if g["progress"] else "—",
                w[g["warning"]] if g["warning"] else "—",
            ]
            for g in groups
        ],
        edge_rows=lambda edges, w: [
            [w.tier(e["from_tier"]), w.tier(e["to_tier"]), e["count"]] for e in edges
        ],
        solved_rows=lambda solved, w: [[w.flow_solved, w.tier(t), n] for t, n in solved.items()],
        aging_rows=lambda columns, w: [[f"{c.label} {w.days}", c.count, c.overdue] for c in columns],
    )
    return env


ENV = _environment()


def get_board(request: Request) -> Board:
    board: Board = request.app.state.services.board
    return board


BoardDep = Annotated[Board, Depends(get_board)]


class Params(BaseModel):
    """The board's URL parameters, as given (for links that keep them)."""

    period: str | None
    district: str | None
    tier: Tier
    basis: Basis
    lang: Lang

    def query(self, **changes: Any) -> str:
        values = {**self.model_dump(mode="json"), **changes}
        defaults = {"tier": Tier.district.value, "basis": Basis.calendar.value, "lang": Lang.zh.value}
        kept = {k: v for k, v in values.items() if v is not None and defaults.get(k) != v}
        return "?" + urlencode(kept) if kept else ""


def params(
    period: Annotated[
        str | None,
        Query(
            max_length=12,
            description="`2026-11`, `2026-11-D2`, `2026-Q4`, `2026-H2`, `2026`; default this month.",
        ),
    ] = None,
    district: Annotated[str | None, Query(max_length=12, pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,11}$")] = None,
    tier: Tier = Tier.district,
    basis: Basis = Basis.calendar,
    lang: Lang = Lang.zh,
) -> Params:
    if period is not None:
        parse_period(period)  # 422 invalid_period
    return Params(period=period, district=district, tier=tier, basis=basis, lang=lang)


ParamsDep = Annotated[Params, Depends(params)]


async def view_of(request: Request, board: Board, given: Params, caller: Caller | None = None) -> View:
    caller = caller or await board_caller(request)
    if given.district is not None and given.district not in dict(await board.districts()):
        raise AppError("not_found", f"no district {given.district}")
    period = parse_period(given.period) if given.period else current_period(board.now(), board.tz)
    narrowed = scoped(caller, given.district)
    return View(
        narrowed,
        period,
        given.tier,
        given.basis,
        given.lang,
        narrowed.district_id,
        can_switch=caller.district_id is None,
    )


def _render(template: str, **context: Any) -> str:
    return ENV.get_template(template).render(**context)


async def _context(request: Request, board: Board, view: View, given: Params) -> dict[str, Any]:
    districts = await board.districts()
    names = dict(districts)
    words = view.words
    return {
        "w": words,
        "lang": view.lang.value,
        "view": view,
        "query": given.query(),
        "link": lambda **changes: "/board" + given.query(**changes),
        "districts": districts if view.can_switch else [],
        "scope_name": names.get(view.district or "", words.city) if view.district else words.city,
        "period_name": period_label(view.period, view.lang),
        "now": board.now().astimezone(board.tz),
    }


@router.get("")
async def board_page(request: Request, board: BoardDep, given: ParamsDep) -> Response:
    """The wall board."""
    if presented(request) is None:
        return RedirectResponse("/board/open" + given.query(), status_code=303, headers=NO_STORE)
    view = await view_of(request, board, given)
    panels = board.panels(view)
    context = await _context(request, board, view, given)
    data = {name: await panels.get(name) for name in PANELS}
    context["panels"] = PANELS
    html = ENV.get_template("board.html").render(**context, panel_data=data, p=None)
    return HTMLResponse(html, headers=NO_STORE)


@router.get("/panels/{name}")
async def panel(
    request: Request, board: BoardDep, given: ParamsDep, name: Annotated[str, Path(max_length=20)]
) -> HTMLResponse:
    """One panel's HTML (what the script swaps in when something changed)."""
    if name not in PANELS:
        raise AppError("not_found", f"no panel {name!r} (panels: {', '.join(PANELS)})")
    view = await view_of(request, board, given)
    context = await _context(request, board, view, given)
    p = await board.panels(view).get(name)
    return HTMLResponse(_render(f"panel_{name}.html", **context, p=p), headers=NO_STORE)


@router.get("/problems/{problem_id}")
async def problem_page(
    request: Request, board: BoardDep, given: ParamsDep, problem_id: Annotated[str, Path(max_length=64)]
) -> HTMLResponse:
    """A problem's timeline, deadline history and aging (404 outside the key's scope)."""
    view = await view_of(request, board, given)
    service: ProblemService = request.app.state.problems
    row = await service.get_row(view.caller, problem_id)
    events = await service.history(view.caller, problem_id)
    now = board.now()
    problem = to_api(row, now, service.calendar, tz=board.tz)
    unit_ids = [problem.holder_unit_id or ""] + [str(e.data.get("lead_unit_id") or "") for e in events]
    names = await board.stats.names(GroupBy.unit, [u for u in unit_ids if u])
    unit_names = {k: v[0] for k, v in names.items()}
    categories = await board.stats.names(GroupBy.category, [problem.category])
    context = await _context(request, board, view, given)
    context["link"] = lambda **changes: f"/board/problems/{problem_id}" + given.query(**changes)
    html = _render(
        "problem.html",
        **context,
        problem=problem,
        holder_name=unit_names.get(problem.holder_unit_id or "", problem.holder_unit_id),
        category_name=categories.get(problem.category, (problem.category, None))[0],
        timeline=timeline(events, view.words, unit_names, board.tz),
        deadlines=deadline_history(events, view.words, board.tz),
    )
    return HTMLResponse(html, headers=NO_STORE)


@router.get("/stream")
async def stream(request: Request, board: BoardDep, given: ParamsDep) -> StreamingResponse:
    """Server-Sent Events: `changed` once the figures include new events in the board's scope
    (after the temporal model has caught up with them, at most a few seconds), a heartbeat
    comment while idle. The stream ends when the key is revoked or the server stops."""
    token = presented(request)
    view = await view_of(request, board, given)
    caller = view.caller
    db = request.app.state.db
    stopping: asyncio.Event = request.app.state.stopping
    async with db.read() as conn:
        start = await head(conn)

    async def still_allowed() -> bool:
        try:
            await board_caller(request, token)
        except AppError:
            return False
        return True

    async def messages() -> AsyncIterator[bytes]:
        position = start
        yield b"retry: 2000\n\n"
        last_sent = checked = time.monotonic()
        while not stopping.is_set():
            page = await read_feed(
                db, caller, frozenset(), after=position, limit=STREAM_BATCH, types=PROBLEM_EVENTS, tz=board.tz
            )
            position = page.last_position
            if page.items:
                newest = page.items[-1].position
                await settled(board, newest, stopping)
                ids = sorted({e.problem_id for e in page.items if e.problem_id})
                data = orjson.dumps({"position": newest, "problems": ids[:50]})
                yield b"event: changed\nid: %d\ndata: %s\n\n" % (newest, data)
                last_sent = time.monotonic()
            if position < page.head:
                continue
            if time.monotonic() - checked > RECHECK_SECONDS:
                if not await still_allowed():
                    yield b"event: revoked\ndata: {}\n\n"
                    return
                checked = time.monotonic()
            if time.monotonic() - last_sent >= HEARTBEAT_SECONDS:
                yield b": heartbeat\n\n"
                last_sent = time.monotonic()
            await wait_for_feed(request, stopping, 1.0)

    return StreamingResponse(
        messages(),
        media_type="text/event-stream",
        headers={**NO_STORE, "X-Accel-Buffering": "no"},
    )


async def settled(board: Board, position: int, stopping: asyncio.Event) -> None:
    """Wait (bounded) until the statistics' read model has read up to `position`."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while time.monotonic() < deadline and not stopping.is_set():
        if await board.history_checkpoint() >= position:
            return
        await asyncio.sleep(0.1)


# -- opening the board on a screen ------------------------------------------------------------


@router.get("/open")
async def open_page(lang: Lang = Lang.zh) -> HTMLResponse:
    """Where a board link lands: the script exchanges the token in the URL fragment for the
    cookie (the fragment never reaches a server or a log); or enter a key by hand."""
    return HTMLResponse(_render("open.html", w=Words(lang), lang=lang.value), headers=NO_STORE)


class SessionIn(BaseModel):
    token: str


@router.post("/session")
async def open_session(request: Request) -> Response:
    """Exchange a board token or key for the board's cookie: JSON `{"token": …}` (the link's
    script: 204) or a form field `token` (the page's form: 303 to the board)."""
    if not same_origin(request):
        raise AppError("forbidden", "a board session is opened from the board's own pages")
    form = not request.headers.get("content-type", "").startswith("application/json")
    try:
        if form:
            token = str((await request.form()).get("token") or "")
        else:
            token = SessionIn.model_validate_json(await request.body()).token
    except ValueError:
        raise AppError("bad_request", 'send {"token": …} as JSON or a form field `token`') from None
    await board_caller(request, token.strip())
    response: Response = RedirectResponse("/board", status_code=303) if form else Response(status_code=204)
    response.headers.update(NO_STORE)
    set_cookie(request, response, token.strip(), request.app.state.settings.environment == "production")
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    """Forget the board's cookie on this screen."""
    if not same_origin(request):
        raise AppError("forbidden", "a board session is closed from the board's own pages")
    response = RedirectResponse("/board/open", status_code=303, headers=NO_STORE)
    clear_cookie(request, response)
    return response


# -- the stylesheet and the script ------------------------------------------------------------


def _static(name: str) -> str:
    return resources.files("app.board").joinpath("static", name).read_text(encoding="utf-8")


STATIC: dict[str, tuple[str, Callable[[], str]]] = {
    "board.css": ("text/css; charset=utf-8", lambda: css_variables() + _static("board.css")),
    "board.js": ("text/javascript; charset=utf-8", lambda: _static("board.js")),
    "icon.svg": ("image/svg+xml", lambda: _static("icon.svg")),
}


@router.get("/static/{name}")
async def static(name: Annotated[str, Path(max_length=20)]) -> Response:
    if name not in STATIC:
        raise AppError("not_found", f"no file {name!r}")
    media, body = STATIC[name]
    return Response(body(), media_type=media, headers={"Cache-Control": "public, max-age=300"})
