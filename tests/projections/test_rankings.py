"""`/v1/stats/rankings`: units ranked per period (month, ten-day period, quarter) as each period
stood at its end; Bijie's yellow and red warnings with their evidence; Jiangshan's classes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from app.main import Services
from tests.factories import D1, City, auth, make_key
from tests.projections.helpers import at, caught_up, submit_at

RANKINGS = "/v1/stats/rankings"


def local(month: int, day: int, hour: int = 9) -> datetime:
    return datetime(2026, month, day, hour - 8, 0, tzinfo=UTC)


@pytest.fixture
async def dispatcher(client: httpx.AsyncClient, services: Services, city: City) -> str:
    """District D1's function groups a and b, problems received (and solved) per period:

    | received on | fg-a        | fg-b        |
    |-------------|-------------|-------------|
    | 15 Sep      | 2, 2 solved | 2, 1 solved |
    | 15 Oct (D2) | 2, 1 solved | 1, 1 solved |
    | 25 Oct (D3) | 3, 3 solved | 3, 0 solved |
    | 5 Nov (D1)  | 4, 3 solved | 2, 0 solved |

    Problems are solved five days after they arrive (within their period). Returns D1's
    dispatcher key: the ranking covers that district only."""
    fg_a, fg_b = city.function_groups[D1]
    plan = [
        (local(9, 15), fg_a, 2, 2),
        (local(9, 15), fg_b, 2, 1),
        (local(10, 15), fg_a, 2, 1),
        (local(10, 15), fg_b, 1, 1),
        (local(10, 25), fg_a, 3, 3),
        (local(10, 25), fg_b, 3, 0),
        (local(11, 5), fg_a, 4, 3),
        (local(11, 5), fg_b, 2, 0),
    ]
    n = 0
    for when, unit, received, solved in plan:
        for i in range(received):
            n += 1
            pid = await submit_at(client, city.enterprise(index=n % 4), when)
            await at(client, pid, when + timedelta(hours=1), "escalate", {"reason": "上交"})
            await at(client, pid, when + timedelta(hours=2), "assign", {"lead_unit_id": unit})
            if i < solved:
                await at(client, pid, when + timedelta(days=5), "resolve", {"resolution": "办结"})
    # D2 has nothing to do with D1's ranking.
    other = await submit_at(client, city.enterprise("220103"), local(11, 5))
    await at(client, other, local(11, 5, 10), "escalate", {"reason": "上交"})
    await at(client, other, local(11, 5, 11), "assign", {"lead_unit_id": city.function_groups["220103"][0]})
    await caught_up(services)
    return await make_key(client, "dispatcher", district_id=D1)


async def ranking(client: httpx.AsyncClient, key: str, **params: str) -> dict[str, object]:
    response = await client.get(RANKINGS, params=params, headers=auth(key))
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def standings(body: dict[str, object]) -> dict[str, dict[str, object]]:
    groups = body["groups"]
    assert isinstance(groups, list)
    return {g["key"]: g for g in groups}


async def test_a_month_with_a_red_warning(client: httpx.AsyncClient, dispatcher: str, city: City) -> None:
    fg_a, fg_b = city.function_groups[D1]
    body = await ranking(client, dispatcher, period="2026-11")
    assert body["period"] == {
        "code": "2026-11",
        "kind": "month",
        "label": "2026年11月",
        "from": "2026-11-01T00:00:00+08:00",
        "to": "2026-12-01T00:00:00+08:00",
    }
    assert body["as_of"] == "2026-11-16T09:00:00+08:00"  # the month is still running
    assert [p["code"] for p in body["previous_periods"]] == ["2026-10", "2026-09"]
    ranks = standings(body)
    assert list(ranks) == [fg_a, fg_b]
    a, b = ranks[fg_a], ranks[fg_b]
    assert (a["rank"], a["score"], a["received"], a["solved"], a["progress"], a["warning"]) == (
        1,
        0.75,
        4,
        3,
        "lagging",
        None,
    )
    assert (b["rank"], b["score"], b["last"], b["progress"], b["warning"]) == (
        2,
        0.0,
        True,
        "no_progress",
        "red",
    )
    assert [
        (e["period"], e["rank"], e["ranked"], e["score"], e["received"], e["solved"]) for e in b["evidence"]
    ] == [
        ("2026-11", 2, 2, 0.0, 2, 0),
        ("2026-10", 2, 2, 0.25, 4, 1),
        ("2026-09", 2, 2, 0.5, 2, 1),
    ]
    assert b["evidence"][1]["as_of"] == "2026-11-01T00:00:00+08:00"  # October as it ended
    (warning,) = body["warnings"]  # type: ignore[misc]
    assert (warning["unit_id"], warning["level"], warning["rule"]) == (fg_b, "red", "bijie")
    assert (body["total"]["received"], body["total"]["solved"]) == (6, 3)  # type: ignore[index]


async def test_ten_day_periods_and_quarters_give_yellow(
    client: httpx.AsyncClient, dispatcher: str, city: City
) -> None:
    fg_a, fg_b = city.function_groups[D1]
    dekad = await ranking(client, dispatcher, period="2026-11-D1")
    assert [p["code"] for p in dekad["previous_periods"]] == ["2026-10-D3", "2026-10-D2"]
    b = standings(dekad)[fg_b]
    # Last on 1–10 Nov and 21–31 Oct; on 11–20 Oct fg-a was last (1 of 2 against 1 of 1).
    assert (b["warning"], [e["period"] for e in b["evidence"]]) == ("yellow", ["2026-11-D1", "2026-10-D3"])
    october_d2 = await ranking(client, dispatcher, period="2026-10-D2")
    assert standings(october_d2)[fg_a]["last"] is True and standings(october_d2)[fg_a]["warning"] is None

    quarter = await ranking(client, dispatcher, period="2026-Q4")
    q = standings(quarter)
    assert (q[fg_a]["received"], q[fg_a]["solved"], q[fg_a]["score"]) == (9, 7, 0.778)
    assert (q[fg_b]["received"], q[fg_b]["solved"], q[fg_b]["score"], q[fg_b]["warning"]) == (
        6,
        1,
        0.167,
        "yellow",
    )
    assert [e["period"] for e in q[fg_b]["evidence"]] == ["2026-Q4", "2026-Q3"]
    half = standings(await ranking(client, dispatcher, period="2026-H2"))
    assert half[fg_b]["warning"] is None  # the first half year had nothing


async def test_targets_scores_and_scope(client: httpx.AsyncClient, dispatcher: str, city: City) -> None:
    fg_a, fg_b = city.function_groups[D1]
    lower = standings(await ranking(client, dispatcher, period="2026-11", target="0.7"))
    assert lower[fg_a]["progress"] == "normal" and lower[fg_b]["warning"] == "red"
    ahead = standings(await ranking(client, dispatcher, period="2026-11", target="0.6", ahead_margin="0.15"))
    assert ahead[fg_a]["progress"] == "ahead"
    low_target = standings(await ranking(client, dispatcher, period="2026-11", target="0"))
    assert low_target[fg_b]["warning"] is None  # last, but not below a target of 0
    satisfaction = standings(await ranking(client, dispatcher, period="2026-11", score="satisfaction_rate"))
    assert satisfaction[fg_a]["rank"] is None and satisfaction[fg_a]["score"] is None  # no feedback yet
    on_time = await ranking(client, dispatcher, period="2026-11", score="on_time_rate")
    assert standings(on_time)[fg_a]["score"] == 1.0 and standings(on_time)[fg_b]["rank"] is None

    admin = await client.get(RANKINGS, params={"period": "2026-11"})
    assert len(admin.json()["groups"]) == 3  # both districts' function groups that had problems
    local = await client.get(RANKINGS, params={"period": "2026-11", "tier": "local"})
    assert local.json()["groups"] == []  # every problem went up to the district
    for params in (
        {"period": "2026-13"},
        {"period": "2026-11-D4"},
        {"period": "November"},
        {},
        {"period": "2026-11", "score": "speed"},
        {"period": "2026-11", "target": "1.5"},
    ):
        refused = await client.get(RANKINGS, params=params)
        assert refused.status_code == 422, params
    assert (await client.get(RANKINGS, params={"period": "2026-1"})).json()["code"] == "invalid_period"


async def test_the_report_carries_the_warnings(
    client: httpx.AsyncClient, dispatcher: str, city: City
) -> None:
    fg_b = city.function_groups[D1][1]
    response = await client.get(
        "/v1/reports/dispatch", params={"period": "2026-11"}, headers=auth(dispatcher)
    )
    assert response.status_code == 200
    report = response.json()
    assert [(w["unit_id"], w["level"], w["tier"]) for w in report["warnings"]] == [(fg_b, "red", "district")]
    units = {u["key"]: u for u in report["groups"]}
    assert (units[fg_b]["rank"], units[fg_b]["progress"], units[fg_b]["warning"]) == (2, "no_progress", "red")
