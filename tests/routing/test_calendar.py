"""Working days and deadlines across Chinese holidays, make-up working days and the year
boundary (SPEC §8)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from app.routing.calendar import WorkCalendar, official_years

TZ = ZoneInfo("Asia/Shanghai")


@pytest.fixture
def cal() -> WorkCalendar:
    return WorkCalendar(TZ)


def local(day: date, hour: int = 10) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=TZ)


def test_the_day_of_entry_does_not_count(cal: WorkCalendar) -> None:
    # Monday 16 Nov 2026 + 3 working days → end of Thursday 19 Nov, in the city's time zone.
    deadline = cal.deadline(local(date(2026, 11, 16)), 3)
    assert deadline.astimezone(TZ).isoformat() == "2026-11-19T23:59:59+08:00"
    assert deadline.tzinfo is UTC


def test_a_late_evening_entry_counts_by_the_citys_date(cal: WorkCalendar) -> None:
    # 23:30 on Friday in Changchun is 15:30 UTC on Friday; Monday is the first working day after.
    entered = datetime(2026, 11, 20, 15, 30, tzinfo=UTC)
    assert cal.deadline(entered, 1).astimezone(TZ).date() == date(2026, 11, 23)


def test_national_day_week(cal: WorkCalendar) -> None:
    # 1–7 Oct 2026 are holidays; the deadline example of SPEC §8.
    assert cal.deadline(local(date(2026, 9, 30)), 1).astimezone(TZ).isoformat() == "2026-10-08T23:59:59+08:00"
    assert all(not cal.is_workday(date(2026, 10, d)) for d in range(1, 8))


def test_make_up_working_days(cal: WorkCalendar) -> None:
    # 2026's National Day make-up days: Sunday 20 Sep? No — chinese-calendar says which; check
    # the ones it marks and that a plain weekend is not one.
    make_up = [d for d in (date(2026, 9, 20), date(2026, 10, 10)) if cal.is_workday(d)]
    assert date(2026, 10, 10) in make_up, "Saturday 10 Oct 2026 is a make-up working day"
    assert cal.add_working_days(date(2026, 10, 7), 3) == date(2026, 10, 10)
    assert not cal.is_workday(date(2026, 10, 17))


def test_a_make_up_sunday(cal: WorkCalendar) -> None:
    # Sunday 28 Sep 2025 was a working day (National Day 2025 make-up).
    sunday = date(2025, 9, 28)
    assert sunday.weekday() == 6 and cal.is_workday(sunday)
    assert cal.add_working_days(date(2025, 9, 26), 1) == sunday


def test_spring_festival(cal: WorkCalendar) -> None:
    # Spring Festival 2026: 15–23 Feb are holidays; Saturday 14 Feb and 28 Feb are working days.
    assert not any(cal.is_workday(date(2026, 2, d)) for d in range(15, 24))
    assert cal.is_workday(date(2026, 2, 14)) and cal.is_workday(date(2026, 2, 28))
    assert cal.add_working_days(date(2026, 2, 13), 1) == date(2026, 2, 14)
    assert cal.add_working_days(date(2026, 2, 14), 1) == date(2026, 2, 24)
    assert cal.working_days_between(date(2026, 2, 13), date(2026, 2, 28)) == 6


def test_beyond_the_official_data_falls_back_to_monday_to_friday(cal: WorkCalendar) -> None:
    first, last = official_years()
    assert first <= 2026 <= last < 2100
    beyond = last + 1
    assert cal.upcoming_fallback(local(date(last, 12, 20))) == [beyond]
    # Late December: the deadline lands in a year the package does not know and still works.
    deadline = cal.deadline(local(date(last, 12, 29)), 10)
    assert deadline.astimezone(TZ).date().year == beyond
    assert beyond in cal.fallback_years
    days = [date(beyond, 1, 1) + timedelta(days=i) for i in range(14)]
    assert [cal.is_workday(d) for d in days] == [d.weekday() < 5 for d in days]


def test_overrides_win(cal: WorkCalendar) -> None:
    overridden = WorkCalendar(TZ, {date(2026, 11, 18): False, date(2026, 11, 21): True})
    assert not overridden.is_workday(date(2026, 11, 18)) and overridden.is_workday(date(2026, 11, 21))
    assert overridden.add_working_days(date(2026, 11, 16), 3) == date(2026, 11, 20)
    assert overridden.add_working_days(date(2026, 11, 19), 2) == date(2026, 11, 21)


def test_counting_across_years_agrees_with_stepping(cal: WorkCalendar) -> None:
    start = date(2025, 12, 20)
    for n in (1, 5, 12, 30, 120):
        end = cal.add_working_days(start, n)
        assert cal.working_days_between(start, end) == n


def test_a_late_december_deadline_lands_in_2027_which_the_package_does_not_know(cal: WorkCalendar) -> None:
    assert not cal.is_official(2027), "if chinese-calendar learns 2027, pick the next unknown year here"
    # Thursday 24 Dec 2026 + 10 working days: 25, 28–31 Dec, then Monday–Friday in January 2027,
    # where New Year's Day is only a holiday once an admin says so.
    deadline = cal.deadline(local(date(2026, 12, 24)), 10)
    assert deadline.astimezone(TZ).date() == date(2027, 1, 7)
    assert cal.source(date(2027, 1, 1)) == "fallback" and cal.source(date(2026, 12, 31)) == "official"
    cal.set_overrides({date(2027, 1, 1): False})
    assert cal.source(date(2027, 1, 1)) == "override"
    assert cal.deadline(local(date(2026, 12, 24)), 10).astimezone(TZ).date() == date(2027, 1, 8)
    cal.set_overrides({})
    assert cal.deadline(local(date(2026, 12, 24)), 10).astimezone(TZ).date() == date(2027, 1, 7)


def test_counting_back_skips_holidays_and_counts_make_up_days(cal: WorkCalendar) -> None:
    assert cal.working_day_back(date(2026, 10, 8), 1) == date(2026, 10, 8)
    assert cal.working_day_back(date(2026, 10, 8), 2) == date(2026, 9, 30), "1–7 October are holidays"
    assert cal.working_day_back(date(2026, 10, 11), 1) == date(2026, 10, 10), "a make-up Saturday"
    assert cal.working_day_back(date(2026, 2, 24), 2) == date(2026, 2, 14), "across Spring Festival"
    for day in (date(2026, 1, 5), date(2026, 10, 12), date(2027, 1, 4)):
        for n in (1, 2, 6):
            back = cal.working_day_back(day, n)
            assert cal.is_workday(back) and cal.add_working_days(back, n - 1) == day
