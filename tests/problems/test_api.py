"""`/v1/problems` over HTTP, on SQLite and PostgreSQL: every lifecycle path, refusals,
concurrency control, idempotency and lists."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx
import pytest

from app.main import Services
from tests.conftest import T0
from tests.factories import D1, D2, City, auth, build_city, command, make_key, submit


@pytest.fixture
async def city(services: Services) -> City:
    return await build_city(services)


async def events_of(client: httpx.AsyncClient, pid: str) -> list[dict[str, Any]]:
    response = await client.get(f"/v1/problems/{pid}/events")
    assert response.status_code == 200
    result: list[dict[str, Any]] = response.json()
    return result


async def test_submit_writes_one_event_and_returns_the_problem(client: httpx.AsyncClient, city: City) -> None:
    response = await client.post(
        "/v1/problems",
        json={
            "enterprise_id": city.enterprise(),
            "category": "utilities",
            "title": "双回路供电",
            "description": "新建厂房需要双回路供电，申请已提交三个月。",
            "reported_by": "张三",
        },
    )
    assert response.status_code == 201
    p = response.json()
    assert response.headers["etag"] == '"1"'
    assert response.headers["location"] == f"/v1/problems/{p['id']}"
    assert p["tier"] == "local" and p["status"] == "assigned"
    assert p["lead_unit_id"] == p["holder_unit_id"] == f"{D1}-t1-g1"
    assert p["district_id"] == D1 and p["version"] == 1 and p["cooperating_unit_ids"] == []
    assert p["deadline"] == "2026-11-19T23:59:59+08:00"
    assert p["submitted_at"].endswith("+08:00") and p["resolved_at"] is None
    assert (p["overdue"], p["age_days"], p["age_working_days"]) == (False, 0, 0)
    assert p["title"] == "双回路供电"  # Chinese text round-trips exactly
    events = await events_of(client, p["id"])
    assert [e["type"] for e in events] == ["problem.submitted"]
    assert events[0]["version"] == 1 and events[0]["metadata"]["actor"].startswith("admin_")
    fetched = await client.get(f"/v1/problems/{p['id']}")
    assert fetched.json() == p and fetched.headers["etag"] == '"1"'


async def test_solved_on_the_spot(client: httpx.AsyncClient, city: City) -> None:
    pid = (await submit(client, city.enterprise()))["id"]
    assert (await command(client, pid, "accept"))["status"] == "in_progress"
    resolved = await command(client, pid, "resolve", {"resolution": "现场协调解决"})
    assert resolved["status"] == "resolved" and resolved["solved_tier"] == "local"
    assert resolved["resolved_at"] is not None and resolved["time_to_resolve"] is not None
    closed = await command(client, pid, "feedback", {"score": 5, "comment": "满意"})
    assert closed["status"] == "closed" and closed["satisfied"] is True and closed["version"] == 5
    assert [e["type"] for e in await events_of(client, pid)] == [
        "problem.submitted",
        "problem.accepted",
        "problem.resolved",
        "problem.feedback_received",
        "problem.closed",
    ]


async def test_district_path_with_return_extension_and_reopen(client: httpx.AsyncClient, city: City) -> None:
    fg_a, fg_b = city.function_groups[D1]
    pid = (await submit(client, city.enterprise()))["id"]
    p = await command(client, pid, "escalate", {"reason": "需要区级协调"})
    assert (p["tier"], p["status"], p["holder_unit_id"], p["lead_unit_id"]) == (
        "district",
        "open",
        city.rooms[D1],
        None,
    )
    assert p["deadline"] == "2026-11-30T23:59:59+08:00"
    p = await command(client, pid, "assign", {"lead_unit_id": fg_b, "cooperating_unit_ids": [fg_a]})
    assert (p["status"], p["lead_unit_id"], p["cooperating_unit_ids"], p["holder_unit_id"]) == (
        "assigned",
        fg_b,
        [fg_a],
        fg_b,
    )
    p = await command(client, pid, "return", {"reason": "不属于本组职责"})
    assert p["return_request"]["reason"] == "不属于本组职责"
    p = await command(client, pid, "decide-return", {"accept": True})
    assert (p["status"], p["holder_unit_id"], p["returns"]) == ("open", city.rooms[D1], 1)
    p = await command(client, pid, "assign", {"lead_unit_id": fg_a, "deadline": "2026-12-04"})
    assert p["deadline"] == "2026-12-04T23:59:59+08:00"
    await command(client, pid, "accept")
    p = await command(client, pid, "request-extension", {"deadline": "2026-12-11", "reason": "等待材料"})
    assert p["extension_request"]["requested_deadline"].startswith("2026-12-11")
    p = await command(client, pid, "decide-extension", {"approve": True})
    assert p["deadline"] == "2026-12-11T23:59:59+08:00" and p["extension_request"] is None
    assert p["status_note"] == "经批准延期（等待材料），限 2026-12-11 前办结", "the enterprise is told"
    await command(client, pid, "progress", {"note": "已召开协调会"})
    await command(client, pid, "supervise", {"note": "请加快"})
    await command(client, pid, "resolve", {"resolution": "已解决"})
    p = await command(client, pid, "feedback", {"score": 2, "comment": "未彻底解决"})
    assert (p["status"], p["satisfied"], p["reopens"], p["resolved_at"]) == (
        "in_progress",
        False,
        1,
        None,
    )
    await command(client, pid, "resolve", {"resolution": "再次办结"})
    p = await command(client, pid, "feedback", {"score": 4})
    assert p["status"] == "closed" and p["solved_tier"] == "district"
    types = [e["type"] for e in await events_of(client, pid)]
    assert types.count("problem.reopened") == 1 and len(types) == p["version"]


async def test_city_path_defer_resume_and_withdraw(client: httpx.AsyncClient, city: City) -> None:
    pid = (await submit(client, city.enterprise(D2, 1)))["id"]
    await command(client, pid, "escalate", {"reason": "区级无法解决"})
    p = await command(client, pid, "escalate", {"reason": "超出区级权限"})
    assert (p["tier"], p["status"], p["holder_unit_id"]) == ("city", "open", city.command_room)
    p = await command(client, pid, "assign", {"lead_unit_id": city.departments[0]})
    assert p["holder_unit_id"] == city.departments[0]
    await command(client, pid, "accept")
    p = await command(
        client,
        pid,
        "defer",
        {
            "explanation": "需待年度用地指标下达",
            "review_on": "2026-12-21",
            "plan": [
                {"step": "申报指标", "due_on": "2026-12-10"},
                {"step": "完成出让", "due_on": "2027-03-31"},
            ],
        },
    )
    assert (p["status"], p["review_on"], p["overdue"]) == ("deferred", "2026-12-21", False)
    p = await command(client, pid, "resume", {"note": "指标已下达"})
    assert p["status"] == "in_progress"
    error = await command(client, pid, "escalate", {"reason": "x"}, expect=409)
    assert error["code"] == "already_at_top_tier"
    other = (await submit(client, city.enterprise(D2, 0)))["id"]
    assert (await command(client, other, "withdraw", {"reason": "企业自行解决"}))["status"] == "withdrawn"


async def test_refused_transitions_are_409_with_a_code_and_write_nothing(
    client: httpx.AsyncClient, city: City
) -> None:
    pid = (await submit(client, city.enterprise()))["id"]
    response = await client.post(f"/v1/problems/{pid}/feedback", json={"score": 5})
    assert response.status_code == 409
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["code"] == "invalid_transition" and body["status"] == 409
    assert body["type"] == "/errors/invalid_transition" and body["allowed_statuses"] == ["resolved"]
    for name, payload, code in [
        ("assign", {"lead_unit_id": city.function_groups[D1][0]}, "invalid_transition"),
        ("decide-extension", {"approve": True}, "no_extension_pending"),
        ("decide-return", {"accept": True}, "no_return_pending"),
        ("reopen", {"reason": "x"}, "invalid_transition"),
        ("close", {"reason": "x"}, "invalid_transition"),
    ]:
        assert (await command(client, pid, name, payload, expect=409))["code"] == code
    await command(client, pid, "escalate", {"reason": "x"})
    error = await command(client, pid, "assign", {"lead_unit_id": city.function_groups[D2][0]}, expect=422)
    assert error["code"] == "invalid_lead_unit"
    assert (await client.get(f"/v1/problems/{pid}")).json()["version"] == 2


async def test_validation_errors_list_each_field(client: httpx.AsyncClient, city: City) -> None:
    response = await client.post(
        "/v1/problems",
        json={"enterprise_id": "123", "category": "utilities", "title": "", "unknown": 1},
    )
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "validation_failed"
    fields = {tuple(e["loc"]) for e in body["errors"]}
    assert {
        ("body", "enterprise_id"),
        ("body", "title"),
        ("body", "description"),
        ("body", "unknown"),
    } <= fields
    pid = (await submit(client, city.enterprise()))["id"]
    bad = await client.post(f"/v1/problems/{pid}/feedback", json={"score": 9, "extra": True})
    assert bad.status_code == 422 and {tuple(e["loc"]) for e in bad.json()["errors"]} == {
        ("body", "score"),
        ("body", "extra"),
    }
    assert (
        await client.post(
            f"/v1/problems/{pid}/accept",
            content=b"{not json",
            headers={"content-type": "application/json"},
        )
    ).status_code == 422
    nul = await client.post(f"/v1/problems/{pid}/progress", json={"note": "a\x00b"})
    assert nul.status_code == 422
    missing = await submit_raw(
        client,
        {
            "enterprise_id": "91220102MA0000000X",
            "category": "utilities",
            "title": "t",
            "description": "d",
        },
    )
    assert missing.status_code == 422 and missing.json()["code"] == "unknown_enterprise"
    cat = await submit_raw(
        client,
        {
            "enterprise_id": city.enterprise(),
            "category": "no_such",
            "title": "t",
            "description": "d",
        },
    )
    assert cat.status_code == 422 and cat.json()["code"] == "unknown_category"


async def submit_raw(client: httpx.AsyncClient, body: dict[str, Any]) -> httpx.Response:
    return await client.post("/v1/problems", json=body)


async def test_not_found_is_problem_json(client: httpx.AsyncClient) -> None:
    for method, path in [
        ("GET", "/v1/problems/00000000-0000-0000-0000-000000000000"),
        ("POST", "/v1/problems/nope/accept"),
        ("GET", "/v1/nothing-here"),
    ]:
        response = await client.request(method, path, json={} if method == "POST" else None)
        assert response.status_code == 404
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["code"] == "not_found"


async def test_if_match_pins_the_version(client: httpx.AsyncClient, city: City) -> None:
    pid = (await submit(client, city.enterprise()))["id"]
    stale = await client.post(f"/v1/problems/{pid}/accept", json={}, headers={"If-Match": '"7"'})
    assert stale.status_code == 412 and stale.json()["code"] == "precondition_failed"
    ok = await client.post(f"/v1/problems/{pid}/accept", json={}, headers={"If-Match": '"1"'})
    assert ok.status_code == 200 and ok.headers["etag"] == '"2"'
    weak = await client.post(
        f"/v1/problems/{pid}/progress", json={"note": "n"}, headers={"If-Match": 'W/"2"'}
    )
    assert weak.status_code == 200
    assert (
        await client.post(f"/v1/problems/{pid}/progress", json={"note": "n"}, headers={"If-Match": "garbage"})
    ).status_code == 400


async def test_exactly_one_of_concurrent_commands_with_the_same_if_match_succeeds(
    client: httpx.AsyncClient, city: City
) -> None:
    pid = (await submit(client, city.enterprise()))["id"]
    responses = await asyncio.gather(
        *(
            client.post(
                f"/v1/problems/{pid}/progress",
                json={"note": f"note {i}"},
                headers={"If-Match": '"1"'},
            )
            for i in range(10)
        )
    )
    codes = sorted(r.status_code for r in responses)
    assert codes == [200] + [412] * 9
    assert (await client.get(f"/v1/problems/{pid}")).json()["version"] == 2


async def test_without_if_match_concurrent_commands_are_retried_and_all_land(
    client: httpx.AsyncClient, city: City
) -> None:
    pid = (await submit(client, city.enterprise()))["id"]
    responses = await asyncio.gather(
        *(client.post(f"/v1/problems/{pid}/progress", json={"note": f"note {i}"}) for i in range(10))
    )
    assert [r.status_code for r in responses] == [200] * 10
    events = await events_of(client, pid)
    assert len(events) == 11 and [e["version"] for e in events] == list(range(1, 12))
    assert sorted(e["data"]["note"] for e in events[1:]) == sorted(f"note {i}" for i in range(10))


async def test_concurrent_conflicting_transitions_apply_once(client: httpx.AsyncClient, city: City) -> None:
    pid = (await submit(client, city.enterprise()))["id"]
    responses = await asyncio.gather(*(client.post(f"/v1/problems/{pid}/accept", json={}) for _ in range(6)))
    assert sorted(r.status_code for r in responses) == [200] + [409] * 5
    assert [e["type"] for e in await events_of(client, pid)] == [
        "problem.submitted",
        "problem.accepted",
    ]


async def test_idempotency_key(client: httpx.AsyncClient, city: City) -> None:
    body = {
        "enterprise_id": city.enterprise(),
        "category": "utilities",
        "title": "t",
        "description": "d",
    }
    first = await client.post("/v1/problems", json=body, headers={"Idempotency-Key": "abc-1"})
    again = await client.post("/v1/problems", json=body, headers={"Idempotency-Key": "abc-1"})
    assert first.status_code == again.status_code == 201
    assert again.json()["id"] == first.json()["id"] and again.headers["idempotent-replayed"] == "true"
    assert len(await events_of(client, first.json()["id"])) == 1
    other = await client.post(
        "/v1/problems", json={**body, "title": "different"}, headers={"Idempotency-Key": "abc-1"}
    )
    assert other.status_code == 422 and other.json()["code"] == "idempotency_key_reused"
    new = await client.post("/v1/problems", json=body, headers={"Idempotency-Key": "abc-2"})
    assert new.json()["id"] != first.json()["id"]
    # Concurrent repeats of one key still make one problem.
    racing = await asyncio.gather(
        *(client.post("/v1/problems", json=body, headers={"Idempotency-Key": "race"}) for _ in range(8))
    )
    assert {r.status_code for r in racing} == {201} and len({r.json()["id"] for r in racing}) == 1
    # Keys are per API key: the same key from another caller is another request.
    dispatcher = await make_key(client, "dispatcher", district_id=D1)
    theirs = await client.post(
        "/v1/problems", json=body, headers={**auth(dispatcher), "Idempotency-Key": "abc-1"}
    )
    assert theirs.status_code == 201 and theirs.json()["id"] != first.json()["id"]


async def test_occurred_at_needs_the_import_permission_and_may_not_be_future(
    client: httpx.AsyncClient, city: City
) -> None:
    body = {
        "enterprise_id": city.enterprise(),
        "category": "utilities",
        "title": "t",
        "description": "d",
    }
    handler = await make_key(client, "handler", unit_id=city.groups[D1][0])
    past = (T0 - timedelta(days=40)).isoformat()
    refused = await client.post("/v1/problems", json={**body, "occurred_at": past}, headers=auth(handler))
    assert refused.status_code == 403 and refused.json()["code"] == "import_permission_required"
    future = (T0 + timedelta(minutes=6)).isoformat()
    assert (await client.post("/v1/problems", json={**body, "occurred_at": future})).json()[
        "code"
    ] == "occurred_at_in_future"
    near = (T0 + timedelta(minutes=4)).isoformat()
    assert (await client.post("/v1/problems", json={**body, "occurred_at": near})).status_code == 201
    imported = (await client.post("/v1/problems", json={**body, "occurred_at": past})).json()
    assert imported["submitted_at"] == "2026-10-07T09:00:00+08:00"
    # Working days after Wed 7 Oct (a holiday): Thu 8, Fri 9, and Sat 10 Oct, a make-up working day.
    assert imported["deadline"] == "2026-10-10T23:59:59+08:00"
    assert imported["age_days"] == 40 and imported["overdue"] is True
    p = await command(
        client, imported["id"], "accept", {"occurred_at": (T0 - timedelta(days=39)).isoformat()}
    )
    events = await events_of(client, imported["id"])
    assert events[1]["occurred_at"].startswith("2026-10-08") and events[1]["metadata"]["imported"] is True
    early = await command(
        client,
        imported["id"],
        "progress",
        {"note": "n", "occurred_at": (T0 - timedelta(days=45)).isoformat()},
        expect=422,
    )
    assert early["code"] == "occurred_at_out_of_order" and p["version"] == 2


async def test_list_filters_and_cursor_pagination(
    client: httpx.AsyncClient, city: City, services: Services
) -> None:
    ids = []
    for i in range(5):
        services.clock.advance(timedelta(minutes=1))  # type: ignore[attr-defined]
        ids.append(
            (await submit(client, city.enterprise(D1, i % 4), category="utilities" if i % 2 else "land"))[
                "id"
            ]
        )
    services.clock.advance(timedelta(minutes=1))  # type: ignore[attr-defined]
    d2 = (await submit(client, city.enterprise(D2, 0)))["id"]
    await command(client, ids[0], "escalate", {"reason": "x"})
    page = await client.get("/v1/problems", params={"limit": 2})
    assert page.status_code == 200
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        body = (await client.get("/v1/problems", params=params)).json()
        seen += [p["id"] for p in body["items"]]
        cursor = body["next_cursor"]
        if not cursor:
            break
    assert seen == [d2, *reversed(ids)], "newest first, each once"

    async def ids_for(**params: Any) -> set[str]:
        response = await client.get("/v1/problems", params={"limit": 100, **params})
        assert response.status_code == 200, response.text
        return {p["id"] for p in response.json()["items"]}

    assert await ids_for(district_id=D2) == {d2}
    assert await ids_for(status="open") == {ids[0]}
    assert await ids_for(status="open,assigned") == {*ids, d2}
    assert await ids_for(tier="district") == {ids[0]}
    assert await ids_for(category="land") == {ids[0], ids[2], ids[4]}
    assert await ids_for(holder_unit_id=city.rooms[D1]) == {ids[0]}
    assert await ids_for(enterprise_id=city.enterprise(D1, 1)) == {ids[1]}
    assert await ids_for(overdue="true") == set()
    services.clock.advance(timedelta(days=10))  # type: ignore[attr-defined]
    assert await ids_for(overdue="true") == {*ids[1:], d2}, "local deadlines passed; the district one not yet"
    assert await ids_for(submitted_from="2026-11-16T09:02:00+08:00") == {*ids[1:], d2}
    assert await ids_for(submitted_to="2026-11-16T09:02:00+08:00") == {ids[0]}
    assert (await client.get("/v1/problems", params={"status": "bogus"})).status_code == 422
    assert (await client.get("/v1/problems", params={"cursor": "not-a-cursor"})).json()[
        "code"
    ] == "invalid_cursor"
