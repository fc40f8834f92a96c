"""Keys and secrets: keys are stored hashed and appear nowhere else, no secret is ever logged,
webhook secrets are shown once, and every administrative change is an event naming its actor."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from app.core.db import metadata
from app.core.security import hash_key
from app.main import Services
from tests.conftest import ADMIN_KEY
from tests.factories import D1, D2, auth, build_city, enterprise_code, make_key, submit

HOOK = "http://127.0.0.1:9/hook"


async def dump_database(services: Services) -> str:
    """Every row of every table (the event log included), as text."""
    parts = []
    async with services.db.read() as conn:
        for table in metadata.sorted_tables:
            parts += [repr(tuple(row)) for row in (await conn.execute(sa.select(table))).all()]
    return "\n".join(parts)


async def keys_and_secrets(client: httpx.AsyncClient, services: Services) -> tuple[list[str], list[str]]:
    """Make keys of every role and a webhook with a rotated secret, using each of them."""
    city = await build_city(services)
    keys = [
        ADMIN_KEY,
        await make_key(client, "portal", source="p1"),
        await make_key(client, "handler", unit_id=city.groups[D1][0]),
        await make_key(client, "dispatcher", district_id=D1),
        await make_key(client, "commander"),
        await make_key(client, "viewer", district_id=D2),
        await make_key(client, "admin"),
    ]
    created = await client.post(
        "/v1/webhooks", json={"url": HOOK, "event_types": ["*"], "unit_id": city.groups[D1][0]}
    )
    assert created.status_code == 201
    hook = created.json()
    rotated = await client.post(f"/v1/webhooks/{hook['id']}/rotate-secret", json={})
    assert rotated.status_code == 200
    secrets = [hook["secret"], rotated.json()["secret"]]
    for key in keys:
        assert (await client.get("/v1/me", headers=auth(key))).status_code == 200
        assert (await client.get("/v1/problems", headers=auth(key))).status_code == 200
        assert (await client.get("/open311/v2/requests.json", params={"api_key": key})).status_code == 200
    await submit(client, city.enterprise(D1, 0), key=keys[1])
    return keys, secrets


async def test_keys_are_stored_hashed_and_secrets_stay_out_of_the_log(
    client: httpx.AsyncClient, services: Services
) -> None:
    keys, secrets = await keys_and_secrets(client, services)
    everything = await dump_database(services)
    for key in keys:
        assert key not in everything, "a raw key is stored somewhere"
        assert hash_key(key) in everything  # what is stored instead
    # Webhook secrets sign deliveries, so their row keeps them; the event log (which the feed
    # serves) never does.
    async with services.db.read() as conn:
        log = "\n".join(repr(tuple(r)) for r in (await conn.execute(sa.text("SELECT * FROM events"))).all())
    for secret in secrets:
        assert secret not in log
    assert "webhook.secret_rotated" in log  # the rotation itself is recorded (a fingerprint)


async def test_no_secret_is_ever_logged(
    client: httpx.AsyncClient, services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    """Everything every logger says at DEBUG (the application, SQLAlchemy's statements and
    parameters, the database drivers, the HTTP client) while keys and webhooks are created, a
    secret is rotated and keys are used (in headers and in Open311's `api_key`)."""
    for name in (
        "",
        "sqlalchemy",
        "sqlalchemy.engine",
        "aiosqlite",
        "asyncpg",
        "httpx",
        "httpcore",
        "dispatchroom",
    ):
        caplog.set_level(logging.DEBUG, logger=name)
    keys, secrets = await keys_and_secrets(client, services)
    bad = await client.get("/v1/problems", headers=auth(keys[1] + "x"))  # a wrong key is not logged either
    assert bad.status_code == 401
    text = "\n".join(
        f"{r.name}: {r.getMessage()} {r.exc_text or ''}"
        for r in caplog.records
        if not r.name.startswith("http")
    )
    assert "INSERT INTO" in text, "the capture must see SQLAlchemy's statements"
    for secret in [*keys, keys[1] + "x", *secrets]:
        assert secret not in text


async def test_webhook_secrets_are_shown_once(client: httpx.AsyncClient, services: Services) -> None:
    city = await build_city(services)
    dispatcher = await make_key(client, "dispatcher", district_id=D1)
    created = await client.post(
        "/v1/webhooks", json={"url": HOOK, "event_types": ["*"], "unit_id": city.groups[D1][0]}
    )
    hook = created.json()
    secret = hook["secret"]
    assert secret.startswith("whsec_")
    new_secret = (await client.post(f"/v1/webhooks/{hook['id']}/rotate-secret", json={})).json()["secret"]
    delivery = (await client.post(f"/v1/webhooks/{hook['id']}/test")).json()
    reads = [
        await client.get("/v1/webhooks"),
        await client.get(f"/v1/webhooks/{hook['id']}"),
        await client.get("/v1/webhooks", headers=auth(dispatcher)),
        await client.get(f"/v1/webhooks/{hook['id']}", headers=auth(dispatcher)),
        await client.patch(f"/v1/webhooks/{hook['id']}", json={"description": "x"}),
        await client.get(f"/v1/webhooks/{hook['id']}/deliveries"),
        await client.get(f"/v1/webhooks/{hook['id']}/deliveries/{delivery['id']}"),
        await client.get("/v1/events", params={"after": 0, "limit": 1000}),
    ]
    for response in reads:
        assert response.status_code == 200, response.text
        assert secret not in response.text and new_secret not in response.text
        assert '"secret"' not in response.text and '"previous_secret"' not in response.text


async def last_event(services: Services, stream: str) -> Any:
    return (await services.store.read_stream(stream))[-1]


async def test_every_administrative_change_is_an_event_with_its_actor(
    client: httpx.AsyncClient, services: Services
) -> None:
    city = await build_city(services)
    admin_id = (await client.get("/v1/me")).json()["id"]
    dispatcher = await make_key(client, "dispatcher", district_id=D1)
    dispatcher_id = (await client.get("/v1/me", headers=auth(dispatcher))).json()["id"]
    group = city.groups[D1][0]
    key_id = (await client.post("/v1/api-keys", json={"name": "k", "role": "viewer"})).json()["id"]
    hook = (
        await client.post("/v1/webhooks", json={"url": HOOK, "event_types": ["*"], "unit_id": group})
    ).json()
    delivery = (await client.post(f"/v1/webhooks/{hook['id']}/test")).json()
    code = enterprise_code(D1, 777)
    enterprise = {
        "id": code,
        "name": "审计企业",
        "district_id": D1,
        "service_unit_id": group,
        "address": "路",
    }
    actions: list[tuple[str, str, dict[str, Any] | None, str, str, str]] = [
        # method, path, body, stream, event type, actor
        (
            "POST",
            "/v1/api-keys",
            {"name": "k2", "role": "viewer"},
            "api-key-{id}",
            "api_key.created",
            admin_id,
        ),
        ("DELETE", f"/v1/api-keys/{key_id}", None, f"api-key-{key_id}", "api_key.revoked", admin_id),
        (
            "PUT",
            "/v1/routing/rules",
            {"auto_escalate": {"local": True}},
            "routing-rules",
            "routing.rules_changed",
            admin_id,
        ),
        (
            "POST",
            "/v1/units",
            {"id": "audit-team", "name": "审计队", "kind": "service_team", "parent_id": city.rooms[D1]},
            "unit-audit-team",
            "unit.created",
            admin_id,
        ),
        (
            "PATCH",
            "/v1/units/audit-team",
            {"name": "审计服务队"},
            "unit-audit-team",
            "unit.updated",
            admin_id,
        ),
        (
            "POST",
            "/v1/categories",
            {"code": "audit", "name": "审计"},
            "category-audit",
            "category.created",
            admin_id,
        ),
        ("PATCH", "/v1/categories/audit", {"name": "审计类"}, "category-audit", "category.updated", admin_id),
        ("POST", "/v1/enterprises", enterprise, f"enterprise-{code}", "enterprise.registered", dispatcher_id),
        (
            "PATCH",
            f"/v1/enterprises/{code}",
            {"address": "新路"},
            f"enterprise-{code}",
            "enterprise.updated",
            admin_id,
        ),
        (
            "PUT",
            "/v1/calendar/overrides/2027-01-01",
            {"working": False, "note": "元旦"},
            "calendar-overrides",
            "calendar.override_set",
            admin_id,
        ),
        (
            "DELETE",
            "/v1/calendar/overrides/2027-01-01",
            None,
            "calendar-overrides",
            "calendar.override_removed",
            admin_id,
        ),
        (
            "POST",
            "/v1/webhooks",
            {"url": HOOK, "event_types": ["*"]},
            "webhook-{id}",
            "webhook.created",
            admin_id,
        ),
        (
            "PATCH",
            f"/v1/webhooks/{hook['id']}",
            {"description": "x"},
            f"webhook-{hook['id']}",
            "webhook.updated",
            admin_id,
        ),
        (
            "POST",
            f"/v1/webhooks/{hook['id']}/rotate-secret",
            {},
            f"webhook-{hook['id']}",
            "webhook.secret_rotated",
            admin_id,
        ),
        (
            "POST",
            f"/v1/webhooks/{hook['id']}/deliveries/{delivery['id']}/retry",
            {},
            f"webhook-{hook['id']}",
            "webhook.redelivery_requested",
            admin_id,
        ),
        ("DELETE", f"/v1/webhooks/{hook['id']}", None, f"webhook-{hook['id']}", "webhook.deleted", admin_id),
    ]
    for method, path, body, stream, event_type, actor in actions:
        headers = auth(dispatcher) if actor == dispatcher_id else {}
        response = await client.request(
            method, path, json=body, headers={**headers, "X-Request-ID": "audit-1"}
        )
        assert response.status_code < 300, (method, path, response.text)
        if "{id}" in stream:
            stream = stream.format(id=response.json()["id"])
        event = await last_event(services, stream)
        assert event.type == event_type, (method, path, event.type)
        assert event.metadata["actor"] == actor, (method, path)
        assert event.metadata["role"] == ("dispatcher" if actor == dispatcher_id else "admin")
        assert event.metadata["request_id"] == "audit-1"
