"""Open311 GeoReport v2 over HTTP (in process), on SQLite and PostgreSQL: formats, filters,
redaction of public reads, errors in Open311's shape, and what a pushed update means."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from xml.etree import ElementTree as ET

import httpx
import pytest

from app.core.clock import ManualClock
from app.core.settings import Settings
from app.main import Services
from tests.conftest import ADMIN_KEY, T0
from tests.factories import D1, City, build_city, command, make_key, submit

BASE = "/open311/v2"


@pytest.fixture
async def city(services: Services) -> City:
    return await build_city(services)


async def get(client: httpx.AsyncClient, path: str, **params: Any) -> httpx.Response:
    # No bearer header: Open311 reads authenticate (if at all) with the api_key parameter.
    return await client.get(BASE + path, params=params, headers={"Authorization": ""})


async def post(client: httpx.AsyncClient, path: str, data: dict[str, Any], **kw: Any) -> httpx.Response:
    return await client.post(BASE + path, data=data, headers={"Authorization": "", **kw.get("headers", {})})


def form(city: City, key: str, **extra: Any) -> dict[str, Any]:
    return {
        "api_key": key,
        "service_code": "utilities",
        "attribute[enterprise_id]": city.enterprise(),
        "address_string": "测试路 1 号",
        "lat": "43.8868",
        "long": "125.3245",
        "description": "新厂房需要双回路供电。申请已三个月。",
        **extra,
    }


async def test_discovery_services_and_definition_in_both_formats(
    client: httpx.AsyncClient, city: City
) -> None:
    d = await get(client, "/discovery.json")
    assert d.status_code == 200 and d.headers["content-type"] == "application/json; charset=utf-8"
    endpoint = d.json()["endpoints"][0]
    assert endpoint["specification"] == "http://wiki.open311.org/GeoReport_v2"
    assert endpoint["formats"] == ["application/json", "text/xml"]
    x = await get(client, "/discovery.xml")
    assert x.headers["content-type"] == "text/xml; charset=utf-8"
    assert x.text.startswith('<?xml version="1.0" encoding="utf-8"?>')
    assert ET.fromstring(x.content).find("endpoints/endpoint/formats/format").text == "application/json"

    services = (await get(client, "/services.json")).json()
    assert isinstance(services, list) and len(services) == 10
    utilities = next(s for s in services if s["service_code"] == "utilities")
    assert utilities["type"] == "realtime" and utilities["metadata"] is True
    assert utilities["service_name"] == "水电气暖" and "供电" in utilities["keywords"].split(",")
    root = ET.fromstring((await get(client, "/services.xml")).content)
    assert root.tag == "services" and len(root.findall("service")) == 10

    definition = (await get(client, "/services/utilities.json")).json()
    attrs = {a["code"]: a for a in definition["attributes"]}
    assert attrs["enterprise_id"]["required"] is True and attrs["enterprise_id"]["datatype"] == "string"
    assert [v["key"] for v in attrs["urgency"]["values"]] == ["normal", "urgent"]
    assert sorted(a["order"] for a in definition["attributes"]) == [1, 2, 3]
    xml = ET.fromstring((await get(client, "/service/utilities.xml")).content)  # singular alias
    assert xml.tag == "service_definition"
    assert xml.find("attributes/attribute/code").text == "enterprise_id"
    assert xml.find("attributes/attribute/required").text == "true"


async def test_post_then_read_redacted_without_key_and_full_with_one(
    client: httpx.AsyncClient, city: City
) -> None:
    portal = await make_key(client, "portal", source="gov-portal")
    created = await post(client, "/requests.json", form(city, portal, first_name="伟", last_name="张"))
    assert created.status_code == 200, created.text
    [item] = created.json()
    rid = item["service_request_id"]
    assert "限 2026-11-19 前办结" in item["service_notice"]
    problem = (await client.get(f"/v1/problems/{rid}")).json()
    assert problem["source"] == "gov-portal" and problem["title"] == "新厂房需要双回路供电"
    assert problem["location"] == {"address": "测试路 1 号", "lat": 43.8868, "long": 125.3245}

    [public] = (await get(client, f"/requests/{rid}.json")).json()
    assert public["status"] == "open" and public["service_code"] == "utilities"
    assert public["description"] is None and public["agency_responsible"] == "220102服务组1"
    assert public["expected_datetime"] == "2026-11-19T23:59:59+08:00"
    assert public["requested_datetime"].endswith("+08:00")
    assert (public["lat"], public["long"], public["address"]) == (43.8868, 125.3245, "测试路 1 号")
    assert city.enterprise() not in str(public)
    [full] = (await get(client, f"/requests/{rid}.json", api_key=portal)).json()
    assert full["description"] == "新厂房需要双回路供电。申请已三个月。"
    other = await make_key(client, "portal", source="other-portal")
    [foreign] = (await get(client, f"/requests/{rid}.json", api_key=other)).json()
    assert foreign["description"] is None  # a key that does not cover the problem reads publicly
    [ext] = (await get(client, f"/requests/{rid}.json", api_key=portal, extensions="true")).json()
    assert {a["code"]: a["value"] for a in ext["attributes"]}["enterprise_id"] == city.enterprise()
    [ext_public] = (await get(client, f"/requests/{rid}.json", extensions="true")).json()
    assert city.enterprise() not in str(ext_public)
    assert [n["type"] for n in ext_public["notes"]] == ["submitted"]

    xml = ET.fromstring((await get(client, f"/requests/{rid}.xml")).content)
    assert xml.tag == "service_requests"
    [request_el] = xml.findall("request")
    assert request_el.find("service_request_id").text == rid
    assert request_el.find("description").text is None


async def test_lifecycle_shows_in_status_notes_updates_and_filters(
    client: httpx.AsyncClient, city: City, clock: ManualClock
) -> None:
    pid = (await submit(client, city.enterprise(), category="land"))["id"]
    clock.advance(timedelta(minutes=1))
    other = (await submit(client, city.enterprise(index=1)))["id"]
    await command(client, pid, "escalate", {"reason": "需要区级协调"})
    await command(client, pid, "assign", {"lead_unit_id": city.function_groups[D1][0]})
    await command(client, pid, "accept")
    await command(client, pid, "resolve", {"resolution": "已完成用地审批"})

    [public] = (await get(client, f"/requests/{pid}.json")).json()
    assert public["status"] == "closed" and public["status_notes"] == "已办结"
    assert public["agency_responsible"] == "220102职能组a"
    [full] = (await get(client, f"/requests/{pid}.json", api_key=ADMIN_KEY)).json()
    assert full["status_notes"] == "已办结：已完成用地审批"

    async def ids(**params: Any) -> list[str]:
        return [r["service_request_id"] for r in (await get(client, "/requests.json", **params)).json()]

    assert await ids() == [other, pid]  # newest first
    assert await ids(status="closed") == [pid]
    assert await ids(status="open") == [other]
    assert await ids(service_code="land") == [pid]
    by_ids = await get(client, "/requests.json", service_request_id=f"{pid},{other}", status="open")
    assert len(by_ids.json()) == 2  # ids override every other filter
    paged = (await get(client, "/requests.json", page="2", page_size="1")).json()
    assert [r["service_request_id"] for r in paged] == [pid]
    empty = await get(client, "/requests.json", status="", service_code="", start_date="")
    assert len(empty.json()) == 2  # an empty parameter is an absent one
    old = (T0 - timedelta(days=100)).isoformat()
    assert await ids(start_date=old, end_date=(T0 - timedelta(days=20)).isoformat()) == []

    updates = (await get(client, "/servicerequestupdates.json", service_request_id=pid)).json()
    assert [u["status"] for u in updates] == ["internal_referral", "investigating", "in_progress", "fixed"]
    assert updates[-1]["description"] == "已办结" and updates[-1]["external_status_code"] == "resolved"
    xml = ET.fromstring((await get(client, "/servicerequestupdates.xml")).content)
    assert xml.tag == "service_request_updates" and len(xml.findall("request_update")) == 4


async def test_errors_are_open311_errors(client: httpx.AsyncClient, city: City, settings: Settings) -> None:
    portal = await make_key(client, "portal")

    async def error(response: httpx.Response, status: int) -> str:
        assert response.status_code == status, response.text
        assert response.headers["content-type"].startswith(("application/json", "text/xml"))
        if response.headers["content-type"].startswith("text/xml"):
            root = ET.fromstring(response.content)
            assert root.tag == "errors"
            return str(root.find("error/description").text)
        [err] = response.json()
        assert set(err) == {"code", "description"} and err["code"] == status
        return str(err["description"])

    assert "api_key" in await error(await post(client, "/requests.json", form(city, "")), 403)
    assert "api_key" in await error(await post(client, "/requests.xml", form(city, "dr_wrong")), 403)
    assert "no service" in await error(
        await post(client, "/requests.json", form(city, portal, service_code="nope")), 404
    )
    no_location = form(city, portal)
    for field in ("address_string", "lat", "long"):
        no_location.pop(field)
    assert "location" in await error(await post(client, "/requests.json", no_location), 400)
    missing = form(city, portal)
    missing.pop("attribute[enterprise_id]")
    assert "enterprise_id" in await error(await post(client, "/requests.xml", missing), 400)
    stranger = form(city, portal, **{"attribute[enterprise_id]": "9" * 18})
    unknown = await post(client, "/requests.json", stranger)
    assert "unknown_enterprise" in await error(unknown, 400)
    long = await post(client, "/requests.json", form(city, portal, description="长" * 4001))
    assert "4000" in await error(long, 400)
    assert "jurisdiction" in await error(await get(client, "/services.json", jurisdiction_id="nyc.gov"), 404)
    ok = await get(client, "/services.json", jurisdiction_id=settings.open311_jurisdiction_id)
    assert ok.status_code == 200
    assert "no service request" in await error(await get(client, "/requests/nope.json"), 404)
    assert "no service request" in await error(
        await get(client, "/requests/6f1c2a8e-3d1b-4c57-9a0e-2b7d4f1e9c30.xml"), 404
    )
    assert "90 days" in await error(
        await get(client, "/requests.json", start_date="2026-01-01", end_date="2026-11-01"), 400
    )
    assert "status" in await error(await get(client, "/requests.json", status="pending"), 400)
    assert "page_size" in await error(await get(client, "/requests.json", page_size="5000"), 400)
    assert "start_date" in await error(await get(client, "/requests.json", start_date="yesterday"), 400)
    assert "format" in await error(await get(client, "/services.yaml"), 404)
    assert "Open311 resource" in await error(await get(client, "/nothing.json"), 404)
    await error(await client.delete(BASE + "/requests.json"), 400)  # 405 → Open311's 400


async def test_private_reads_need_a_key(client: httpx.AsyncClient, city: City, services: Services) -> None:
    services.settings.open311_public_read = False
    try:
        pid = (await submit(client, city.enterprise()))["id"]
        denied = await get(client, "/requests.json")
        assert denied.status_code == 403 and "api_key" in denied.json()[0]["description"]
        dispatcher = await make_key(client, "dispatcher", district_id="220103")
        assert (await get(client, "/requests.json", api_key=dispatcher)).json() == []
        assert (await get(client, f"/requests/{pid}.json", api_key=dispatcher)).status_code == 404
        [full] = (await get(client, f"/requests/{pid}.json", api_key=ADMIN_KEY)).json()
        assert full["description"] == "新厂房需要双回路供电"
        assert (await get(client, "/services.json")).status_code == 200  # services stay public
    finally:
        services.settings.open311_public_read = True


async def test_pushed_updates_are_progress_notes_or_the_enterprises_feedback(
    client: httpx.AsyncClient, city: City
) -> None:
    portal = await make_key(client, "portal", source="gov-portal")
    [created] = (await post(client, "/requests.json", form(city, portal))).json()
    rid = created["service_request_id"]
    group = await make_key(client, "handler", unit_id=f"{D1}-t1-g1")

    note = {"api_key": group, "service_request_id": rid, "description": "已联系供电公司", "update_id": "u-1"}
    first = await post(client, "/servicerequestupdates.json", note)
    assert first.status_code == 200, first.text
    [update] = first.json()
    again = (await post(client, "/servicerequestupdates.json", note)).json()
    assert again[0]["update_id"] == update["update_id"]  # idempotent per update_id
    events = (await client.get(f"/v1/problems/{rid}/events")).json()
    assert [e["type"] for e in events] == ["problem.submitted", "problem.progress_reported"]
    assert events[1]["data"]["note"] == "已联系供电公司"

    as_portal = {**note, "api_key": portal, "update_id": "u-2"}
    refused = await post(client, "/servicerequestupdates.json", as_portal)
    assert refused.status_code == 403  # a portal pushes feedback, not progress
    early = {"api_key": portal, "service_request_id": rid, "description": "满意", "score": "5"}
    assert (await post(client, "/servicerequestupdates.json", early)).status_code == 400  # not resolved yet

    await command(client, rid, "resolve", {"resolution": "已接入"})
    feedback = await post(client, "/servicerequestupdates.xml", {**early, "status": "closed"})
    assert feedback.status_code == 200, feedback.text
    assert (
        ET.fromstring(feedback.content).find("request_update/external_status_code").text
        == "feedback_received"
    )
    problem = (await client.get(f"/v1/problems/{rid}")).json()
    assert problem["status"] == "closed" and problem["feedback_score"] == 5
    bad = await post(client, "/servicerequestupdates.json", {**early, "status": "weird"})
    assert bad.status_code == 400
