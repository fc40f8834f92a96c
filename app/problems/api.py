"""`/v1/problems`: submit, list, read, audit trail, and one route per command.

The routes translate HTTP to commands and states to JSON; everything else is in the service.
(No `from __future__ import annotations` here: FastAPI reads the body types of the generated
command routes from their annotations at registration time.)
"""

from collections.abc import Callable, Coroutine, Mapping
from datetime import date, datetime, time
from types import SimpleNamespace
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Body, Depends, Header, Path, Query, Request, Response, status
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field, TypeAdapter, ValidationError
from starlette.exceptions import HTTPException

from app.core.deps import (
    CallerDep,
    MetaDep,
    bearer,
    get_request_meta,
    get_settings,
    parse_if_match,
    require_caller,
)
from app.core.errors import AppError, responses
from app.core.http import clean_target
from app.core.pagination import DEFAULT_LIMIT, MAX_LIMIT, Page
from app.core.security import Caller, caller_from_row, hash_key
from app.core.settings import Settings
from app.directory.service import SubmissionRefs
from app.problems import domain
from app.problems.asof import get_as_of, list_as_of
from app.problems.domain import ProblemState, Status
from app.problems.projection import view_row
from app.problems.schemas import (
    AcceptIn,
    AssignIn,
    CloseIn,
    CommandBody,
    DecideExtensionIn,
    DecideReturnIn,
    DeferIn,
    EscalateIn,
    FeedbackIn,
    ProgressIn,
    ReopenIn,
    RequestExtensionIn,
    ResolveIn,
    ResumeIn,
    ReturnIn,
    SubmitIn,
    SuperviseIn,
    WithdrawIn,
)
from app.problems.service import ProblemService
from app.projections.params import InstantParam, as_of_instant
from app.projections.problem_view import FLAGS, ProblemFilter, ProblemOut, to_api
from app.routing.tree import Tier

router = APIRouter(prefix="/v1", tags=["problems"])


async def get_problem_service(request: Request) -> ProblemService:
    service: ProblemService = request.app.state.problems
    return service


ServiceDep = Annotated[ProblemService, Depends(get_problem_service)]
ProblemId = Annotated[str, Path(max_length=64, description="The problem's id (a UUID).")]
IfMatch = Annotated[
    str | None,
    Header(
        alias="If-Match",
        max_length=40,
        description='The version you read (the ETag, e.g. `"3"`). On mismatch: 412.',
    ),
]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        description="Repeating a request with the same key and body returns the first result; "
        "the same key with another body is 422. Keys are per API key.",
    ),
]
AsOf = Annotated[
    InstantParam,
    Query(
        description="The state at this past instant (ISO datetime; a date means the end of that day), "
        "with aging relative to it. Without it: now."
    ),
]


def problem_json(state: ProblemState, service: ProblemService, settings: Settings) -> ProblemOut:
    row = SimpleNamespace(**view_row(state))
    return to_api(row, service.clock.now(), service.calendar, tz=settings.tz)


def _respond(headers: Mapping[str, str], out: ProblemOut, status_code: int = 200) -> Response:
    """The problem as JSON with its ETag, serialised once by pydantic (the route's
    `response_model` documents it; FastAPI would validate the model a second time). `headers`:
    the route's own (those it set on FastAPI's `response`)."""
    return Response(
        out.model_dump_json(),
        status_code,
        {**headers, "ETag": f'"{out.version}"'},
        media_type="application/json",
    )


# -- submit, list, read ------------------------------------------------------------------------


def _submitted(state: ProblemState, created: bool, service: ProblemService, settings: Settings) -> Response:
    headers = {"location": f"/v1/problems/{state.id}"}
    if not created:
        headers["idempotent-replayed"] = "true"
    return _respond(headers, problem_json(state, service, settings), status.HTTP_201_CREATED)


async def submit_problem(
    body: SubmitIn,
    caller: CallerDep,
    meta: MetaDep,
    service: ServiceDep,
    settings: Annotated[Settings, Depends(get_settings)],
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Record an enterprise's problem (企业问题需求). It starts at the `local` tier, `assigned` to
    the service group that covers the enterprise, with the local deadline. Writes exactly one
    event (version 1). Portals, handlers, dispatchers, commanders and admins may submit."""
    state, created = await service.submit(caller, body, meta, idempotency_key=idempotency_key)
    return _submitted(state, created, service, settings)


_IDEMPOTENCY_KEY: TypeAdapter[str | None] = TypeAdapter(IdempotencyKey)


class SubmitRoute(APIRoute):
    """`POST /v1/problems`, the hot path of the service, without FastAPI's per-request machinery
    (dependency solving, `json.loads` then validation) and with one round trip fewer: the
    caller's key is read in the same statement as what the submission refers to
    (`Directory.for_keyed_submission`). For a body of type `application/json` that validates and
    a valid `Idempotency-Key`, it does what `submit_problem` does under FastAPI, with the same
    functions in the same order (`clean_target`, the key and its rate limit, the service, the
    same response); anything else goes to FastAPI's handler of the route, so every refusal of
    the input is FastAPI's own (after authentication, as always). The route is declared as usual
    (OpenAPI, the access matrix); `tests/problems/test_submit_fast_path.py` holds both paths to
    the same answers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        declared = super().get_route_handler()

        async def handler(request: Request) -> Response:
            headers = request.headers
            if headers.get("content-type") != "application/json":
                return await declared(request)
            idempotency_key = headers.get("idempotency-key")
            try:
                _IDEMPOTENCY_KEY.validate_python(idempotency_key)
            except ValidationError:
                return await declared(request)
            try:
                raw = await request.body()
            except HTTPException:
                raise
            except Exception as exc:  # as FastAPI answers it (our body limit makes it a 413)
                raise HTTPException(400, "There was an error parsing the body") from exc
            try:
                body = SubmitIn.model_validate_json(raw)
            except ValidationError:
                return await declared(request)  # refused as before, by the same code
            await clean_target(request)
            service = await get_problem_service(request)
            refs: SubmissionRefs | None = None

            async def lookup(presented: str) -> Caller | None:
                nonlocal refs
                digest = hash_key(presented)
                key, refs = await service.directory.for_keyed_submission(
                    digest, body.enterprise_id.upper(), body.category, body.reporter_unit_id
                )
                return caller_from_row(key, digest)

            caller = await require_caller(request, await bearer(request), lookup)
            meta = await get_request_meta(request)
            settings = await get_settings(request)
            state, created = await service.submit(
                caller, body, meta, idempotency_key=idempotency_key, refs=refs
            )
            return _submitted(state, created, service, settings)

        return handler


router.add_api_route(
    "/problems",
    submit_problem,
    methods=["POST"],
    operation_id="submit_problem",
    summary="Submit a problem",
    status_code=status.HTTP_201_CREATED,
    response_model=ProblemOut,
    responses=responses(400, 401, 403, 422),
    route_class_override=SubmitRoute,
)


def _split(values: list[str] | None, allowed: set[str] | None, name: str) -> tuple[str, ...]:
    items = tuple(v.strip() for value in values or () for v in value.split(",") if v.strip())
    if allowed is not None:
        bad = [v for v in items if v not in allowed]
        if bad:
            raise AppError(
                "validation_failed",
                f"unknown {name}: {', '.join(bad)}",
                errors=[
                    {
                        "loc": ["query", name],
                        "msg": f"must be one of {sorted(allowed)}",
                        "type": "enum",
                    }
                ],
            )
    return items


def _instant(value: datetime | date | None, settings: Settings, *, end: bool = False) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=settings.tz)
        return value
    if end:  # a date as an upper bound includes the whole day
        return datetime.combine(value, time.max, tzinfo=settings.tz)
    return datetime.combine(value, time.min, tzinfo=settings.tz)


@router.get(
    "/problems",
    operation_id="list_problems",
    summary="List problems",
    response_model=Page[ProblemOut],
    responses=responses(400, 401, 422),
)
async def list_problems(
    caller: CallerDep,
    service: ServiceDep,
    settings: Annotated[Settings, Depends(get_settings)],
    status_: Annotated[list[str] | None, Query(alias="status", description="Comma list or repeated.")] = None,
    tier: Annotated[list[str] | None, Query(description="Comma list or repeated.")] = None,
    holder_unit_id: Annotated[str | None, Query(max_length=64)] = None,
    lead_unit_id: Annotated[str | None, Query(max_length=64)] = None,
    district_id: Annotated[str | None, Query(max_length=12)] = None,
    category: Annotated[list[str] | None, Query(description="Comma list or repeated.")] = None,
    enterprise_id: Annotated[str | None, Query(max_length=18)] = None,
    overdue: bool | None = None,
    submitted_from: Annotated[datetime | date | None, Query(description="Inclusive.")] = None,
    submitted_to: Annotated[
        datetime | date | None,
        Query(description="Exclusive for instants; a date includes that day."),
    ] = None,
    needs_attention: Annotated[
        bool | None, Query(description="Flagged for the commander (any of `flags`), or not.")
    ] = None,
    flag: Annotated[
        list[str] | None,
        Query(description="`unrouted`, `returned_too_often`: problems with every flag given."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
    as_of: AsOf = None,
) -> Page[ProblemOut]:
    """Problems in the caller's scope, newest first (a stable order: submission time, then id).
    Filters combine with AND; list filters accept a comma list or repeated parameters. With
    `as_of`, the problems as they stood then: filters match their state at that instant, and
    each item is its state then (statistics' temporal model; it follows the event feed, usually
    well under a second behind)."""
    flt = ProblemFilter(
        status=_split(status_, {s.value for s in Status}, "status"),
        tier=_split(tier, {t.value for t in Tier}, "tier"),
        holder_unit_id=holder_unit_id,
        lead_unit_id=lead_unit_id,
        district_id=district_id,
        category=_split(category, None, "category"),
        enterprise_id=enterprise_id.upper() if enterprise_id else None,
        overdue=overdue,
        submitted_from=_instant(submitted_from, settings),
        submitted_to=_instant(submitted_to, settings, end=True),
        needs_attention=needs_attention,
        flags=_split(flag, set(FLAGS), "flag"),
    )
    now = service.clock.now()
    instant = as_of_instant(as_of, settings, now)
    if instant is not None and (flt.needs_attention is not None or flt.flags):
        raise AppError(
            "validation_failed",
            "needs_attention and flag describe the present; they cannot be combined with as_of",
            errors=[
                {"loc": ["query", "as_of"], "msg": "not with needs_attention or flag", "type": "conflict"}
            ],
        )
    if instant is not None:
        rows, next_cursor = await list_as_of(service, caller, flt, instant, limit=limit, cursor=cursor)
        now = instant
    else:
        rows, next_cursor = await service.list(caller, flt, limit=limit, cursor=cursor, now=now)
    return Page[ProblemOut](
        items=[to_api(r, now, service.calendar, tz=settings.tz) for r in rows],
        next_cursor=next_cursor,
    )


@router.get(
    "/problems/{problem_id}",
    operation_id="get_problem",
    summary="Get a problem",
    response_model=ProblemOut,
    responses=responses(401, 404, 422),
)
async def get_problem(
    problem_id: ProblemId,
    caller: CallerDep,
    service: ServiceDep,
    response: Response,
    settings: Annotated[Settings, Depends(get_settings)],
    as_of: AsOf = None,
) -> ProblemOut | Response:
    """The problem's current state with its aging. The `ETag` header carries its version, for
    `If-Match` on commands. Outside the caller's scope a problem does not exist (404). With
    `as_of`: its state at that instant (its events up to then), aging relative to it, no `ETag`
    (404 if it had not been submitted yet)."""
    instant = as_of_instant(as_of, settings, service.clock.now())
    if instant is not None:
        row = await get_as_of(service, caller, problem_id, instant)
        return to_api(row, instant, service.calendar, tz=settings.tz)
    row = await service.get_row(caller, problem_id)
    return _respond(response.headers, to_api(row, service.clock.now(), service.calendar, tz=settings.tz))


class EventOut(BaseModel):
    event_id: UUID
    type: str
    version: int = Field(description="Position in the problem's stream (1, 2, 3 …).")
    position: int | None = Field(
        description="Global position in the event feed (null for a moment after the append)."
    )
    schema_version: int
    occurred_at: datetime
    recorded_at: datetime
    data: dict[str, Any]
    metadata: dict[str, Any]


@router.get(
    "/problems/{problem_id}/events",
    operation_id="list_problem_events",
    summary="The problem's audit trail",
    response_model=list[EventOut],
    responses=responses(401, 404),
)
async def list_problem_events(
    problem_id: ProblemId,
    caller: CallerDep,
    service: ServiceDep,
    settings: Annotated[Settings, Depends(get_settings)],
) -> list[EventOut]:
    """Every event of the problem in stream order: who (metadata `actor`, `role`, `unit`),
    what (`type`, `data`) and when (`occurred_at`, business time; `recorded_at`, server time).
    Automatic actions have the actor `system`, metadata `automatic` (the action) and their
    `reason` in `data`."""
    events = await service.history(caller, problem_id)
    return [
        EventOut(
            event_id=e.event_id,
            type=e.type,
            version=e.stream_version,
            position=e.position,
            schema_version=e.schema_version,
            occurred_at=e.occurred_at.astimezone(settings.tz),
            recorded_at=e.recorded_at.astimezone(settings.tz),
            data=e.data,
            metadata=e.metadata,
        )
        for e in events
    ]


# -- commands ----------------------------------------------------------------------------------

Builder = Callable[[Any, ProblemService, ProblemState], domain.Command]


def _register(
    name: str,
    body_model: type[CommandBody],
    build: Builder,
    summary: str,
    description: str,
    units: Callable[[Any], list[str]] | None = None,
) -> None:
    async def endpoint(
        problem_id: ProblemId,
        caller: CallerDep,
        meta: MetaDep,
        service: ServiceDep,
        response: Response,
        settings: Annotated[Settings, Depends(get_settings)],
        body: Any = Body(),
        if_match: IfMatch = None,
    ) -> Response:
        state = await service.execute(
            caller,
            problem_id,
            lambda current: build(body, service, current),
            occurred_at=body.occurred_at,
            if_match=parse_if_match(if_match),
            meta=meta,
            units=units(body) if units else (),
        )
        return _respond(response.headers, problem_json(state, service, settings))

    endpoint.__annotations__["body"] = body_model
    operation = name.replace("-", "_") + "_problem"
    endpoint.__name__ = operation
    router.add_api_route(
        f"/problems/{{problem_id}}/{name}",
        endpoint,
        methods=["POST"],
        operation_id=operation,
        summary=summary,
        description=description
        + "\n\nWith `If-Match` the command applies only to that version (else 412); without it, "
        "a concurrent change makes the service decide again on the fresh state. A refused "
        "transition is 409 with a stable `code`.",
        response_model=ProblemOut,
        responses=responses(400, 401, 403, 404, 409, 412, 422),
    )


def _deadline(service: ProblemService, value: datetime | date) -> datetime:
    deadline = service.deadline_from(value)
    assert deadline is not None
    return deadline


_register(
    "accept",
    AcceptIn,
    lambda b, s, st: domain.Accept(note=b.note),
    "Accept (签收)",
    "The lead unit accepts an `assigned` problem: → `in_progress`.",
)
_register(
    "escalate",
    EscalateIn,
    lambda b, s, st: domain.Escalate(reason=b.reason),
    "Escalate (上交)",
    "local → the district dispatch room (or straight to the city command room for "
    "city-jurisdiction categories); district → the city command room. The problem waits "
    "`open` at the room with the new tier's deadline. Refused at the city tier "
    "(`already_at_top_tier`).",
)
_register(
    "assign",
    AssignIn,
    lambda b, s, st: domain.Assign(
        lead_unit_id=b.lead_unit_id,
        cooperating_unit_ids=tuple(b.cooperating_unit_ids) if b.cooperating_unit_ids is not None else None,
        deadline=s.deadline_from(b.deadline),
        note=b.note,
    ),
    "Assign (交办)",
    "A room hands its `open` problem (or re-assigns a held one) to a lead unit of its tier "
    "(牵头) with cooperating units (配合) and a deadline (限时办结). Without `lead_unit_id` "
    "the routing rule's proposal is taken; without `deadline` the tier's deadline stays.",
    units=lambda b: [x for x in [b.lead_unit_id, *(b.cooperating_unit_ids or [])] if x],
)
_register(
    "return",
    ReturnIn,
    lambda b, s, st: domain.Return(reason=b.reason),
    "Return (退回)",
    "The lead unit says the problem is not its jurisdiction, within the return window after "
    "assignment. The room rules on it with `decide-return`.",
)
_register(
    "decide-return",
    DecideReturnIn,
    lambda b, s, st: domain.DecideReturn(accept=b.accept, note=b.note),
    "Rule on a return",
    "The room accepts a return (→ `open` at the room; the deadline does not restart) or "
    "refuses it (the unit keeps the problem).",
)
_register(
    "progress",
    ProgressIn,
    lambda b, s, st: domain.Progress(note=b.note),
    "Report progress",
    "A progress note; the status does not change.",
)
_register(
    "request-extension",
    RequestExtensionIn,
    lambda b, s, st: domain.RequestExtension(deadline=_deadline(s, b.deadline), reason=b.reason),
    "Request an extension (延期)",
    "The lead unit asks for a later deadline, before the current one passes.",
)
_register(
    "decide-extension",
    DecideExtensionIn,
    lambda b, s, st: domain.DecideExtension(
        approve=b.approve, deadline=s.deadline_from(b.deadline), note=b.note
    ),
    "Decide an extension",
    "The room approves (the deadline moves) or refuses.",
)
_register(
    "defer",
    DeferIn,
    lambda b, s, st: domain.Defer(
        explanation=b.explanation,
        plan=tuple(domain.PlanStep(p.step, p.due_on) for p in b.plan),
        review_on=b.review_on,
    ),
    "Defer with a staged plan (问题不搁置)",
    "The problem cannot be solved soon: an explanation to the enterprise, a staged plan with "
    "dates and a review date. It is not overdue meanwhile; its deadline clock is paused.",
)
_register(
    "resume",
    ResumeIn,
    lambda b, s, st: domain.Resume(note=b.note),
    "Resume a deferred problem",
    "Back to `in_progress`; the unit gets back the working days it had left when it deferred.",
)
_register(
    "resolve",
    ResolveIn,
    lambda b, s, st: domain.Resolve(resolution=b.resolution),
    "Resolve (办结)",
    "The problem is solved; it awaits the enterprise's feedback.",
)
_register(
    "feedback",
    FeedbackIn,
    lambda b, s, st: domain.Feedback(score=b.score, comment=b.comment),
    "Record the enterprise's feedback (回访)",
    "Satisfaction 1–5: 4 or 5 closes the problem (销号); 1–3 reopens it (`in_progress`).",
)
_register(
    "reopen",
    ReopenIn,
    lambda b, s, st: domain.Reopen(reason=b.reason),
    "Reopen",
    "A resolved or closed problem goes back to work with a fresh deadline.",
)
_register(
    "supervise",
    SuperviseIn,
    lambda b, s, st: domain.Supervise(note=b.note),
    "Supervise (督办)",
    "A supervision notice from a higher tier; the status does not change.",
)
_register(
    "withdraw",
    WithdrawIn,
    lambda b, s, st: domain.Withdraw(reason=b.reason),
    "Withdraw",
    "The problem is withdrawn (it leaves the solve-rate denominators).",
)
_register(
    "close",
    CloseIn,
    lambda b, s, st: domain.Close(reason=b.reason),
    "Close without feedback (admin)",
    "Close a resolved problem without the enterprise's feedback.",
)
