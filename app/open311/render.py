"""Open311's two formats and its error shape.

JSON mirrors the XML (lists are bare arrays, one request is an array of one); XML has a
declaration, no namespace, and one element per field, lists as `<services><service>…`.
Errors are an array of `{code, description}` (`<errors><error>…`) with HTTP 404 for what does
not exist, 403 for a bad or missing `api_key`, 429 for a key over its rate limit, and 400 for
anything else. The handlers installed
here make sure that nothing under `/open311/` answers with this API's problem+json.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any
from xml.etree import ElementTree as ET

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.core.errors import AppError
from app.core.http import DATABASE_ERRORS

PREFIX = "/open311/"
JSON_TYPE = "application/json; charset=utf-8"
XML_TYPE = "text/xml; charset=utf-8"
FORMATS = ("json", "xml")

# The element of each list item in XML, by the list's element.
ITEM_TAGS = {
    "services": "service",
    "service_requests": "request",
    "service_request_updates": "request_update",
    "attributes": "attribute",
    "values": "value",
    "endpoints": "endpoint",
    "formats": "format",
    "errors": "error",
    "notes": "note",
    "photos": "photo",
}


class Open311Error(Exception):
    """An Open311 error: HTTP 400, 403 or 404 (500/503 for our own failures)."""

    def __init__(self, status: int, description: str, *, code: int | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.code = code or status


def format_of(path: str) -> str:
    """The format a path asks for (`.xml` or `.json` suffix); JSON when it names none."""
    return "xml" if path.lower().endswith(".xml") else "json"


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise Open311Error(404, f"format {fmt!r} is not offered; use .json or .xml")
    return fmt


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _fill(element: ET.Element, value: Any) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _fill(ET.SubElement(element, key), item)
    elif isinstance(value, list):
        tag = ITEM_TAGS.get(element.tag, "item")
        for item in value:
            _fill(ET.SubElement(element, tag), item)
    else:
        element.text = _text(value)


def to_xml(root: str, value: Any) -> bytes:
    element = ET.Element(root)
    _fill(element, value)
    body: bytes = ET.tostring(element, encoding="utf-8")
    return b'<?xml version="1.0" encoding="utf-8"?>\n' + body


def render(fmt: str, root: str, value: Any, status: int = 200) -> Response:
    """`value` as JSON, or as XML under the element `root`."""
    if fmt == "xml":
        return Response(to_xml(root, value), status_code=status, media_type=XML_TYPE)
    return Response(orjson.dumps(value), status_code=status, media_type=JSON_TYPE)


def error_response(fmt: str, status: int, errors: list[tuple[int, str]]) -> Response:
    body = [{"code": code, "description": description} for code, description in errors]
    return render(fmt, "errors", body, status)


def _status_for(app_status: int) -> int:
    if app_status == 404:
        return 404
    if app_status in (401, 403):
        return 403
    if app_status == 429:
        return 429  # rate limited: a client must see it to back off (Retry-After)
    if app_status >= 500:
        return app_status
    return 400


Handler = Callable[[Request, Exception], Awaitable[Response]]


def install_error_handlers(app: FastAPI) -> None:
    """Errors under `/open311/` in Open311's shape; everything else as before (problem+json).

    Wraps the handlers the application already has (so it must run after they are installed):
    under `/open311/` their problem document is translated, keeping its status class, its
    `code` and `detail`, the field errors and headers such as `Retry-After`.
    """

    async def open311_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Open311Error)
        return error_response(format_of(request.url.path), exc.status, [(exc.code, exc.description)])

    app.add_exception_handler(Open311Error, open311_error)
    for exc_type in (AppError, RequestValidationError, StarletteHTTPException, *DATABASE_ERRORS, Exception):
        previous = app.exception_handlers.get(exc_type)
        if previous is not None:
            app.add_exception_handler(exc_type, _translating(previous))  # type: ignore[arg-type]


def _translating(previous: Handler) -> Handler:
    async def handler(request: Request, exc: Exception) -> Response:
        response = await previous(request, exc)
        if not request.url.path.startswith(PREFIX):
            return response
        return translate(request, response)

    return handler


def translate(request: Request, response: Response) -> Response:
    """A problem+json response as Open311 errors."""
    try:
        doc = orjson.loads(bytes(response.body))
    except orjson.JSONDecodeError:
        doc = {}
    status = _status_for(response.status_code)
    code = str(doc.get("code", "error"))
    if response.status_code == 404 and code == "not_found" and "no resource at" in str(doc.get("detail")):
        detail = f"no Open311 resource at {request.url.path}"
    else:
        detail = str(doc.get("detail", "error"))
    errors = [
        (status, f"{code}: {'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}")
        for e in doc.get("errors") or ()
        if isinstance(e, dict)
    ] or [(status, f"{code}: {detail}")]
    out = error_response(format_of(request.url.path), status, errors)
    for name in ("Retry-After", "Allow", "x-request-id"):
        if name in response.headers:
            out.headers[name] = response.headers[name]
    return out
