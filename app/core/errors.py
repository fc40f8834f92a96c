"""Errors as RFC 9457 problem details with a stable machine-readable `code`.

Every error the service can return has its code registered here with its HTTP status and a
description; `/errors` publishes the catalogue and each problem's `type` points into it. Domain
code raises `AppError(code, detail)`: the exception carries its status, so one handler renders
them all and nothing below the API layer knows about HTTP.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

PROBLEM_JSON = "application/problem+json"


@dataclass(frozen=True)
class ErrorCode:
    code: str
    status: int
    title: str
    description: str


CATALOGUE: dict[str, ErrorCode] = {}


def register(code: str, status: int, title: str, description: str) -> str:
    CATALOGUE[code] = ErrorCode(code, status, title, description)
    return code


# Generic codes. Domain packages register their own next to where they raise them.
register("bad_request", 400, "Bad request", "The request could not be understood.")
register("validation_failed", 422, "Validation failed", "One or more fields are invalid; see `errors`.")
register("invalid_cursor", 400, "Invalid cursor", "The pagination cursor is malformed or stale.")
register(
    "unauthorized",
    401,
    "Unauthorized",
    "No valid API key was given (`Authorization: Bearer <key>`).",
)
register("forbidden", 403, "Forbidden", "The key's role may not perform this action.")
register("not_found", 404, "Not found", "The resource does not exist or is outside the key's scope.")
register("method_not_allowed", 405, "Method not allowed", "The resource does not support this method.")
register("not_acceptable", 406, "Not acceptable", "None of the requested media types can be produced.")
register("conflict", 409, "Conflict", "The request conflicts with the current state.")
register(
    "precondition_failed",
    412,
    "Precondition failed",
    "`If-Match` does not match the resource's current version (ETag).",
)
register("payload_too_large", 413, "Payload too large", "The request body exceeds the size limit.")
register("unsupported_media_type", 415, "Unsupported media type", "Send `application/json`.")
register(
    "idempotency_key_reused",
    422,
    "Idempotency key reused",
    "This Idempotency-Key was already used with a different request body.",
)
register(
    "rate_limited",
    429,
    "Too many requests",
    "The key's rate limit is exhausted; see `Retry-After`.",
)
register("internal_error", 500, "Internal error", "An unexpected error; it has been logged.")
register(
    "service_unavailable",
    503,
    "Service unavailable",
    "A dependency (the database) is unavailable; retry after `Retry-After` seconds.",
)
register(
    "contention",
    409,
    "Too much contention",
    "The resource kept changing while the command was retried; try again.",
)


RESERVED_MEMBERS = frozenset({"type", "title", "status", "detail", "instance", "code"})


class AppError(Exception):
    """An error with a registered code. `extra` fields are added to the problem document."""

    def __init__(
        self,
        code: str,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        if code not in CATALOGUE:
            raise KeyError(f"unregistered error code {code!r}")
        clash = RESERVED_MEMBERS & extra.keys()
        if clash:
            raise ValueError(f"extension members may not replace standard ones: {sorted(clash)}")
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra

    @property
    def status(self) -> int:
        return CATALOGUE[self.code].status

    @property
    def title(self) -> str:
        return CATALOGUE[self.code].title

    def to_problem(self, instance: str | None = None) -> dict[str, Any]:
        return problem_document(self.code, self.detail, instance=instance, **self.extra)


def problem_document(code: str, detail: str, *, instance: str | None = None, **extra: Any) -> dict[str, Any]:
    entry = CATALOGUE[code]
    doc: dict[str, Any] = {
        "type": f"/errors/{code}",
        "title": entry.title,
        "status": entry.status,
        "detail": detail,
        "code": code,
    }
    if instance:
        doc["instance"] = instance
    doc.update(extra)
    return doc


class FieldError(BaseModel):
    loc: list[str | int] = Field(description="Where the error is: `body`, `query`, then the field path.")
    msg: str
    type: str


class ProblemDetail(BaseModel):
    """RFC 9457 problem details, as `application/problem+json`."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "example": {
                "type": "/errors/invalid_transition",
                "title": "Transition not allowed",
                "status": 409,
                "detail": "accept is not allowed while the problem is resolved",
                "code": "invalid_transition",
            }
        },
    )

    type: str = Field(description="URI reference identifying the problem type (`/errors/{code}`).")
    title: str
    status: int
    detail: str
    code: str = Field(description="Stable machine-readable error code; see `/errors`.")
    instance: str | None = None
    errors: list[FieldError] | None = Field(None, description="Field errors (validation only).")


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries declaring the problem+json errors a route can return."""
    described = {
        400: "Bad request",
        401: "No or invalid API key",
        403: "The key's role may not do this",
        404: "Not found (or outside the key's scope)",
        406: "Not acceptable",
        409: "Refused: the transition or change conflicts with the current state",
        412: "If-Match does not match the current version",
        413: "Request body too large",
        422: "Invalid input",
        429: "Rate limited",
        503: "Database unavailable",
    }
    return {
        code: {
            "model": ProblemDetail,
            "description": described.get(code, "Error"),
            "content": {PROBLEM_JSON: {}},
        }
        for code in codes
    }


def codes_for_status(status: int) -> Iterable[ErrorCode]:
    return (e for e in CATALOGUE.values() if e.status == status)
