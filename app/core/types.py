"""Constrained input types shared by every request model.

Text is stripped, bounded, and free of NUL and other control characters (newlines and tabs are
kept in long text); Chinese text passes through untouched.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    PlainSerializer,
    StringConstraints,
    WithJsonSchema,
)

# Integers a query parameter may carry into the database (INTEGER and BIGINT columns).
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_CONTROL_LINE = re.compile(r"[\x00-\x1f\x7f]")


def _no_control(value: str) -> str:
    if _CONTROL_LINE.search(value):
        raise ValueError("must not contain control characters")
    return value


def _no_control_text(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters (other than newlines and tabs)")
    return value


Name = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    AfterValidator(_no_control),
]
ShortText = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=500),
    AfterValidator(_no_control),
]
Text = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=4000),
    AfterValidator(_no_control_text),
]
UnitId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
DistrictId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,11}$")]
CategoryCode = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{1,63}$")]
Source = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]


class Strict(BaseModel):
    """Request bodies: unknown fields are refused, so a typo is an error, not a silent no-op."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


def iso_duration(value: timedelta) -> str:
    """ISO 8601 duration in whole seconds (`P4DT14H59M59S`, `-PT3H`): the RFC 3339 form that
    JSON Schema's `duration` format accepts, with a leading minus for a negative one."""
    total = int(value.total_seconds())  # toward zero: a fraction of a second is noise here
    sign, total = ("-", -total) if total < 0 else ("", total)
    days, rest = divmod(total, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    clock = "".join(f"{n}{unit}" for n, unit in ((hours, "H"), (minutes, "M"), (seconds, "S")) if n)
    if not days and not clock:
        return "PT0S"
    return f"{sign}P{f'{days}D' if days else ''}{f'T{clock}' if clock else ''}"


Duration = Annotated[
    timedelta,
    PlainSerializer(iso_duration, return_type=str),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^-?P(\d+D)?(T(\d+H)?(\d+M)?(\d+S)?)?$",
            "examples": ["P4DT14H59M59S", "-PT3H20M"],
        }
    ),
]
"""A span of time in responses, as an ISO 8601 duration (whole seconds, possibly negative)."""
