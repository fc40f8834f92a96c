"""Cursor pagination: `limit` and `cursor` in, `items` and `next_cursor` out.

A cursor is the sort key of the last item returned, opaque to clients (base64url of JSON), so
pages stay stable while new rows arrive.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

import orjson
from pydantic import BaseModel, Field

from app.core.errors import AppError

T = TypeVar("T")

DEFAULT_LIMIT = 50
MAX_LIMIT = 500


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(
        None, description="Pass as `cursor` to get the next page; null on the last page."
    )


def encode_cursor(key: list[Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(key)).decode().rstrip("=")


def decode_cursor(cursor: str | None, arity: int) -> list[Any] | None:
    if not cursor:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        key = orjson.loads(base64.urlsafe_b64decode(padded.encode()))
    except (binascii.Error, ValueError, orjson.JSONDecodeError) as exc:
        raise AppError("invalid_cursor", "the cursor is not one this service issued") from exc
    if not isinstance(key, list) or len(key) != arity:
        raise AppError("invalid_cursor", "the cursor does not fit this list")
    return key


def next_page(rows: Sequence[T], limit: int, key: Callable[[T], list[Any]]) -> tuple[list[T], str | None]:
    """The page in `rows` (fetched with `limit + 1`) and the cursor of the next one (`key`: the
    sort key of a row), or None on the last page."""
    page = list(rows[:limit])
    return page, encode_cursor(key(page[-1])) if len(rows) > limit else None
