"""FastAPI dependencies shared by the routers: the caller, the request's metadata, services.

Services are put on `app.state` by the application factory; each getter here only reads them,
so packages stay unaware of how the application is wired.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.core.clock import Clock
from app.core.db import Database
from app.core.errors import AppError
from app.core.ratelimit import RateLimiter
from app.core.requestmeta import RequestMeta
from app.core.security import Caller, Role, authenticate
from app.core.settings import Settings
from app.core.types import INT32_MAX

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="An API key: `Authorization: Bearer dr_…`. Keys are created by an admin "
    "(`POST /v1/api-keys` or `dispatchroom keys create`) and shown once.",
)


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


async def get_clock(request: Request) -> Clock:
    clock: Clock = request.app.state.clock
    return clock


KeyLookup = Callable[[str], Awaitable[Caller | None]]


async def identify(request: Request, presented: str, lookup: KeyLookup | None = None) -> Caller | None:
    """The caller a presented key belongs to (None: unknown or revoked), counted against its
    rate limit (429 `rate_limited` over it). Every way of presenting a key comes here. `lookup`
    reads the key (default: `authenticate`; the submission reads it with its references)."""
    if lookup is None:
        caller = await authenticate(request.app.state.db, presented)
    else:
        caller = await lookup(presented)
    limiter: RateLimiter | None = getattr(request.app.state, "limiter", None)
    if caller is not None and caller.role is not None and limiter is not None and limiter.enabled:
        limiter.check(request.scope.setdefault("state", {}), caller.key_id, caller.role.value)
    return caller


async def get_caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Caller:
    return await require_caller(request, credentials)


async def require_caller(
    request: Request, credentials: HTTPAuthorizationCredentials | None, lookup: KeyLookup | None = None
) -> Caller:
    """The caller of a request's bearer key, or 401 (`get_caller`, and routes that read the key
    their own way: `lookup`, as for `identify`)."""
    if credentials is None or not credentials.credentials:
        raise AppError(
            "unauthorized",
            "send an API key as `Authorization: Bearer <key>`",
            headers={"WWW-Authenticate": 'Bearer realm="dispatchroom"'},
        )
    caller = await identify(request, credentials.credentials, lookup)
    if caller is None:
        raise AppError(
            "unauthorized",
            "the API key is unknown or revoked",
            headers={"WWW-Authenticate": 'Bearer realm="dispatchroom", error="invalid_token"'},
        )
    request.state.caller = caller
    return caller


async def get_request_meta(request: Request) -> RequestMeta:
    return RequestMeta(
        request_id=getattr(request.state, "request_id", None),
        correlation_id=request.headers.get("x-correlation-id") or None,
        causation_id=request.headers.get("x-causation-id") or None,
    )


def require_role(*roles: Role) -> Callable[..., Coroutine[Any, Any, Caller]]:
    allowed = ", ".join(r.value for r in roles)

    async def dependency(caller: Annotated[Caller, Depends(get_caller)]) -> Caller:
        if caller.role not in roles:
            raise AppError("forbidden", f"this needs one of the roles: {allowed}")
        return caller

    return dependency


_ETAG = re.compile(r'^\s*(?:W/)?"?(\d{1,9})"?\s*$')


def parse_if_match(value: str | None) -> int | None:
    """The version an `If-Match` header pins (None: no header, or `*`)."""
    if value is None or value.strip() == "*":
        return None
    match = _ETAG.match(value)
    if not match:
        raise AppError("bad_request", 'If-Match must be an ETag of this API, e.g. "3"')
    version = int(match.group(1))
    if version > INT32_MAX:  # no stream gets there; the database could not even compare it
        raise AppError("precondition_failed", f"If-Match names version {version}, which no resource has")
    return version


SettingsDep = Annotated[Settings, Depends(get_settings)]
DbDep = Annotated[Database, Depends(get_db)]
ClockDep = Annotated[Clock, Depends(get_clock)]
CallerDep = Annotated[Caller, Depends(get_caller)]
AdminDep = Annotated[Caller, Depends(require_role(Role.admin))]
MetaDep = Annotated[RequestMeta, Depends(get_request_meta)]
