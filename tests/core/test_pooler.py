"""Behind a pooler in transaction mode (DB_PREPARED_STATEMENTS=false) a connection keeps nothing
named on the server between statements, and the hot paths (the caller's key, a submission, a
command, the driver-level statements) still work."""

from __future__ import annotations

import pytest

from app.core.clock import SystemClock
from app.core.settings import Settings
from tests.factories import D1, build_city, command, submit
from tests.instances import another_instance


@pytest.mark.postgres_only
async def test_without_prepared_statements_nothing_named_stays_on_the_server(settings: Settings) -> None:
    async with another_instance(settings, SystemClock(), db_prepared_statements=False, db_pool_size=1) as (
        services,
        client,
    ):
        city = await build_city(services)
        problem = await submit(client, city.enterprise(D1))
        escalated = await command(client, problem["id"], "escalate", {"reason": "需区级协调"})
        assert escalated["version"] == 2
        async with services.db.read() as conn:
            named = (await conn.exec_driver_sql("SELECT name FROM pg_prepared_statements")).all()
    assert named == []

    async with another_instance(settings, SystemClock(), db_pool_size=1) as (services, client):
        await submit(client, city.enterprise(D1))
        async with services.db.read() as conn:
            named = (await conn.exec_driver_sql("SELECT name FROM pg_prepared_statements")).all()
    assert named, "by default, statements stay prepared on the connection"
