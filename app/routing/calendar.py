"""The working-day calendar (工作日) and deadlines.

Official holidays and make-up working days (调休) come from the maintained `chinese-calendar`
package; administrators may override single dates. For years the package has no data for, the
calendar falls back to Monday–Friday plus overrides and records that it did (`fallback_years`),
so the service can warn instead of failing.

Counting rule (SPEC §8): the day a problem enters a tier or holder does not count; a deadline of
N working days is the end (23:59:59) of the N-th working day after that day, in the city's time
zone.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta
from functools import cache, lru_cache
from zoneinfo import ZoneInfo

import chinese_calendar

END_OF_DAY = time(23, 59, 59)


@lru_cache(maxsize=1)
def official_years() -> tuple[int, int]:
    """The first and last year the installed package has official data for."""
    years = [y for y in range(2000, 2101) if _official(date(y, 6, 1)) is not None]
    return (min(years), max(years)) if years else (0, -1)


def fallback_warning(years: list[int]) -> str:
    """What an operator is told about years without official holiday data."""
    return (
        f"the work calendar has no official holiday data for {', '.join(map(str, years))}: "
        "deadlines there count Monday–Friday plus admin overrides"
    )


def _official(day: date) -> bool | None:
    try:
        return bool(chinese_calendar.is_workday(day))
    except NotImplementedError:
        return None


@cache
def _first_ordinal(year: int) -> int:
    return date(year, 1, 1).toordinal()


def _day_of_year(day: date) -> int:
    """0 for 1 January (`timetuple().tm_yday - 1`, without building a time tuple)."""
    return day.toordinal() - _first_ordinal(day.year)


class WorkCalendar:
    def __init__(self, tz: ZoneInfo, overrides: Mapping[date, bool] | None = None) -> None:
        self.tz = tz
        self.fallback_years: set[int] = set()
        self.set_overrides(overrides or {})

    def set_overrides(self, overrides: Mapping[date, bool]) -> None:
        """Replace the admin overrides (date → working day or not); the days are counted anew."""
        self.overrides = dict(overrides)
        self._year_cache: dict[int, tuple[bool, ...]] = {}
        self._cumulative: dict[int, list[int]] = {}
        # Answers of the day arithmetic below, by (day, n): a few hundred days in use at a time.
        self._added: dict[tuple[date, int], date] = {}
        self._back: dict[tuple[date, int], date] = {}

    # -- days ------------------------------------------------------------------------------

    def is_workday(self, day: date) -> bool:
        return self._year(day.year)[_day_of_year(day)]

    def source(self, day: date) -> str:
        """Where the answer for `day` comes from: `override`, `official` or `fallback`."""
        if day in self.overrides:
            return "override"
        return "official" if self.is_official(day.year) else "fallback"

    def is_official(self, year: int) -> bool:
        first, last = official_years()
        return first <= year <= last

    def _year(self, year: int) -> tuple[bool, ...]:
        cached = self._year_cache.get(year)
        if cached is not None:
            return cached
        days: list[bool] = []
        day = date(year, 1, 1)
        official = self.is_official(year)
        if not official:
            self.fallback_years.add(year)
        while day.year == year:
            if day in self.overrides:
                days.append(self.overrides[day])
            elif official:
                days.append(bool(_official(day)))
            else:
                days.append(day.weekday() < 5)
            day += timedelta(days=1)
        result = tuple(days)
        self._year_cache[year] = result
        return result

    def _running(self, year: int) -> list[int]:
        """Working days from 1 January up to and including each day of the year."""
        cached = self._cumulative.get(year)
        if cached is not None:
            return cached
        running: list[int] = []
        total = 0
        for workday in self._year(year):
            total += workday
            running.append(total)
        self._cumulative[year] = running
        return running

    def working_days_between(self, start: date, end: date) -> int:
        """Working days after `start` up to and including `end` (0 if end <= start)."""
        if end <= start:
            return 0
        first = self._running(start.year)
        start_index = _day_of_year(start)
        end_index = _day_of_year(end)
        if start.year == end.year:
            return first[end_index] - first[start_index]
        total = first[-1] - first[start_index]
        for year in range(start.year + 1, end.year):
            total += self._running(year)[-1]
        return total + self._running(end.year)[end_index]

    def add_working_days(self, start: date, n: int) -> date:
        """The n-th working day after `start` (n >= 1); `start` itself never counts."""
        if n < 1:
            return start
        found = self._added.get((start, n))
        if found is not None:
            return found
        day = start
        counted = 0
        while counted < n:
            day += timedelta(days=1)
            if self.is_workday(day):
                counted += 1
        self._added[start, n] = day
        return day

    def working_day_back(self, day: date, n: int) -> date:
        """The n-th working day counting back from `day`, which counts itself if it is one
        (n >= 1)."""
        found = self._back.get((day, n))
        if found is not None:
            return found
        start = day
        counted = int(self.is_workday(day))
        while counted < n:
            day -= timedelta(days=1)
            counted += self.is_workday(day)
        self._back[start, n] = day
        return day

    # -- instants --------------------------------------------------------------------------

    def business_date(self, instant: datetime) -> date:
        return instant.astimezone(self.tz).date()

    def start_of_day(self, day: date) -> datetime:
        return datetime.combine(day, time.min, tzinfo=self.tz).astimezone(UTC)

    def end_of_day(self, day: date) -> datetime:
        return datetime.combine(day, END_OF_DAY, tzinfo=self.tz).astimezone(UTC)

    def deadline(self, start: datetime, working_days: int) -> datetime:
        """End of the `working_days`-th working day after the day of `start` (in UTC)."""
        return self.end_of_day(self.add_working_days(self.business_date(start), working_days))

    def working_days_elapsed(self, start: datetime, end: datetime) -> int:
        return self.working_days_between(self.business_date(start), self.business_date(end))

    def calendar_days_elapsed(self, start: datetime, end: datetime) -> int:
        return max(0, (self.business_date(end) - self.business_date(start)).days)

    def working_days_left(self, now: datetime, deadline: datetime) -> int:
        """Working days after today up to the deadline's day (0 when due today or past)."""
        return self.working_days_between(self.business_date(now), self.business_date(deadline))

    def upcoming_fallback(self, now: datetime, horizon_days: int = 90) -> list[int]:
        """Years within the horizon that the official data does not cover."""
        first = self.business_date(now).year
        last = self.business_date(now + timedelta(days=horizon_days)).year
        return [y for y in range(first, last + 1) if not self.is_official(y)]
