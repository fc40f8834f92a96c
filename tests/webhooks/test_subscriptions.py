"""`/v1/webhooks` subscriptions: the secret shown once and kept out of the log, every change an
event with its actor, scope by role, refused targets, pagination."""

from __future__ import annotations

import base64
import logging
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from app.events.tables import events
from app.main import Services
from app.webhooks.schemas import ALL_TYPES, PROBLEM_EVENT_TYPES, EventTypeName
from tests.conftest import ADMIN_KEY
from tests.factories import D1, D2, City, auth, make_key, submit
from tests.webhooks.conftest import subscribe
from tests.webhooks.receiver import Receiver


def test_the_subscribable_types_are_the_issue_list() -> None:
    assert set(EventTypeName.__args__) == {ALL_TYPES, *PROBLEM_EVENT_TYPES}
    assert len(PROBLEM_EVENT_TYPES) == 16


async def test_the_secret_is_shown_once_and_never_logged_or_recorded(
    client: httpx.AsyncClient,
    services: Services,
    receiver: Receiver,
    city: City,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)  # (the SQL drivers print parameters at DEBUG, as for every secret)
    created = await subscribe(client, receiver, description="办件系统")
    secret = created["secret"]
    raw = base64.b64decode(secret.removeprefix("whsec_"))
    assert secret.startswith("whsec_") and 24 <= len(raw) <= 64
    assert created["enabled"] is True and created["disabled_reason"] is None
    assert created["event_types"] == ["*"] and created["owner_key_id"].startswith("admin_")
    fetched = (await client.get(f"/v1/webhooks/{created['id']}")).json()
    listed = (await client.get("/v1/webhooks")).json()["items"]
    rotated = (await client.post(f"/v1/webhooks/{created['id']}/rotate-secret")).json()
    await client.post(f"/v1/webhooks/{created['id']}/test")
    await submit(client, city.enterprise())
    await receiver.wait_count(2)
    for shown in (fetched, *listed):
        assert "secret" not in shown and secret not in str(shown)
        assert shown["secret_fingerprint"] == created["secret_fingerprint"]
    async with services.db.read() as conn:
        log = " ".join(str(r) for r in (await conn.execute(sa.select(events.c.data, events.c.meta))).all())
    for value in (secret, rotated["secret"]):
        assert value not in log, "the event log never holds a secret"
        assert value not in caplog.text and value.removeprefix("whsec_") not in caplog.text


async def test_every_change_is_an_event_with_its_actor(
    client: httpx.AsyncClient, services: Services, receiver: Receiver, city: City
) -> None:
    created = await subscribe(client, receiver, event_types=["problem.submitted", "problem.assigned"])
    hook = created["id"]
    patched = await client.patch(
        f"/v1/webhooks/{hook}",
        json={"event_types": ["problem.overdue"], "description": "只要超期", "unit_id": city.teams[D1]},
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["event_types"] == ["problem.overdue"] and patched.json()["version"] == 2
    off = (await client.patch(f"/v1/webhooks/{hook}", json={"enabled": False})).json()
    assert off["enabled"] is False and off["disabled_reason"].startswith("disabled by")
    on = (await client.patch(f"/v1/webhooks/{hook}", json={"enabled": True})).json()
    assert on["enabled"] is True and on["disabled_reason"] is None and on["disabled_at"] is None
    same = (await client.patch(f"/v1/webhooks/{hook}", json={"enabled": True})).json()
    assert same["version"] == on["version"], "no change, no event"
    await client.post(f"/v1/webhooks/{hook}/rotate-secret")
    assert (await client.delete(f"/v1/webhooks/{hook}")).status_code == 204
    assert (await client.get(f"/v1/webhooks/{hook}")).status_code == 404
    stream = await services.store.read_stream(f"webhook-{hook}")
    assert [e.type for e in stream] == [
        "webhook.created",
        "webhook.updated",
        "webhook.updated",
        "webhook.updated",
        "webhook.secret_rotated",
        "webhook.deleted",
    ]
    assert all(
        e.metadata["actor"] == created["owner_key_id"] and e.metadata["role"] == "admin" for e in stream
    )
    assert stream[0].data["url"] == receiver.url and stream[0].data["secret_fingerprint"]
    assert stream[1].data["changes"] == {
        "event_types": ["problem.overdue"],
        "description": "只要超期",
        "unit_id": city.teams[D1],
        "district_id": D1,
    }
    assert stream[4].data["previous_secret_fingerprint"] == created["secret_fingerprint"]


async def test_handlers_subscribe_within_their_scope_admins_anywhere(
    client: httpx.AsyncClient, city: City, receiver: Receiver
) -> None:
    team = city.teams[D1]
    handler = await make_key(client, "handler", unit_id=team)
    own = await subscribe(client, receiver, key=handler)
    assert own["unit_id"] == team and own["owner_key_id"] != "admin"
    below = await subscribe(client, receiver, key=handler, unit_id=city.groups[D1][0])
    assert below["unit_id"] == city.groups[D1][0]
    for unit in (city.rooms[D1], city.teams[D2]):
        refused = await client.post(
            "/v1/webhooks",
            json={"url": receiver.url, "event_types": ["*"], "unit_id": unit},
            headers=auth(handler),
        )
        assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
    unknown = await client.post(
        "/v1/webhooks",
        json={"url": receiver.url, "event_types": ["*"], "unit_id": "nope"},
        headers=auth(handler),
    )
    assert unknown.json()["code"] == "unknown_unit"
    everything = await subscribe(client, receiver)  # an admin, without a unit: every problem
    # What a handler does not cover does not exist for it.
    assert (await client.get(f"/v1/webhooks/{everything['id']}", headers=auth(handler))).status_code == 404
    listed = (await client.get("/v1/webhooks", headers=auth(handler))).json()["items"]
    assert {h["id"] for h in listed} == {own["id"], below["id"]}
    moved = await client.patch(
        f"/v1/webhooks/{own['id']}", json={"unit_id": city.teams[D2]}, headers=auth(handler)
    )
    assert moved.status_code == 403
    other_group = await make_key(client, "handler", unit_id=city.groups[D1][1])
    assert (await client.get(f"/v1/webhooks/{own['id']}", headers=auth(other_group))).status_code == 404
    dispatcher = await make_key(client, "dispatcher", district_id=D2)
    assert (await client.get("/v1/webhooks", headers=auth(dispatcher))).json()["items"] == []
    no_unit = await client.post(
        "/v1/webhooks", json={"url": receiver.url, "event_types": ["*"]}, headers=auth(dispatcher)
    )
    assert no_unit.status_code == 403
    await subscribe(client, receiver, key=dispatcher, unit_id=city.function_groups[D2][0])
    for role, scope in (("portal", {}), ("viewer", {})):
        key = await make_key(client, role, **scope)
        assert (await client.get("/v1/webhooks", headers=auth(key))).status_code == 403
        denied = await client.post(
            "/v1/webhooks", json={"url": receiver.url, "event_types": ["*"]}, headers=auth(key)
        )
        assert denied.status_code == 403


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("http://10.1.2.3/hook", "webhook_target_refused"),
        ("http://169.254.169.254/latest/meta-data", "webhook_target_refused"),
        ("http://[::1]:8080/hook", "webhook_target_refused"),
        ("http://[::ffff:10.0.0.1]/hook", "webhook_target_refused"),
        ("http://100.64.0.1/hook", "webhook_target_refused"),
        ("http://0.0.0.0/hook", "webhook_target_refused"),
        ("ftp://127.0.0.1/hook", "invalid_webhook_url"),
        ("http://user:pw@127.0.0.1/hook", "invalid_webhook_url"),
        ("http:///nohost", "invalid_webhook_url"),
        ("https://127.0.0.1:99999/x", "invalid_webhook_url"),
    ],
)
async def test_refused_targets_are_422_with_a_clear_code(
    client: httpx.AsyncClient, url: str, code: str
) -> None:
    response = await client.post("/v1/webhooks", json={"url": url, "event_types": ["*"]})
    assert response.status_code == 422, response.text
    assert response.json()["code"] == code


async def test_validation_and_not_found(client: httpx.AsyncClient, receiver: Receiver) -> None:
    for body in (
        {"url": receiver.url, "event_types": ["problem.progress_reported"]},
        {"url": receiver.url, "event_types": []},
        {"url": receiver.url, "event_types": ["*"], "surprise": 1},
        {"event_types": ["*"]},
    ):
        response = await client.post("/v1/webhooks", json=body)
        assert response.status_code == 422 and response.json()["code"] == "validation_failed", body
    assert (await client.get("/v1/webhooks/wh_nope")).status_code == 404
    assert (await client.get("/v1/webhooks/wh_nope/deliveries")).status_code == 404
    assert (await client.post("/v1/webhooks/wh_nope/test")).status_code == 404
    refused = await client.patch("/v1/webhooks/wh_nope", json={"enabled": True})
    assert refused.status_code == 404
    created = await subscribe(client, receiver)
    moved = await client.patch(f"/v1/webhooks/{created['id']}", json={"url": "http://10.0.0.1/"})
    assert moved.json()["code"] == "webhook_target_refused"
    unauthenticated = await client.get("/v1/webhooks", headers={"Authorization": ""})
    assert unauthenticated.status_code == 401


async def test_lists_are_paginated(client: httpx.AsyncClient, receiver: Receiver, city: City) -> None:
    made = [(await subscribe(client, receiver, event_types=["problem.submitted"]))["id"] for _ in range(5)]
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/v1/webhooks", params=params)).json()
        seen += [h["id"] for h in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == made
    for _ in range(3):
        await submit(client, city.enterprise())
    await receiver.wait_count(15)
    first = (await client.get(f"/v1/webhooks/{made[0]}/deliveries", params={"limit": 2})).json()
    rest = (
        await client.get(
            f"/v1/webhooks/{made[0]}/deliveries", params={"limit": 2, "cursor": first["next_cursor"]}
        )
    ).json()
    assert len(first["items"]) == 2 and len(rest["items"]) == 1 and rest["next_cursor"] is None
    bad = await client.get(f"/v1/webhooks/{made[0]}/deliveries", params={"cursor": "garbage"})
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_cursor"
    assert ADMIN_KEY  # the default client is the admin
