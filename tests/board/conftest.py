"""A small history for the board's tests (the city of `tests/factories.py`, clock at T0 =
Monday 16 November 2026, 09:00): problems of November and October in both districts, solved on
the spot, solved by a function group, waiting, overdue."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import pytest

from app.main import Services
from tests.factories import D1, D2, City, build_city
from tests.projections.helpers import at, caught_up, submit_at


@dataclass
class History:
    city: City
    ids: dict[str, str]


def day(month: int, d: int, hour: int = 1) -> datetime:
    return datetime(2026, month, d, hour, 0, tzinfo=UTC)


@pytest.fixture
async def history(client: httpx.AsyncClient, services: Services) -> History:
    city = await build_city(services)
    fg_a1 = city.function_groups[D1][0]
    fg_a2 = city.function_groups[D2][0]
    ids: dict[str, str] = {}

    ids["spot"] = await submit_at(client, city.enterprise(D1, 0), day(11, 3))
    await at(client, ids["spot"], day(11, 3, 3), "resolve", {"resolution": "现场解决"})
    await at(client, ids["spot"], day(11, 4), "feedback", {"score": 5})

    ids["district"] = await submit_at(client, city.enterprise(D1, 1), day(11, 4))
    await at(client, ids["district"], day(11, 4, 2), "escalate", {"reason": "需区级协调"})
    await at(client, ids["district"], day(11, 4, 3), "assign", {"lead_unit_id": fg_a1})
    await at(client, ids["district"], day(11, 5), "accept")
    await at(client, ids["district"], day(11, 6), "resolve", {"resolution": "协调办结"})
    await at(client, ids["district"], day(11, 7), "feedback", {"score": 4})

    ids["overdue_d1"] = await submit_at(client, city.enterprise(D1, 2), day(11, 2))
    ids["assigned_d2"] = await submit_at(client, city.enterprise(D2, 0), day(11, 9))
    await at(client, ids["assigned_d2"], day(11, 9, 2), "escalate", {"reason": "需区级协调"})
    await at(client, ids["assigned_d2"], day(11, 9, 3), "assign", {"lead_unit_id": fg_a2})
    ids["overdue_d2"] = await submit_at(client, city.enterprise(D2, 1), day(11, 3))

    # October: the same two function groups, one solving, one not (last and below the target
    # in two months running: a yellow warning in November).
    ids["october_d1"] = await submit_at(client, city.enterprise(D1, 3), day(10, 12))
    await at(client, ids["october_d1"], day(10, 12, 2), "escalate", {"reason": "需区级协调"})
    await at(client, ids["october_d1"], day(10, 12, 3), "assign", {"lead_unit_id": fg_a1})
    await at(client, ids["october_d1"], day(10, 13), "resolve", {"resolution": "协调办结"})
    ids["october_d2"] = await submit_at(client, city.enterprise(D2, 2), day(10, 20))
    await at(client, ids["october_d2"], day(10, 20, 2), "escalate", {"reason": "需区级协调"})
    await at(client, ids["october_d2"], day(10, 20, 3), "assign", {"lead_unit_id": fg_a2})
    await caught_up(services)
    return History(city, ids)


# -- reading the board's HTML ------------------------------------------------------------------

DATA = re.compile(r'<data id="([\w-]+)" value="([^"]*)"')


def figures(html: str) -> dict[str, str]:
    """Every `<data id=… value=…>` of a page: the figures it shows, machine-readable."""
    return dict(DATA.findall(html))


def number(value: str) -> float | None:
    return float(value) if value else None
