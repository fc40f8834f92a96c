"""`/v1/calendar` and its admin overrides over HTTP: each change an event, deadlines counted
with it from then on, every process's calendar updated, the fallback reported."""

from __future__ import annotations

import asyncio
import time
from datetime import date

import httpx
import pytest

from app.core.settings import Settings
from app.main import Services
from tests.factories import City, auth, build_city, make_key, submit
from tests.instances import another_instance


@pytest.fixture
async def city(services: Services) -> City:
    return await build_city(services)


async def test_an_extra_holiday_moves_new_deadlines(
    client: httpx.AsyncClient, city: City, services: Services
) -> None:
    # Submitted Monday 16 Nov 2026: 3 working days → Thursday 19 Nov.
    assert (await submit(client, city.enterprise()))["deadline"] == "2026-11-19T23:59:59+08:00"
    response = await client.put(
        "/v1/calendar/overrides/2026-11-18", json={"working": False, "note": "冰雪节放假一天"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["working"] is False and response.json()["date"] == "2026-11-18"
    assert (await submit(client, city.enterprise(index=1)))["deadline"] == "2026-11-20T23:59:59+08:00"
    # an extra working day on Saturday 21 Nov
    await client.put("/v1/calendar/overrides/2026-11-21", json={"working": True, "note": "调休上班"})
    days = (await client.get("/v1/calendar", params={"from": "2026-11-17", "to": "2026-11-22"})).json()
    assert [(d["date"][-2:], d["working"], d["source"]) for d in days["days"]] == [
        ("17", True, "official"),
        ("18", False, "override"),
        ("19", True, "official"),
        ("20", True, "official"),
        ("21", True, "override"),
        ("22", False, "official"),
    ]
    assert days["warnings"] == []
    listed = (await client.get("/v1/calendar/overrides")).json()
    assert [(o["date"], o["working"]) for o in listed["items"]] == [
        ("2026-11-18", False),
        ("2026-11-21", True),
    ]
    page = (await client.get("/v1/calendar/overrides", params={"limit": 1})).json()
    rest = (await client.get("/v1/calendar/overrides", params={"cursor": page["next_cursor"]})).json()
    assert [o["date"] for o in page["items"] + rest["items"]] == ["2026-11-18", "2026-11-21"]

    assert (await client.delete("/v1/calendar/overrides/2026-11-18")).status_code == 204
    assert (await client.delete("/v1/calendar/overrides/2026-11-18")).status_code == 404
    assert (await submit(client, city.enterprise(index=2)))["deadline"] == "2026-11-19T23:59:59+08:00"
    events = await services.store.read_stream("calendar-overrides")
    assert [(e.type, e.data["date"], e.metadata["role"]) for e in events] == [
        ("calendar.override_set", "2026-11-18", "admin"),
        ("calendar.override_set", "2026-11-21", "admin"),
        ("calendar.override_removed", "2026-11-18", "admin"),
    ]
    # setting what is set writes nothing
    await client.put("/v1/calendar/overrides/2026-11-21", json={"working": True, "note": "调休上班"})
    assert len(await services.store.read_stream("calendar-overrides")) == 3


async def test_the_fallback_years_are_reported(client: httpx.AsyncClient) -> None:
    days = (await client.get("/v1/calendar", params={"from": "2026-12-30", "to": "2027-01-04"})).json()
    assert [(d["date"], d["working"], d["source"]) for d in days["days"]][2:4] == [
        ("2027-01-01", True, "fallback"),
        ("2027-01-02", False, "fallback"),
    ]
    assert "2027" in days["warnings"][0] and days["official_years"][1] == 2026
    too_long = await client.get("/v1/calendar", params={"from": "2026-01-01", "to": "2027-06-01"})
    assert too_long.status_code == 422
    # an admin fixes New Year's Day of the unknown year; the warning stays (the rest is still a guess)
    await client.put("/v1/calendar/overrides/2027-01-01", json={"working": False, "note": "元旦"})
    days = (await client.get("/v1/calendar", params={"from": "2027-01-01", "to": "2027-01-01"})).json()
    assert days["days"][0]["source"] == "override" and days["warnings"]
    ready = (await client.get("/readyz")).json()
    assert ready["checks"]["calendar"]["official_years"][1] == 2026


async def test_only_admins_override_and_bad_input_writes_nothing(
    client: httpx.AsyncClient, services: Services
) -> None:
    viewer = await make_key(client, "viewer")
    refused = await client.put(
        "/v1/calendar/overrides/2026-12-01", json={"working": False, "note": "x"}, headers=auth(viewer)
    )
    assert refused.status_code == 403
    assert (await client.get("/v1/calendar/overrides", headers=auth(viewer))).status_code == 200
    assert (
        await client.put("/v1/calendar/overrides/2026-13-01", json={"working": False, "note": "x"})
    ).status_code == 422
    assert (await client.put("/v1/calendar/overrides/2026-12-01", json={"working": False})).status_code == 422
    assert await services.store.read_stream("calendar-overrides") == []


async def test_every_process_counts_with_the_override(client: httpx.AsyncClient, settings: Settings) -> None:
    async with another_instance(settings, routing_refresh_seconds=0.2) as (other, other_client):
        params = {"from": "2026-12-07", "to": "2026-12-07"}
        assert (await other_client.get("/v1/calendar", params=params)).json()["days"][0]["working"] is True
        await client.put("/v1/calendar/overrides/2026-12-07", json={"working": False, "note": "停电检修"})
        deadline = time.monotonic() + 10
        while (await other_client.get("/v1/calendar", params=params)).json()["days"][0]["working"]:
            assert time.monotonic() < deadline, "the other process never saw the override"
            await asyncio.sleep(0.05)
        assert not other.calendar.is_workday(date(2026, 12, 7))
