"""Webhook fixtures: the application on the real clock (receivers check `webhook-timestamp`
against the time of day, as `standardwebhooks` does), a short retry schedule, 127.0.0.1 allowed
as a target, and a real receiver."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from app.core.clock import Clock, SystemClock
from app.core.settings import Settings
from app.main import Services
from app.projections.runner import Runner
from app.webhooks.fanout import Fanout
from app.webhooks.tables import webhook_deliveries
from tests.conftest import ADMIN_KEY
from tests.factories import City, auth, build_city
from tests.webhooks.receiver import Receiver

FAST = {
    "webhook_allowed_targets": ["127.0.0.1"],
    "webhook_retry_schedule": [0, 1, 1, 1, 1, 1],
    "webhook_poll_ms": 50,
    "webhook_timeout_seconds": 5.0,
}


@pytest.fixture
def clock() -> Clock:
    return SystemClock()


@pytest.fixture
def webhook_settings() -> dict[str, Any]:
    """Per-test overrides of the settings (parametrize it)."""
    return {}


@pytest.fixture
def settings(settings: Settings, webhook_settings: dict[str, Any]) -> Settings:
    """The suite's settings (tests/conftest.py) with the webhook ones above."""
    return Settings.model_validate({**settings.model_dump(), **FAST, **webhook_settings})


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


@pytest.fixture
async def city(services: Services) -> City:
    return await build_city(services)


async def subscribe(
    client: httpx.AsyncClient, receiver: Receiver, *, key: str = ADMIN_KEY, **body: Any
) -> dict[str, Any]:
    """Create a subscription to `receiver` (all events unless told) and give it the secret."""
    response = await client.post(
        "/v1/webhooks", json={"url": receiver.url, "event_types": ["*"], **body}, headers=auth(key)
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    receiver.secrets.append(created["secret"])
    return created


async def fanned_out(services: Services) -> None:
    """Wait until the fan-out follower has handled every event so far (a second runner of the
    same follower is safe: the runner's lock gives each batch to one of them)."""
    fanout = Fanout(
        services.store,
        services.calendar,
        services.settings.tz,
        services.settings.webhook_retry_schedule,
        services.clock,
    )
    await Runner(services.db, services.store, fanout, services.clock).catch_up()


async def deliveries(services: Services, subscription_id: str | None = None) -> list[Any]:
    stmt = sa.select(webhook_deliveries).order_by(webhook_deliveries.c.created_at, webhook_deliveries.c.id)
    if subscription_id is not None:
        stmt = stmt.where(webhook_deliveries.c.subscription_id == subscription_id)
    async with services.db.read() as conn:
        return list((await conn.execute(stmt)).all())


async def log_of(client: httpx.AsyncClient, webhook_id: str, **params: Any) -> list[dict[str, Any]]:
    response = await client.get(f"/v1/webhooks/{webhook_id}/deliveries", params=params)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def eventually(check: Any, timeout: float = 30.0) -> Any:
    """Poll an async `check()` until it returns something truthy (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s: {check.__name__}")
        await asyncio.sleep(0.05)


async def settled_log(
    client: httpx.AsyncClient, webhook_id: str, n: int, timeout: float = 30.0
) -> list[dict[str, Any]]:
    """The delivery log once it has `n` entries and none is pending (attempts are recorded a
    moment after the receiver answers)."""

    async def check() -> list[dict[str, Any]]:
        log = await log_of(client, webhook_id, limit=200)
        return log if len(log) >= n and all(d["status"] != "pending" for d in log) else []

    result: list[dict[str, Any]] = await eventually(check, timeout)
    return result


async def disabled(client: httpx.AsyncClient, webhook_id: str) -> dict[str, Any]:
    """The subscription once the service has disabled it."""

    async def check() -> dict[str, Any] | None:
        body: dict[str, Any] = (await client.get(f"/v1/webhooks/{webhook_id}")).json()
        return body if not body["enabled"] else None

    result: dict[str, Any] = await eventually(check)
    return result
