"""Instants in query parameters (`as_of`, `from`, `to`), shared by the statistics and the
problem routes: an ISO datetime (without offset: city time) or a date (a whole day)."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator

from app.core.errors import AppError, register
from app.core.settings import Settings

register(
    "as_of_in_future",
    422,
    "as_of in the future",
    "`as_of` asks what was true at a past instant; it may not lie after the server clock.",
)


def _day_or_instant(value: Any) -> Any:
    """`2026-11-30` is a day (not its midnight): the parameter says which end of it counts."""
    if isinstance(value, str) and len(value.strip()) == 10:
        return date.fromisoformat(value.strip())
    return value


InstantParam = Annotated[datetime | date, BeforeValidator(_day_or_instant)] | None


def instant(value: InstantParam, settings: Settings, *, end: bool = False) -> datetime | None:
    """A datetime without offset is city time; a date is the start of that day, or with `end`
    the start of the next (an exclusive end that includes the day)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=settings.tz)
    day = value + timedelta(days=1) if end else value
    return datetime.combine(day, time.min, tzinfo=settings.tz)


def as_of_instant(value: InstantParam, settings: Settings, now: datetime) -> datetime | None:
    """`as_of`: a date means the end of that day (today: now). Later than now: 422."""
    if isinstance(value, date) and not isinstance(value, datetime):
        end = instant(value, settings, end=True)
        assert end is not None
        return min(end - timedelta(microseconds=1), now)
    result = instant(value, settings)
    if result is not None and result > now:
        raise AppError("as_of_in_future", "as_of lies in the future", as_of=result.isoformat())
    return result
