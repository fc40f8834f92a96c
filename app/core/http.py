"""HTTP plumbing: problem+json error handlers, request ids, the request body limit, the headers
every response carries (security headers, rate limits)."""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any
from urllib.parse import unquote_to_bytes

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.core.errors import CATALOGUE, PROBLEM_JSON, AppError, problem_document
from app.core.metrics import HTTP_LATENCY, HTTP_REQUESTS
from app.core.ratelimit import STATE_KEY as RATE_LIMIT_STATE

log = logging.getLogger("dispatchroom")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,100}$")
_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}
RETRY_AFTER_SECONDS = 5

# Every response carries these unless the route set its own (the board sets its own policy):
# no MIME sniffing, no referrer leaking problem ids to other sites, never framed (clickjacking).
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"frame-ancestors 'none'"),
)


def problem_response(
    code: str,
    detail: str,
    *,
    headers: dict[str, str] | None = None,
    instance: str | None = None,
    **extra: Any,
) -> JSONResponse:
    return JSONResponse(
        problem_document(code, detail, instance=instance, **extra),
        status_code=CATALOGUE[code].status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )


def _field_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    errors = []
    for err in exc.errors():
        loc = [part if isinstance(part, (str, int)) else str(part) for part in err.get("loc", ())]
        errors.append({"loc": loc, "msg": str(err.get("msg", "")), "type": str(err.get("type", ""))})
    return errors


DATABASE_ERRORS: tuple[type[Exception], ...] = (sa.exc.DBAPIError, OSError)


def _is_database_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError)):
        return True
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, (ConnectionError, TimeoutError, OSError)) and not isinstance(
        exc, FileNotFoundError
    )


def install_error_handlers(app: FastAPI) -> None:
    async def app_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, AppError)
        return problem_response(
            exc.code, exc.detail, headers=exc.headers, instance=request.url.path, **exc.extra
        )

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = _field_errors(exc)
        first = errors[0] if errors else {"loc": [], "msg": "invalid"}
        where = ".".join(str(p) for p in first["loc"])
        return problem_response(
            "validation_failed",
            f"{where}: {first['msg']}",
            instance=request.url.path,
            errors=errors,
        )

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = _STATUS_CODES.get(
            exc.status_code, "bad_request" if exc.status_code < 500 else "internal_error"
        )
        detail = exc.detail if isinstance(exc.detail, str) else CATALOGUE[code].title
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no resource at {request.url.path}"
        return problem_response(code, detail, headers=dict(exc.headers or {}), instance=request.url.path)

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        if _is_database_unavailable(exc):
            log.warning("database unavailable: %s", exc)
            return problem_response(
                "service_unavailable",
                "the database is unavailable; retry shortly",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
                instance=request.url.path,
            )
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return problem_response("internal_error", "an unexpected error occurred", instance=request.url.path)

    app.add_exception_handler(AppError, app_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    # Database errors are answered inside the application (503, or 500 for a genuine bug), like
    # any handled error: a handler for `Exception` alone runs in Starlette's outermost
    # middleware, which re-raises after answering, and uvicorn then drops the connection.
    for exc_type in DATABASE_ERRORS:
        app.add_exception_handler(exc_type, unexpected)
    app.add_exception_handler(Exception, unexpected)


_KEY_IN_QUERY = re.compile(r"(?i)\b(api_key=)[^&\s\"']*")


class HideKeysInAccessLog(logging.Filter):
    """Open311 reads take the key as the `api_key` query parameter; the access log writes the
    query: the value becomes `***`."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                _KEY_IN_QUERY.sub(r"\1***", a) if isinstance(a, str) else a for a in record.args
            )
        if isinstance(record.msg, str):
            record.msg = _KEY_IN_QUERY.sub(r"\1***", record.msg)
        return True


_HIDE_KEYS = HideKeysInAccessLog()


def hide_keys_in_access_log() -> None:
    """Install the filter on uvicorn's access log (idempotent)."""
    logger = logging.getLogger("uvicorn.access")
    if _HIDE_KEYS not in logger.filters:
        logger.addFilter(_HIDE_KEYS)


def add_default_headers(
    headers: list[tuple[bytes, bytes]], defaults: Iterable[tuple[bytes, bytes]]
) -> list[tuple[bytes, bytes]]:
    """`headers` plus each of `defaults` (pairs of lower-case names and values) whose name the
    response does not have yet: what a route set wins."""
    present = {name.lower() for name, _ in headers}
    return [*headers, *((n, v) for n, v in defaults if n not in present)]


class RequestContextMiddleware:
    """Gives every request an id (`X-Request-ID`, taken from the client when well-formed) and
    refuses bodies larger than the limit with 413 before reading them into memory. `limits`
    gives other limits to some paths (uploads that the route streams to disk). Every response
    gets the security headers (`SECURITY_HEADERS`, unless the route set them) and the rate-limit
    headers of its key (`app.core.ratelimit`)."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, limits: dict[str, int] | None = None) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.limits = limits or {}
        self._observers: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given, length = "", None  # the last of each header, if repeated
        for name, value in scope["headers"]:
            name = name.lower()
            if name == b"x-request-id":
                given = value.decode("latin-1")
            elif name == b"content-length":
                length = value.decode("latin-1")
        request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id

        limit = self.limits.get(scope.get("path", ""), self.max_body_bytes)
        if length is not None and (not length.isdigit() or int(length) > limit):
            await self._too_large(scope, send, request_id, limit)
            return

        received = 0
        too_large = False

        async def limited_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    too_large = True
                    raise _BodyTooLarge
            return message

        status = 500
        responded = replaced = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, responded, replaced
            if replaced:
                return  # the rest of the response our 413 replaced
            if too_large and not responded:
                # The body parser turned our exception into its own error (FastAPI answers 400
                # "error parsing the body"): the answer is 413 all the same.
                responded = replaced = True
                status = 413
                await self._too_large(scope, send, request_id, limit)
                return
            if message["type"] == "http.response.start":
                responded = True
                status = message["status"]
                headers = [*message.get("headers", ()), (b"x-request-id", request_id.encode())]
                limits = scope["state"].get(RATE_LIMIT_STATE)
                if limits:
                    headers = add_default_headers(
                        headers, ((k.lower().encode(), v.encode()) for k, v in limits.items())
                    )
                message["headers"] = add_default_headers(headers, SECURITY_HEADERS)
            await send(message)

        started = time.perf_counter()
        try:
            await self.app(scope, limited_receive, send_with_id)
        except _BodyTooLarge:
            if too_large and not responded:
                status = 413
                responded = True
                await self._too_large(scope, send, request_id, limit)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope.get("method", "")
            observers = self._observers.get((method, route, status))
            if observers is None:  # the metrics' children, looked up once per label values
                observers = self._observers[(method, route, status)] = (
                    HTTP_REQUESTS.labels(method, route, str(status)),
                    HTTP_LATENCY.labels(method, route),
                )
            observers[0].inc()
            observers[1].observe(time.perf_counter() - started)

    async def _too_large(self, scope: Scope, send: Send, request_id: str, limit: int) -> None:
        response = problem_response(
            "payload_too_large",
            f"the request body exceeds {limit} bytes",
            headers={"x-request-id": request_id},
        )
        response.raw_headers = add_default_headers(response.raw_headers, SECURITY_HEADERS)
        await response(scope, _no_receive, send)


async def clean_target(request: Request) -> None:
    """A dependency of every route: refuses (400) a path or query string with percent-escapes
    that are not UTF-8 (the server would silently turn them into U+FFFD) or with a NUL (which no
    database stores). Bodies are checked by their models (`core.types`)."""
    scope = request.scope
    raw_path = scope.get("raw_path") or scope.get("path", "").encode("utf-8", "surrogateescape")
    for what, raw in (("path", raw_path), ("query string", scope.get("query_string", b""))):
        decoded = unquote_to_bytes(raw)
        if b"\x00" in decoded:
            raise AppError("bad_request", f"the {what} contains a NUL character")
        try:
            decoded.decode("utf-8")
        except UnicodeDecodeError:
            raise AppError("bad_request", f"the {what} is not valid UTF-8 once percent-decoded") from None


class _BodyTooLarge(Exception):
    pass


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}
