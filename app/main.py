"""The application factory: wires the database, the event store, the services and the routers,
and runs the background work (the sequencer) for the life of the process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import timedelta
from typing import Any

from fastapi import Depends, FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse

import app as app_package
from app.access.api import router as keys_router
from app.access.service import Keys
from app.apidoc import fill_examples
from app.board.headers import BoardHeaders
from app.board.pages import router as board_router
from app.board.service import Board
from app.board.tokens import router as board_tokens_router
from app.core import heap
from app.core.clock import Clock, OffsetClock, SystemClock
from app.core.db import Database
from app.core.errors import CATALOGUE, PROBLEM_JSON, AppError, ErrorCode, ProblemDetail
from app.core.http import (
    RequestContextMiddleware,
    clean_target,
    hide_keys_in_access_log,
    install_error_handlers,
)
from app.core.metrics import CALENDAR_FALLBACK, render
from app.core.ratelimit import RateLimiter
from app.core.settings import Settings
from app.core.shutdown import on_server_exit
from app.directory.api import router as directory_router
from app.directory.calendar import CalendarOverrides
from app.directory.routing_api import router as routing_router
from app.directory.rules import RulesRepository
from app.directory.service import Directory
from app.directory.watch import StreamWatch
from app.events import EventStore
from app.events.sequencer import run_sequencer
from app.feed.api import router as feed_router
from app.ledger.api import router as ledger_router
from app.open311.api import router as open311_router
from app.open311.render import install_error_handlers as install_open311_errors
from app.problems.api import router as problems_router
from app.problems.projection import problem_projections
from app.problems.scheduler import Scheduler
from app.problems.service import ProblemService
from app.projections.api import router as statistics_router
from app.projections.rankings import Rankings
from app.projections.registry import Projections
from app.projections.reports import DispatchReports
from app.projections.stats import Statistics
from app.routing.calendar import WorkCalendar, fallback_warning, official_years
from app.webhooks.api import router as webhooks_router
from app.webhooks.openapi import document_webhooks
from app.webhooks.service import Webhooks
from app.webhooks.workers import webhook_workers

log = logging.getLogger("dispatchroom")

CORS_REQUEST_HEADERS = [
    "Authorization",
    "Content-Type",
    "If-Match",
    "Idempotency-Key",
    "Last-Event-ID",
    "X-Request-ID",
    "X-Correlation-ID",
    "X-Causation-ID",
]
CORS_EXPOSED_HEADERS = ["ETag", "Location", "X-Request-ID", "Retry-After", "RateLimit", "RateLimit-Policy"]

DESCRIPTION = """
Dispatchroom is the system of record for the problems enterprises report to local government
(助企问题调度): cadres record a problem; it is solved locally if possible, else escalated to the
district dispatch room (区调度室), which hands it to a lead unit with a deadline, else to the city
command room (市总调度室). Every change is an event in an append-only log.

**Authentication**: `Authorization: Bearer <key>`. **Rate limits** (if configured): per key;
`RateLimit-Policy` and `RateLimit` headers (draft-ietf-httpapi-ratelimit-headers), 429
`rate_limited` with `Retry-After` over the limit. **Errors**: RFC 9457 problem details
(`application/problem+json`) with a stable `code`; the catalogue is at `/errors`.
**Concurrency**: problems carry an `ETag` (their version); send it as `If-Match` on commands.
**Idempotency**: `Idempotency-Key` on `POST /v1/problems`. **Lists**: `limit` and `cursor` in,
`items` and `next_cursor` out. **Times**: ISO 8601 with offset.

**Routing** is data: the rules (`/v1/routing/rules`: who leads each district's categories, city
jurisdiction, deadlines in working days, automatic escalation, the feedback, return and reminder
windows) and the work calendar (`/v1/calendar`: official holidays and make-up days, admin
overrides). **Automatic actions** are events of the caller `system` in a problem's audit trail,
each with its reason: a reminder (`problem.reminded`) before a deadline and on a deferral's review
date; `problem.overdue` once per deadline, with `problem.escalated` where the rules escalate
automatically or `problem.supervised` at the city tier; `problem.closed` when the feedback window
has passed. Each is appended once, as of the instant it fell due.
"""

TAGS = [
    {"name": "problems", "description": "The problems and their lifecycle commands."},
    {
        "name": "units",
        "description": "The routing tree: rooms, departments, function groups, teams, groups.",
    },
    {
        "name": "enterprises",
        "description": "The enterprise directory (unified social credit codes).",
    },
    {"name": "categories", "description": "Problem categories (also the Open311 services)."},
    {
        "name": "routing",
        "description": "Routing rules as data: who leads each district's categories, city "
        "jurisdiction, deadlines in working days, automatic escalation, the feedback, return and "
        "reminder windows. Versioned; every change is an event.",
    },
    {
        "name": "calendar",
        "description": "The working-day calendar (工作日): official holidays and make-up days, "
        "admin overrides, the Monday–Friday fallback beyond the official data.",
    },
    {"name": "api keys", "description": "Keys, roles and scope."},
    {
        "name": "events",
        "description": "The global event feed: pages (`GET /v1/events`) and a live Server-Sent Events "
        "stream (`GET /v1/events/stream`), scoped to the key.",
    },
    {
        "name": "ledgers",
        "description": "Ledgers (台账): import the spreadsheets dispatch rooms keep; export problems "
        "as one (CSV or Excel, Chinese column titles).",
    },
    {
        "name": "webhooks",
        "description": "Signed notifications of problem events (Standard Webhooks); payloads under Webhooks.",
    },
    {
        "name": "statistics",
        "description": "Solve rates, aging, unit rankings with warnings, dispatch reports; now or as of "
        "any past instant, scoped by the caller's role.",
    },
    {
        "name": "board",
        "description": "The wall board (`/board`, HTML for the rooms' screens): read-only board "
        "links for wall screens, scoped to a district or the whole city, revocable.",
    },
    {"name": "operations", "description": "Health, readiness and the error catalogue."},
    {
        "name": "open311",
        "description": "Open311 GeoReport v2 (`/open311/v2/`, JSON and XML): categories as services, "
        "problems as service requests. Errors are Open311's arrays of `{code, description}`.",
    },
]


class Services:
    """Everything the routers need, built once per process."""

    def __init__(self, settings: Settings, clock: Clock) -> None:
        self.settings = settings
        self.clock = clock
        self.db = Database(
            settings.database_url,
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            statement_timeout_ms=settings.db_statement_timeout_ms,
            sqlite_synchronous=settings.sqlite_synchronous,
            prepared_statements=settings.db_prepared_statements,
        )
        self.store = EventStore(self.db, clock)
        self.directory = Directory(self.db, self.store, clock)
        # Routing rules and calendar overrides: cached per process, reloaded when they change.
        self.watch = StreamWatch(self.store, settings.routing_refresh_seconds)
        self.calendar = WorkCalendar(settings.tz)
        self.rules = RulesRepository(self.db, self.store, self.directory, self.watch, clock)
        self.calendar_overrides = CalendarOverrides(self.db, self.store, self.calendar, self.watch, clock)
        self.keys = Keys(self.db, self.store, self.directory, clock)
        self.limiter = RateLimiter(settings.rate_limit_table, clock)
        # Background work of this process: coroutines `(stop) -> None`, started by the lifespan
        # when BACKGROUND is on (and by `dispatchroom worker`). Packages append theirs here.
        self.workers: list[Callable[[asyncio.Event], Coroutine[Any, Any, None]]] = []
        if self.db.is_postgres:
            self.workers.append(
                lambda stop: run_sequencer(self.store, stop, settings.sequencer_poll_ms / 1000)
            )
        self.problems = ProblemService(self.db, self.store, self.directory, self.rules, self.calendar, clock)
        # Read models: inline ones (written with the events) and followers (run as workers).
        self.projections = Projections(
            self.db, self.store, clock, window_seconds=settings.follower_window_ms / 1000, settings=settings
        )
        for projection in problem_projections(self.calendar):
            self.projections.add(projection)
        self.workers.extend(self.projections.workers())
        self.stats = Statistics(self.db, self.calendar, self.rules, self.directory, clock)
        self.rankings = Rankings(self.stats)
        self.reports = DispatchReports(self.stats, self.rankings)
        self.board = Board(self.stats, self.rankings, self.reports, settings)
        self.scheduler = Scheduler(
            self.db,
            self.problems,
            clock,
            interval_seconds=settings.scheduler_interval_seconds,
            import_settle_seconds=settings.import_settle_seconds,
        )
        if settings.scheduler_interval_seconds > 0:
            self.workers.append(self.scheduler.run)
        if settings.prepare_periods_seconds > 0:
            interval = settings.prepare_periods_seconds
            self.workers.append(lambda stop: self.rankings.run_preparer(stop, interval))
        self.webhooks = Webhooks(self.db, self.store, self.directory, settings, clock)
        self.workers += webhook_workers(self.webhooks, self.store, self.calendar, settings, clock)

    def attach(self, app: FastAPI) -> None:
        app.state.services = self
        for name in (
            "settings",
            "clock",
            "db",
            "store",
            "calendar",
            "rules",
            "calendar_overrides",
            "directory",
            "keys",
            "limiter",
            "problems",
            "webhooks",
        ):
            setattr(app.state, name, getattr(self, name))

    async def run_background(self, stop: asyncio.Event) -> None:
        """Run every background worker of this process until `stop` is set, then cancel them
        (the API processes' lifespan with BACKGROUND on, and `dispatchroom worker`)."""
        tasks = [asyncio.create_task(worker(stop)) for worker in self.workers]
        try:
            await stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            # A worker cancelled while it connects may end in another error (asyncpg turns the
            # cancellation of a connect into TimeoutError): stopping goes on regardless.
            for result in await asyncio.gather(*tasks, return_exceptions=True):
                if isinstance(result, Exception):
                    log.warning("background work ended with %r while stopping", result)

    async def bootstrap(self) -> None:
        """Reference data every installation needs; idempotent and safe to run concurrently."""
        await self.directory.ensure_default_categories()
        await self.watch.refresh(force=True)
        if self.settings.admin_api_key is not None:
            await self.keys.ensure_admin_key(self.settings.admin_api_key.get_secret_value())


def clock_for(settings: Settings) -> Clock:
    """The system clock (shifted by CLOCK_OFFSET_SECONDS in tests that need a future)."""
    if settings.clock_offset_seconds:
        return OffsetClock(timedelta(seconds=settings.clock_offset_seconds))
    return SystemClock()


def create_app(settings: Settings | None = None, *, clock: Clock | None = None) -> FastAPI:
    settings = settings or Settings()
    clock = clock or clock_for(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = Services(settings, clock)
        services.attach(app)
        stop = asyncio.Event()
        # Set as soon as the server is told to stop, so that endless responses (event streams)
        # end before the server waits for them (background work stops with the lifespan).
        stopping = asyncio.Event()
        app.state.stopping = stopping
        loop = asyncio.get_running_loop()
        undo_signals = on_server_exit(lambda: loop.call_soon_threadsafe(stopping.set))
        background: asyncio.Task[None] | None = None
        try:
            await services.bootstrap()
            if settings.environment != "test":
                heap.settle()
            if settings.background:
                background = asyncio.create_task(services.run_background(stop))
            yield
        finally:
            stopping.set()
            stop.set()
            undo_signals()
            if background is not None:
                await background
            await services.db.dispose()

    app = FastAPI(
        title="Dispatchroom",
        version=app_package.__version__,
        description=DESCRIPTION,
        openapi_tags=TAGS,
        lifespan=lifespan,
        dependencies=[Depends(clean_target)],
    )
    install_error_handlers(app)
    install_open311_errors(app)
    hide_keys_in_access_log()
    _problem_json_openapi(app)
    if settings.cors_allow_origins:
        # Browser pages of these origins may call the API. Keys travel in `Authorization`, never
        # in cookies, so credentials (cookies) are not allowed.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_allow_origins,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=CORS_REQUEST_HEADERS,
            expose_headers=CORS_EXPOSED_HEADERS,
            allow_credentials=False,
            max_age=600,
        )
    app.add_middleware(  # outermost: every response, preflights included, gets its headers
        RequestContextMiddleware,
        max_body_bytes=settings.max_request_bytes,
        limits={"/v1/imports": settings.max_import_bytes},
    )
    app.include_router(ledger_router)  # before /v1/problems/{problem_id}: /v1/problems/export
    app.include_router(problems_router)
    app.include_router(statistics_router)
    app.include_router(directory_router)
    app.include_router(routing_router)
    app.include_router(keys_router)
    app.include_router(open311_router)
    app.include_router(feed_router)
    app.include_router(webhooks_router)
    app.include_router(board_tokens_router)
    app.include_router(board_router)
    app.add_middleware(BoardHeaders)
    document_webhooks(app)
    _operations(app)
    return app


ERROR_EXAMPLE = {
    "code": "invalid_transition",
    "status": 409,
    "title": "Transition not allowed",
    "description": "The command is not allowed in the problem's current status or tier.",
}


def _operations(app: FastAPI) -> None:
    @app.get(
        "/healthz",
        tags=["operations"],
        operation_id="healthz",
        summary="Liveness",
        responses={200: {"content": {"application/json": {"example": {"status": "ok"}}}}},
    )
    async def healthz() -> dict[str, str]:
        """The process is up (it does not look at the database)."""
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["operations"],
        operation_id="readyz",
        summary="Readiness",
        responses={
            200: {
                "content": {
                    "application/json": {
                        "example": {
                            "status": "ready",
                            "checks": {
                                "database": "ok",
                                "calendar": {"official_years": [2004, 2026], "fallback_years": []},
                            },
                            "warnings": [],
                        }
                    }
                }
            },
            503: {"description": "Not ready"},
        },
    )
    async def readyz(request: Request) -> JSONResponse:
        """Ready when the database answers. `warnings` lists what an operator should know (a
        work calendar running on its Monday–Friday fallback, positions lagging behind)."""
        state = request.app.state
        checks: dict[str, Any] = {}
        warnings: list[str] = []
        ready = True
        try:
            async with state.db.read() as conn:
                await conn.exec_driver_sql("SELECT 1")
            checks["database"] = "ok"
        except Exception as exc:
            checks["database"] = f"unavailable: {type(exc).__name__}"
            ready = False
        calendar: WorkCalendar = state.calendar
        missing = calendar.upcoming_fallback(state.clock.now())
        first, last = official_years()
        checks["calendar"] = {
            "official_years": [first, last],
            "fallback_years": sorted(calendar.fallback_years),
        }
        if missing:
            warnings.append(fallback_warning(missing))
        body = {"status": "ready" if ready else "not ready", "checks": checks, "warnings": warnings}
        headers = {} if ready else {"Retry-After": "5"}
        return JSONResponse(body, status_code=200 if ready else 503, headers=headers)

    @app.get(
        "/metrics",
        tags=["operations"],
        operation_id="metrics",
        summary="Prometheus metrics",
        response_class=Response,
        responses={
            200: {
                "content": {
                    "text/plain": {
                        "example": "# HELP dispatchroom_http_requests_total HTTP requests\n"
                        'dispatchroom_http_requests_total{method="GET",route="/v1/me",status="200"} 42\n'
                    }
                }
            }
        },
    )
    async def metrics(request: Request) -> Response:
        """Request rates and latencies, appends, conflicts, follower lag, calendar fallback."""
        calendar: WorkCalendar = request.app.state.calendar
        CALENDAR_FALLBACK.set(len(calendar.upcoming_fallback(request.app.state.clock.now())))
        body, content_type = render()
        return Response(body, media_type=content_type)

    @app.get(
        "/errors",
        tags=["operations"],
        operation_id="list_error_codes",
        summary="The error catalogue",
        responses={200: {"content": {"application/json": {"example": [ERROR_EXAMPLE]}}}},
    )
    async def list_errors() -> list[dict[str, Any]]:
        """Every `code` a problem+json error can carry, with its HTTP status."""
        return [_error_entry(e) for e in sorted(CATALOGUE.values(), key=lambda e: (e.status, e.code))]

    @app.get(
        "/errors/{code}",
        tags=["operations"],
        operation_id="get_error_code",
        summary="One error code",
        responses={
            200: {"content": {"application/json": {"example": ERROR_EXAMPLE}}},
            404: {"description": "No such code"},
        },
    )
    async def get_error(code: str) -> dict[str, Any]:
        """One entry of the error catalogue: the `code` a problem+json error carries, its HTTP
        status and what it means (each error's `type` points here)."""
        entry = CATALOGUE.get(code)
        if entry is None:
            raise AppError("not_found", f"no error code {code!r}")
        return _error_entry(entry)


def _problem_json_openapi(app: FastAPI) -> None:
    """Every error response is `application/problem+json` with the `ProblemDetail` schema: the
    document says so (FastAPI's default 422 schema is replaced, since our handler renders it)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
            webhooks=app.webhooks.routes,
            tags=app.openapi_tags,
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components["ProblemDetail"] = ProblemDetail.model_json_schema(
            ref_template="#/components/schemas/{model}"
        )
        for model in ("HTTPValidationError", "ValidationError"):
            components.pop(model, None)
        components.update(
            ProblemDetail.model_json_schema(ref_template="#/components/schemas/{model}").pop("$defs", {})
        )
        components["ProblemDetail"].pop("$defs", None)
        components["Open311Errors"] = {
            "type": "array",
            "description": "Open311 errors (XML: `<errors><error><code/><description/></error></errors>`).",
            "items": {
                "type": "object",
                "required": ["code", "description"],
                "properties": {"code": {"type": "integer"}, "description": {"type": "string"}},
            },
        }
        ref = {"$ref": "#/components/schemas/ProblemDetail"}
        for path, methods in schema.get("paths", {}).items():
            if path.startswith("/open311/"):
                # Open311's own error format, declared by its routes; it has no 422 (a bad
                # parameter is its 400).
                for operation in methods.values():
                    responses_ = operation.get("responses", {})
                    responses_.pop("422", None)
                    if "403" in responses_:  # takes an api_key: rate limited
                        errors = dict(responses_["403"]["content"])  # the same two formats
                        responses_["429"] = _rate_limited_response(
                            {media: {"schema": body["schema"]} for media, body in errors.items()}
                        )
                continue
            for operation in methods.values():
                _declare_generic_errors(path, operation)
                if "401" in operation.get("responses", {}):  # takes a key: rate limited
                    operation["responses"]["429"] = _rate_limited_response({})
                for code, response in operation.get("responses", {}).items():
                    if code[0] in "45":
                        response["content"] = {PROBLEM_JSON: {"schema": ref}}
                        if code == "422":
                            response["description"] = "Invalid input (each field in `errors`)"
        fill_examples(schema)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _declare_generic_errors(path: str, operation: dict[str, Any]) -> None:
    """Errors any route of a kind can answer, whatever its handler does: a body that is not
    JSON (400) or too large (413) where a body is read, a path or query string with a NUL or
    bytes that are not UTF-8 (400, `clean_target`), a database outage (503) under `/v1`."""
    responses = operation.setdefault("responses", {})
    if "application/json" in operation.get("requestBody", {}).get("content", {}):
        responses.setdefault("400", {"description": "The body is not well-formed JSON"})
        responses.setdefault("413", {"description": "Request body too large"})
    if operation.get("parameters"):
        responses.setdefault("400", {"description": "A NUL or bytes that are not UTF-8 in the path or query"})
    if path.startswith("/v1/"):
        responses.setdefault(
            "503",
            {
                "description": "The database is unavailable; retry after `Retry-After` seconds",
                "headers": {"Retry-After": {"schema": {"type": "integer"}}},
            },
        )


def _rate_limited_response(content: dict[str, Any]) -> dict[str, Any]:
    """The 429 of every operation that takes a key, with the headers a client backs off by."""
    return {
        "description": "Rate limited: the key made more requests than its role's limit allows "
        "(`RATE_LIMITS`); retry after `Retry-After` seconds",
        "headers": {
            "Retry-After": {
                "description": "Seconds until a request is allowed again.",
                "schema": {"type": "integer"},
            },
            "RateLimit-Policy": {
                "description": 'The policy (draft-ietf-httpapi-ratelimit-headers): `"handler";q=600;w=60`.',
                "schema": {"type": "string"},
            },
            "RateLimit": {
                "description": 'Requests left, seconds until the quota is whole: `"handler";r=0;t=60`.',
                "schema": {"type": "string"},
            },
        },
        "content": content,
    }


def _error_entry(entry: ErrorCode) -> dict[str, Any]:
    return {
        "code": entry.code,
        "status": entry.status,
        "title": entry.title,
        "description": entry.description,
    }
