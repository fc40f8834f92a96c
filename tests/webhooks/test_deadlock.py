"""A redelivery that deadlocks with another writer of the same rows (a transaction that takes the
subscription and then the delivery, while the redelivery's append takes them in the other order)
is decided again, not answered with 500. Found by the authorisation matrix, racing the sender."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import httpx
import pytest

from tests.conftest import _asyncpg_dsn
from tests.factories import City


@pytest.mark.postgres_only
@pytest.mark.parametrize("webhook_settings", [{"background": False}])
async def test_a_deadlocked_redelivery_is_retried(
    client: httpx.AsyncClient, city: City, db_url: str, webhook_settings: dict[str, Any]
) -> None:
    hook = (
        await client.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/h", "event_types": ["*"]})
    ).json()
    delivery = (await client.post(f"/v1/webhooks/{hook['id']}/test")).json()["id"]
    other = await asyncpg.connect(_asyncpg_dsn(db_url))
    try:
        await other.execute("SET deadlock_timeout = '20s'")  # the service's session detects it
        transaction = other.transaction()
        await transaction.start()
        await other.execute("UPDATE webhook_subscriptions SET url = url WHERE id = $1", hook["id"])
        retry = asyncio.create_task(
            client.post(f"/v1/webhooks/{hook['id']}/deliveries/{delivery}/retry", json={})
        )
        for _ in range(200):  # until the redelivery waits for the subscription row
            waiting = await other.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
            )
            if waiting:
                break
            await asyncio.sleep(0.02)
        assert waiting, "the redelivery never waited for the row"
        # Now take the delivery row the redelivery holds: a deadlock, which PostgreSQL breaks
        # by failing the redelivery's statement (its session checks first).
        await other.execute("UPDATE webhook_deliveries SET last_error = 'x' WHERE id = $1", delivery)
        await transaction.commit()
        response = await asyncio.wait_for(retry, 30)
    finally:
        await other.close()
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "pending"
