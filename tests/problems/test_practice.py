"""The practice this service models (SPEC §1), reproduced through the API on both databases:
南关区 in June 2019 collected 175 problems; 5 were solved on the spot; the rest went up to the
district dispatch room, which handed 125 to district function groups by rule, while the 45 of
city jurisdiction went on to the city command room."""

from __future__ import annotations

import json
from collections import Counter
from importlib import resources
from typing import Any

import httpx
import pytest

from app.core.security import Caller, Role
from app.demo import demo_enterprises, demo_rules, demo_units
from app.main import Services
from tests.factories import auth, command, make_key, submit

DISTRICT = "220102"  # 南关区
ROOM, COMMAND_ROOM = f"{DISTRICT}-room", "cc-command-room"
FIGURES = json.loads(resources.files("app.demo").joinpath("demo_city.json").read_text(encoding="utf-8"))[
    "figures_from_practice"
]["nanguan_2019_06"]
# 45 of city jurisdiction; the 130 others spread over the district's categories.
MIX = {
    "environmental_assessment": 25,
    "demolition": 20,
    "utilities": 30,
    "land": 20,
    "planning_permit": 15,
    "financing": 20,
    "labour_talent": 10,
    "policy": 15,
    "market_access": 10,
    "other": 10,
}
# What the demo rules propose for each category (lead, cooperating units)
EXPECTED_LEAD = {
    "utilities": ("utilities", ["approvals"]),
    "land": ("land-planning", []),
    "planning_permit": ("land-planning", ["approvals"]),
    "financing": ("finance", []),
    "labour_talent": ("talent", []),
    "policy": ("policy", []),
    "market_access": ("market", ["approvals"]),
    "other": ("approvals", []),  # the district's "*" rule
}


@pytest.fixture
async def nanguan(services: Services, client: httpx.AsyncClient) -> list[str]:
    """The demo city's routing tree and rules; the enterprises of 南关区."""
    admin = Caller(key_id="test", name="test setup", role=Role.admin)
    for unit in demo_units():
        await services.directory.create_unit(admin, unit)
    enterprises = [e for e in demo_enterprises() if e.district_id == DISTRICT]
    for enterprise in enterprises:
        await services.directory.register_enterprise(admin, enterprise)
    response = await client.put("/v1/routing/rules", json=demo_rules([DISTRICT]))
    assert response.status_code == 200, response.text
    return [e.id for e in enterprises]


async def all_problems(client: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = (
            await client.get(
                "/v1/problems", params={"limit": 500, **params, **({"cursor": cursor} if cursor else {})}
            )
        ).json()
        items += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            return items


async def test_175_problems_5_solved_on_the_spot_125_to_function_groups_45_to_the_city(
    client: httpx.AsyncClient, nanguan: list[str]
) -> None:
    assert sum(MIX.values()) == FIGURES["collected"]
    categories = [c for c, n in MIX.items() for _ in range(n)]
    problems = [
        (await submit(client, nanguan[i % len(nanguan)], category=category))
        for i, category in enumerate(categories)
    ]
    assert {(p["tier"], p["status"]) for p in problems} == {("local", "assigned")}

    # 5 solved on the spot by their service groups
    on_the_spot = [p for p in problems if p["category"] == "utilities"][: FIGURES["solved_on_the_spot"]]
    for p in on_the_spot:
        await command(client, p["id"], "accept")
        await command(client, p["id"], "resolve", {"resolution": "服务组现场协调解决"})
    # the other 170 go up: to the district room, or straight to the city command room
    room = await make_key(client, "dispatcher", district_id=DISTRICT)
    spot_ids = {p["id"] for p in on_the_spot}
    escalated = [p for p in problems if p["id"] not in spot_ids]
    assert len(escalated) == 170
    for p in escalated:
        after = await command(client, p["id"], "escalate", {"reason": "服务组无法解决"}, key=room)
        if after["tier"] == "district":  # the room hands it on by rule: no lead unit given
            await command(client, p["id"], "assign", {"note": "按规则交办"}, key=room)

    final = {p["id"]: p for p in await all_problems(client, district_id=DISTRICT)}
    assert len(final) == FIGURES["collected"]
    for p in problems:
        now = final[p["id"]]
        category = p["category"]
        if p["id"] in spot_ids:
            expected = ("local", "resolved", p["lead_unit_id"])
        elif category in ("environmental_assessment", "demolition"):
            expected = ("city", "open", COMMAND_ROOM)
        else:
            lead, cooperating = EXPECTED_LEAD[category]
            expected = ("district", "assigned", f"{DISTRICT}-{lead}")
            assert now["cooperating_unit_ids"] == [f"{DISTRICT}-{c}" for c in cooperating]
            assert now["rule_version"] == 1
        assert (now["tier"], now["status"], now["holder_unit_id"]) == expected, (category, now)
        assert not now["needs_attention"]

    by_tier = Counter(p["tier"] for p in final.values())
    assert by_tier == Counter(
        local=FIGURES["solved_on_the_spot"],
        district=FIGURES["to_district_function_groups"],
        city=FIGURES["to_city_command_room"],
    )
    expected_holders: Counter[str] = Counter()
    for category, n in MIX.items():
        if category in EXPECTED_LEAD:
            expected_holders[f"{DISTRICT}-{EXPECTED_LEAD[category][0]}"] += n
    expected_holders[f"{DISTRICT}-utilities"] -= FIGURES["solved_on_the_spot"]
    assert Counter(p["holder_unit_id"] for p in final.values() if p["tier"] == "district") == expected_holders
    # the lists a room and the command room work from
    assert len(await all_problems(client, tier="city", holder_unit_id=COMMAND_ROOM)) == 45
    assert len(await all_problems(client, status="resolved", tier="local")) == 5
    fg = await make_key(client, "handler", unit_id=f"{DISTRICT}-land-planning")
    mine = (await client.get("/v1/problems", params={"limit": 500}, headers=auth(fg))).json()["items"]
    assert len(mine) == MIX["land"] + MIX["planning_permit"]
