"""`GET /v1/events` (the feed, page by page) and `GET /v1/events/stream` (Server-Sent Events).

Each stream reads the feed itself, a bounded batch at a time, and holds no database connection
while it writes; a slow consumer only slows its own stream (the server stops reading from our
generator while the socket's buffer is full), never the writers. Streams send a heartbeat
comment while idle, resume after `Last-Event-ID`, and end cleanly when the server stops.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Annotated

import orjson
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse

from app.core.deps import CallerDep, SettingsDep
from app.core.errors import AppError, responses
from app.core.security import Caller
from app.core.types import INT64_MAX
from app.feed.reader import FeedEvent, FeedPage, TypeFilter, read_feed
from app.problems.service import ProblemService

router = APIRouter(prefix="/v1", tags=["events"])

MAX_LIMIT = 1000
STREAM_BATCH = 200
POLL_SECONDS = 1.0  # how often an idle stream looks for events written by other processes


def _types(types: list[str] | None) -> TypeFilter:
    values = [v.strip() for value in types or () for v in value.split(",") if v.strip()]
    if len(values) > 50:
        raise AppError("bad_request", "at most 50 types")
    return TypeFilter.parse(values)


async def _subtree(request: Request, caller: Caller) -> frozenset[str]:
    """A handler's unit and the units below it (its scope); empty for other roles."""
    service: ProblemService = request.app.state.problems
    return (await service.actor(caller)).subtree


TypesQuery = Annotated[
    list[str] | None,
    Query(
        description="Event types, comma list or repeated; `problem.*` matches a prefix. Default: all.",
        examples=["problem.escalated,problem.resolved"],
    ),
]


@router.get(
    "/events",
    operation_id="list_events",
    summary="The event feed",
    response_model=FeedPage,
    responses=responses(400, 401, 422),
)
async def list_events(
    request: Request,
    caller: CallerDep,
    settings: SettingsDep,
    after: Annotated[
        int, Query(ge=0, le=INT64_MAX, description="Events after this position (0: from the start).")
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
    types: TypesQuery = None,
) -> FeedPage:
    """Every event in global order (`position`, gap-free and strictly increasing; an event never
    appears below a position you have read), scoped to the key: admins read every event
    (problems, reference data, keys — without key hashes); other roles read the events of the
    problems they may see now. Poll with `after=last_position`: it moves past events outside
    your scope, so nothing is read twice. `head` is the latest position."""
    subtree = await _subtree(request, caller)
    return await read_feed(
        request.app.state.db,
        caller,
        subtree,
        after=after,
        limit=limit,
        types=_types(types),
        tz=settings.tz,
    )


def _message(event: FeedEvent) -> bytes:
    data = orjson.dumps(event.model_dump(mode="json"))
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (event.position, event.type.encode(), data)


async def wait_for_feed(request: Request, stopping: asyncio.Event, seconds: float) -> None:
    """Until new positions appear in this process, the server stops, or `seconds` pass."""
    store = request.app.state.store
    waiters = [
        asyncio.ensure_future(store.wait_for_positions(seconds)),
        asyncio.ensure_future(stopping.wait()),
    ]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


def _last_event_id(value: str | None, after: int) -> int:
    if value is None or not value.strip():
        return after
    if not value.strip().isdigit():
        raise AppError("bad_request", "Last-Event-ID must be a position this stream sent")
    return int(value.strip())


@router.get(
    "/events/stream",
    operation_id="stream_events",
    summary="The event feed, live (Server-Sent Events)",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "`text/event-stream`: one message per event (`id` = position, "
            "`event` = type, `data` = the event as in `GET /v1/events`), `: heartbeat` comments",
            "content": {
                "text/event-stream": {
                    "schema": {"type": "string"},
                    "example": "retry: 2000\n\nid: 1042\nevent: problem.escalated\n"
                    'data: {"position": 1042, …}\n\n: heartbeat\n\n',
                }
            },
        },
        **responses(400, 401, 422),
    },
)
async def stream_events(
    request: Request,
    caller: CallerDep,
    settings: SettingsDep,
    after: Annotated[
        int, Query(ge=0, le=INT64_MAX, description="Start after this position (0: from the start).")
    ] = 0,
    types: TypesQuery = None,
    heartbeat: Annotated[
        float, Query(ge=0.2, le=300, description="Seconds between heartbeat comments while idle.")
    ] = 15.0,
    last_event_id: Annotated[
        str | None,
        Header(
            alias="Last-Event-ID",
            max_length=20,
            description="Sent by EventSource on reconnection; resumes after it (wins over `after`).",
        ),
    ] = None,
) -> StreamingResponse:
    """The feed as Server-Sent Events, in the same scope as `GET /v1/events`. Reconnect with
    `Last-Event-ID` (browsers do it for you) to resume exactly after the last event received.
    While idle the stream sends a `: heartbeat` comment every `heartbeat` seconds; when it
    has skipped events outside your scope it sends a bare `id:` line so a reconnection does not
    look at them again. When the server stops, the stream ends; reconnect to another one."""
    cursor = _last_event_id(last_event_id, after)
    type_filter = _types(types)
    subtree = await _subtree(request, caller)
    stopping: asyncio.Event = request.app.state.stopping
    db = request.app.state.db

    async def messages() -> AsyncIterator[bytes]:
        position = cursor
        yield b"retry: 2000\n\n"
        last_sent = time.monotonic()
        while not stopping.is_set():
            page = await read_feed(
                db, caller, subtree, after=position, limit=STREAM_BATCH, types=type_filter, tz=settings.tz
            )
            for event in page.items:
                yield _message(event)
            if page.items:
                last_sent = time.monotonic()
            elif page.last_position > position:
                yield b"id: %d\n\n" % page.last_position
            position = page.last_position
            if position < page.head:
                continue  # more to read right away
            idle = time.monotonic() - last_sent
            if idle >= heartbeat:
                yield b": heartbeat\n\n"
                last_sent = time.monotonic()
                idle = 0.0
            await wait_for_feed(request, stopping, min(POLL_SECONDS, heartbeat - idle))
        yield b": server stopping\n\n"

    return StreamingResponse(
        messages(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
