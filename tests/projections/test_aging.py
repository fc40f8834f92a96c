"""`/v1/stats/aging`: open problems in age buckets, in calendar and in working days (10 October
2026 is a make-up working Saturday), now and as of a past instant."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from app.main import Services
from tests.factories import D1, City
from tests.projections.helpers import at, by_key, caught_up, get, submit_at

AGING = "/v1/stats/aging"


def local(month: int, day: int, hour: int = 8) -> datetime:
    return datetime(2026, month, day, hour - 8, 0, tzinfo=UTC)


@pytest.fixture
async def problems(client: httpx.AsyncClient, services: Services, city: City) -> dict[str, str]:
    """Open problems submitted (8:00 city time) on: a 16 Nov, b 12 Nov, c 9 Nov (escalated on the
    10th), d 8 Nov, e 1 Nov, f 31 Oct, g 16 Oct, h 10 Oct; one solved and one withdrawn."""
    dates = {
        "a": (11, 16),
        "b": (11, 12),
        "c": (11, 9),
        "d": (11, 8),
        "e": (11, 1),
        "f": (10, 31),
        "g": (10, 16),
        "h": (10, 10),
        "solved": (10, 12),
        "withdrawn": (10, 12),
    }
    ids = {}
    for i, (name, (month, day)) in enumerate(dates.items()):
        ids[name] = await submit_at(client, city.enterprise(index=i % 4), local(month, day))
    await at(client, ids["c"], local(11, 10), "escalate", {"reason": "上交"})
    await at(client, ids["solved"], local(10, 13), "resolve", {"resolution": "已解决"})
    await at(client, ids["withdrawn"], local(10, 13), "withdraw", {"reason": "撤回"})
    await caught_up(services)
    return ids


async def test_buckets_in_calendar_and_working_days(
    client: httpx.AsyncClient, problems: dict[str, str]
) -> None:
    calendar = await get(client, AGING, limit=3)
    assert calendar["buckets"] == ["0-3", "4-7", "8-15", "16-30", "31+"]
    assert calendar["total"]["buckets"] == {"0-3": 1, "4-7": 2, "8-15": 2, "16-30": 1, "31+": 2}
    # Overdue: d, e, f, g, h (local deadlines long past); c's district deadline is the 24th.
    assert (calendar["total"]["open"], calendar["total"]["overdue"]) == (8, 5)
    oldest = calendar["oldest"]
    assert [o["id"] for o in oldest] == [problems["h"], problems["g"], problems["f"]]
    assert [(o["age_days"], o["age_working_days"], o["overdue"]) for o in oldest] == [
        (37, 26, True),
        (31, 21, True),
        (16, 11, True),
    ]
    assert (
        oldest[0]["holder_name"] == f"{D1}服务组2"
        and oldest[0]["submitted_at"] == "2026-10-10T08:00:00+08:00"
    )

    working = await get(client, AGING, basis="working", limit=0)
    assert working["total"]["buckets"] == {"0-3": 2, "4-7": 2, "8-15": 2, "16-30": 2, "31+": 0}
    assert working["oldest"] == [] and working["basis"] == "working"

    tiers = by_key(await get(client, AGING, group_by="tier"))
    assert tiers["district"]["buckets"] == {"0-3": 0, "4-7": 1, "8-15": 0, "16-30": 0, "31+": 0}
    assert (tiers["district"]["open"], tiers["district"]["overdue"]) == (1, 0)
    assert (tiers["local"]["open"], tiers["local"]["overdue"]) == (7, 5)


async def test_aging_as_of_a_past_instant(client: httpx.AsyncClient, problems: dict[str, str]) -> None:
    then = await get(client, AGING, as_of=local(11, 12, 9).isoformat(), limit=1)
    assert then["total"]["buckets"] == {"0-3": 2, "4-7": 1, "8-15": 2, "16-30": 1, "31+": 1}
    assert then["oldest"][0]["age_days"] == 33 and then["as_of"] == "2026-11-12T09:00:00+08:00"
    # On the 12th the solved and the withdrawn problem were long settled; c was at the district.
    assert then["total"]["open"] == 7
    before = await get(client, AGING, as_of=local(10, 12, 12).isoformat())
    assert before["total"]["open"] == 3  # h, and the two settled on the 13th
    # Received within a day and a half before the 12th, noon (shorter than the time since: read
    # from the intervals then in force), or since September (longer: derived from the present,
    # `Statistics._derives`): the same problems either way.
    short = await get(client, AGING, as_of=local(10, 12, 12).isoformat(), **{"from": "2026-10-11"})
    assert short["total"]["open"] == 2 and short["total"]["buckets"]["0-3"] == 2
    since_september = await get(client, AGING, as_of=local(10, 12, 12).isoformat(), **{"from": "2026-09-01"})
    assert since_september["total"] == before["total"]
