"""Reporting periods of the dispatch cadence (SPEC §1): the ten-day period (旬, 一旬一调度), the
month (一月一通报), the quarter, the half year and the year.

Codes: `2026` (year), `2026-H2` (half), `2026-Q4` (quarter), `2026-11` (month), `2026-11-D2` (the
second ten-day period of November: days 11–20; D1 is days 1–10, D3 day 21 to the end of the
month). A period covers whole days in the city's time zone: `start` is the beginning of its
first day, `end` the beginning of the day after its last (exclusive).
"""

from __future__ import annotations

import calendar as _calendar
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from app.core.errors import AppError, register

register(
    "invalid_period",
    422,
    "Invalid period",
    "A period is `YYYY`, `YYYY-H1|H2`, `YYYY-Q1..Q4`, `YYYY-MM` or `YYYY-MM-D1|D2|D3` "
    "(the ten-day periods 旬: days 1–10, 11–20, 21 to the end of the month).",
)

_PATTERN = re.compile(
    r"^(?P<year>\d{4})(?:-(?:H(?P<half>[12])|Q(?P<quarter>[1-4])|(?P<month>\d{2})(?:-D(?P<dekad>[123]))?))?$"
)


class PeriodKind(StrEnum):
    dekad = "dekad"  # 旬
    month = "month"
    quarter = "quarter"
    half = "half"
    year = "year"


_DEKAD_NAMES = {1: "上旬", 2: "中旬", 3: "下旬"}
_QUARTER_NAMES = {1: "第一季度", 2: "第二季度", 3: "第三季度", 4: "第四季度"}
_HALF_NAMES = {1: "上半年", 2: "下半年"}


@dataclass(frozen=True, order=True)
class Period:
    kind: PeriodKind
    year: int
    number: int = 1  # the half, quarter or month
    dekad: int = 0  # 1–3 for ten-day periods

    @property
    def code(self) -> str:
        match self.kind:
            case PeriodKind.year:
                return f"{self.year:04d}"
            case PeriodKind.half:
                return f"{self.year:04d}-H{self.number}"
            case PeriodKind.quarter:
                return f"{self.year:04d}-Q{self.number}"
            case PeriodKind.month:
                return f"{self.year:04d}-{self.number:02d}"
            case PeriodKind.dekad:
                return f"{self.year:04d}-{self.number:02d}-D{self.dekad}"

    @property
    def label(self) -> str:
        """The period as a bulletin names it (2026年11月中旬)."""
        match self.kind:
            case PeriodKind.year:
                return f"{self.year}年"
            case PeriodKind.half:
                return f"{self.year}年{_HALF_NAMES[self.number]}"
            case PeriodKind.quarter:
                return f"{self.year}年{_QUARTER_NAMES[self.number]}"
            case PeriodKind.month:
                return f"{self.year}年{self.number}月"
            case PeriodKind.dekad:
                return f"{self.year}年{self.number}月{_DEKAD_NAMES[self.dekad]}"

    @property
    def first_day(self) -> date:
        match self.kind:
            case PeriodKind.year:
                return date(self.year, 1, 1)
            case PeriodKind.half:
                return date(self.year, 6 * (self.number - 1) + 1, 1)
            case PeriodKind.quarter:
                return date(self.year, 3 * (self.number - 1) + 1, 1)
            case PeriodKind.month:
                return date(self.year, self.number, 1)
            case PeriodKind.dekad:
                return date(self.year, self.number, 10 * (self.dekad - 1) + 1)

    @property
    def last_day(self) -> date:
        """The last day of the period (inclusive)."""
        match self.kind:
            case PeriodKind.year:
                return date(self.year, 12, 31)
            case PeriodKind.half:
                return _month_end(self.year, 6 * self.number)
            case PeriodKind.quarter:
                return _month_end(self.year, 3 * self.number)
            case PeriodKind.month:
                return _month_end(self.year, self.number)
            case PeriodKind.dekad:
                if self.dekad < 3:
                    return date(self.year, self.number, 10 * self.dekad)
                return _month_end(self.year, self.number)

    def start(self, tz: ZoneInfo) -> datetime:
        return start_of_day(self.first_day, tz)

    def end(self, tz: ZoneInfo) -> datetime:
        """The instant the period ends (exclusive): the start of the day after its last."""
        return start_of_day(self.last_day + timedelta(days=1), tz)

    @classmethod
    def containing(cls, kind: PeriodKind, day: date) -> Period:
        """The period of `kind` that `day` falls in."""
        match kind:
            case PeriodKind.year:
                return cls(kind, day.year)
            case PeriodKind.half:
                return cls(kind, day.year, 1 + (day.month - 1) // 6)
            case PeriodKind.quarter:
                return cls(kind, day.year, 1 + (day.month - 1) // 3)
            case PeriodKind.month:
                return cls(kind, day.year, day.month)
            case PeriodKind.dekad:
                return cls(kind, day.year, day.month, min(3, 1 + (day.day - 1) // 10))

    def previous(self) -> Period:
        match self.kind:
            case PeriodKind.year:
                return Period(self.kind, self.year - 1)
            case PeriodKind.half | PeriodKind.quarter:
                if self.number > 1:
                    return Period(self.kind, self.year, self.number - 1)
                return Period(self.kind, self.year - 1, 2 if self.kind is PeriodKind.half else 4)
            case PeriodKind.month:
                if self.number > 1:
                    return Period(self.kind, self.year, self.number - 1)
                return Period(self.kind, self.year - 1, 12)
            case PeriodKind.dekad:
                if self.dekad > 1:
                    return Period(self.kind, self.year, self.number, self.dekad - 1)
                month = Period(PeriodKind.month, self.year, self.number).previous()
                return Period(self.kind, month.year, month.number, 3)


def _month_end(year: int, month: int) -> date:
    return date(year, month, _calendar.monthrange(year, month)[1])


def start_of_day(day: date, tz: ZoneInfo) -> datetime:
    return datetime.combine(day, time.min, tzinfo=tz).astimezone(UTC)


def parse_period(code: str) -> Period:
    """A period from its code; 422 `invalid_period` for anything else."""
    match = _PATTERN.match(code.strip()) if code else None
    if match is None:
        raise AppError("invalid_period", f"{code!r} is not a period", period=code)
    year = int(match["year"])
    if not 1900 <= year <= 2999:
        raise AppError("invalid_period", f"{code!r}: the year must lie between 1900 and 2999", period=code)
    if match["half"]:
        return Period(PeriodKind.half, year, int(match["half"]))
    if match["quarter"]:
        return Period(PeriodKind.quarter, year, int(match["quarter"]))
    if match["month"]:
        month = int(match["month"])
        if not 1 <= month <= 12:
            raise AppError("invalid_period", f"{code!r}: there is no month {month}", period=code)
        if match["dekad"]:
            return Period(PeriodKind.dekad, year, month, int(match["dekad"]))
        return Period(PeriodKind.month, year, month)
    return Period(PeriodKind.year, year)
