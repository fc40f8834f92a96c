"""Reporting periods: codes, bounds in the city's time zone, the period before, and refusals."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from app.core.errors import AppError
from app.projections.periods import PeriodKind, parse_period

TZ = ZoneInfo("Asia/Shanghai")


@pytest.mark.parametrize(
    ("code", "kind", "first", "last", "label", "previous"),
    [
        ("2026", PeriodKind.year, date(2026, 1, 1), date(2026, 12, 31), "2026年", "2025"),
        ("2026-H2", PeriodKind.half, date(2026, 7, 1), date(2026, 12, 31), "2026年下半年", "2026-H1"),
        ("2026-H1", PeriodKind.half, date(2026, 1, 1), date(2026, 6, 30), "2026年上半年", "2025-H2"),
        ("2026-Q4", PeriodKind.quarter, date(2026, 10, 1), date(2026, 12, 31), "2026年第四季度", "2026-Q3"),
        ("2026-Q1", PeriodKind.quarter, date(2026, 1, 1), date(2026, 3, 31), "2026年第一季度", "2025-Q4"),
        ("2026-11", PeriodKind.month, date(2026, 11, 1), date(2026, 11, 30), "2026年11月", "2026-10"),
        ("2026-01", PeriodKind.month, date(2026, 1, 1), date(2026, 1, 31), "2026年1月", "2025-12"),
        (
            "2026-11-D1",
            PeriodKind.dekad,
            date(2026, 11, 1),
            date(2026, 11, 10),
            "2026年11月上旬",
            "2026-10-D3",
        ),
        (
            "2026-11-D2",
            PeriodKind.dekad,
            date(2026, 11, 11),
            date(2026, 11, 20),
            "2026年11月中旬",
            "2026-11-D1",
        ),
        (
            "2026-11-D3",
            PeriodKind.dekad,
            date(2026, 11, 21),
            date(2026, 11, 30),
            "2026年11月下旬",
            "2026-11-D2",
        ),
        ("2028-02-D3", PeriodKind.dekad, date(2028, 2, 21), date(2028, 2, 29), "2028年2月下旬", "2028-02-D2"),
        ("2026-01-D1", PeriodKind.dekad, date(2026, 1, 1), date(2026, 1, 10), "2026年1月上旬", "2025-12-D3"),
    ],
)
def test_periods(code: str, kind: PeriodKind, first: date, last: date, label: str, previous: str) -> None:
    period = parse_period(code)
    assert (period.kind, period.code, period.first_day, period.last_day, period.label) == (
        kind,
        code,
        first,
        last,
        label,
    )
    assert period.previous().code == previous
    assert period.start(TZ) == datetime.combine(first, time.min, tzinfo=TZ)
    assert period.end(TZ) == datetime.combine(last + timedelta(days=1), time.min, tzinfo=TZ)


@pytest.mark.parametrize(
    "code", ["", "26", "2026-13", "2026-00", "2026-11-D4", "2026-Q5", "2026-H3", "2026/11", "x"]
)
def test_malformed_periods_are_refused(code: str) -> None:
    with pytest.raises(AppError) as refused:
        parse_period(code)
    assert refused.value.code == "invalid_period" and refused.value.status == 422
