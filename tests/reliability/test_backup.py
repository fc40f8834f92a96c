"""Backup and restore, on SQLite and PostgreSQL: `dispatchroom events export` of a database with
every kind of event, `dispatchroom events import` into an empty one, and every table compares
row for row (the documented exceptions: webhook secrets and delivery records, internal insertion
numbers) and every API read answers the same. A truncated file or a database that is not empty
is refused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import sqlalchemy as sa

from app.core.clock import ManualClock
from app.core.db import Database, metadata
from app.core.settings import Settings
from app.main import Services, create_app
from tests.conftest import ADMIN_KEY
from tests.factories import D1, City, auth, build_city, make_key
from tests.projections.test_rebuild import varied_history
from tests.reliability.databases import fresh_database
from tests.server import dispatchroom
from tests.webhooks.receiver import Receiver

pytestmark = pytest.mark.slow

# Columns a restore does not reproduce, on purpose (docs/operations.md, "Backup and restore").
NOT_RESTORED = {
    "events": {"id", "tx_id"},  # insertion numbers and writing transactions are internal
    "event_positions": {"event_row"},  # points at the insertion number
    "event_sequencer": {"last_tx", "last_row"},
    "checkpoints": {"updated_at"},
    # Secrets never enter the log; a restored subscription waits, disabled, for a new secret;
    # `failing_since` is the sender's observation of a receiver.
    "webhook_subscriptions": {
        "secret",
        "previous_secret",
        "enabled",
        "disabled_reason",
        "disabled_at",
        "failing_since",
    },
}
READS = [
    "/v1/problems?limit=500",
    "/v1/units?limit=500",
    "/v1/enterprises?limit=500",
    "/v1/categories",
    "/v1/routing/rules",
    "/v1/routing/rules/history",
    "/v1/calendar/overrides",
    "/v1/api-keys",
    "/v1/events?limit=1000",
    "/v1/stats/solve-rates?group_by=district",
    "/v1/stats/aging",
    "/v1/stats/rankings",
]
# Derived or observed, not events: deliveries and attempts; the marks of which days the temporal
# model changed at which position (a restore's rebuild marks every day instead); and figures of
# the past stored for reuse (a restore's rebuild makes them stale, and they are computed again).
OPERATIONAL = {"webhook_deliveries", "webhook_attempts", "problem_history_changes", "settled_figures"}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return Settings.model_validate({**settings.model_dump(), "webhook_allowed_targets": ["127.0.0.1"]})


async def everything(client: httpx.AsyncClient, services: Services, clock: ManualClock) -> City:
    """A database with every kind of event: directory changes, rules, calendar, keys,
    webhooks, and problems with imported and live histories."""
    city = await build_city(services)
    await varied_history(client, city)
    fg_a, fg_b = city.function_groups[D1]
    rules = (await client.get("/v1/routing/rules")).json()
    route = {"district_id": D1, "category": "utilities", "lead_unit_id": fg_a, "cooperating_unit_ids": [fg_b]}
    changed = await client.put(
        "/v1/routing/rules", json={"routes": [route], "deadlines": rules["deadlines"], "note": "测试"}
    )
    assert changed.status_code == 200, changed.text
    assert (
        await client.put("/v1/calendar/overrides/2026-12-31", json={"working": False, "note": "跨年"})
    ).is_success
    assert (
        await client.put("/v1/calendar/overrides/2027-01-04", json={"working": True, "note": "调休"})
    ).is_success
    assert (await client.delete("/v1/calendar/overrides/2027-01-04")).status_code == 204
    assert (await client.patch(f"/v1/units/{fg_b}", json={"name": "要素保障组（新）"})).is_success
    patched = await client.patch(f"/v1/enterprises/{city.enterprise()}", json={"address": "人民大街 1 号"})
    assert patched.is_success, patched.text
    handler = await make_key(client, "handler", unit_id=city.groups[D1][0])
    revoked = await client.post("/v1/api-keys", json={"name": "临时", "role": "viewer"})
    assert (await client.delete(f"/v1/api-keys/{revoked.json()['id']}")).is_success
    with Receiver() as receiver:
        hook = await client.post(
            "/v1/webhooks", json={"url": receiver.url, "event_types": ["problem.submitted"]}
        )
        assert hook.status_code == 201, hook.text
        hid = hook.json()["id"]
        assert (await client.patch(f"/v1/webhooks/{hid}", json={"description": "区平台"})).is_success
        assert (await client.post(f"/v1/webhooks/{hid}/rotate-secret", json={})).is_success
        gone = await client.post("/v1/webhooks", json={"url": receiver.url, "event_types": ["*"]})
        assert (await client.delete(f"/v1/webhooks/{gone.json()['id']}")).status_code == 204
        mine = await client.post("/v1/problems", headers=auth(handler), json={
            "enterprise_id": city.enterprise(), "category": "utilities",
            "title": "处理单位上报", "description": "恢复后仍可见"})  # fmt: skip
        assert mine.status_code == 201, mine.text
        await services.store.sequence()
        await services.projections.catch_up()
    return city


async def dump(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every table but the operational ones, row by row in a stable order, without the columns
    a restore does not reproduce."""
    db = Database(url, pool_size=1)
    out = {}
    try:
        async with db.read() as conn:
            for table in metadata.sorted_tables:
                if table.name in OPERATIONAL:
                    continue
                skip = NOT_RESTORED.get(table.name, set())
                columns = [c for c in table.columns if c.name not in skip]
                order = (
                    [table.c.position] if table.name == "event_positions" else
                    [table.c.stream_id, table.c.stream_version] if table.name == "events" else
                    list(table.primary_key.columns) or columns
                )  # fmt: skip
                rows = (await conn.execute(sa.select(*columns).order_by(*order))).all()
                out[table.name] = [tuple(r) for r in rows]
    finally:
        await db.dispose()
    return out


@pytest.fixture
def target(db_url: str, tmp_path: Path) -> Any:
    backend = "postgresql" if db_url.startswith("postgresql") else "sqlite"
    with fresh_database(backend, tmp_path, "restored") as url:
        yield url


@pytest.fixture
async def restored_client(
    target: str, settings: Settings, clock: ManualClock
) -> AsyncIterator[httpx.AsyncClient]:
    """Yields a factory: the API of the restored database, with the same clock as the source."""
    apps: list[Any] = []

    async def make() -> httpx.AsyncClient:
        application = create_app(
            Settings.model_validate({**settings.model_dump(), "database_url": target}), clock=clock
        )
        context = application.router.lifespan_context(application)
        await context.__aenter__()
        apps.append(context)
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=application),
            base_url="http://restored",
            headers=auth(ADMIN_KEY),
        )

    yield make  # type: ignore[misc]
    for context in apps:
        await context.__aexit__(None, None, None)


async def test_export_import_round_trip_reproduces_every_read_model(
    client: httpx.AsyncClient,
    services: Services,
    clock: ManualClock,
    db_url: str,
    target: str,
    restored_client: Any,
    tmp_path: Path,
) -> None:
    await everything(client, services, clock)
    backup = tmp_path / "events.jsonl"
    exported = await asyncio.to_thread(
        dispatchroom, "events", "export", "-o", str(backup), env={"DATABASE_URL": db_url}
    )
    assert exported.returncode == 0, exported.stderr + exported.stdout
    lines = backup.read_bytes().splitlines()
    header, first, trailer = orjson.loads(lines[0]), orjson.loads(lines[1]), orjson.loads(lines[-1])
    assert header["format"] == "dispatchroom-events" and first["position"] == 1
    assert set(first) >= {"event_id", "stream_id", "stream_version", "type", "schema_version", "data",
                          "metadata", "occurred_at", "recorded_at"}  # fmt: skip
    assert trailer == {"end": True, "events": len(lines) - 2, "last_position": len(lines) - 2}

    imported = await asyncio.to_thread(
        dispatchroom, "events", "import", str(backup), env={"DATABASE_URL": target}
    )
    assert imported.returncode == 0, imported.stderr + imported.stdout
    assert "1 webhook subscription(s) disabled" in " ".join(imported.stdout.split()), imported.stdout

    source, copy = await dump(db_url), await dump(target)
    assert copy.keys() == source.keys()
    for name in source:
        assert copy[name] == source[name], f"{name} differs after the restore"
    assert len(copy["events"]) == trailer["events"] and len(copy["problem_history"]) > 20

    # The API reads the same (same clock), keys still work, the feed has the same positions.
    restored = await restored_client()
    for path in READS:
        before, after = await client.get(path), await restored.get(path)
        assert (after.status_code, after.json()) == (before.status_code, before.json()), path
    for problem in (await client.get("/v1/problems?limit=500")).json()["items"]:
        for suffix in ("", "/events"):
            path = f"/v1/problems/{problem['id']}{suffix}"
            assert (await restored.get(path)).json() == (await client.get(path)).json(), path
    webhooks = (await restored.get("/v1/webhooks")).json()["items"]
    assert [w["enabled"] for w in webhooks] == [False]
    await restored.aclose()


async def test_import_refuses_a_truncated_file_and_a_database_that_is_not_empty(
    client: httpx.AsyncClient, services: Services, db_url: str, target: str, tmp_path: Path
) -> None:
    await build_city(services)
    backup = tmp_path / "events.jsonl"
    assert (
        await asyncio.to_thread(
            dispatchroom, "events", "export", "-o", str(backup), env={"DATABASE_URL": db_url}
        )
    ).returncode == 0
    truncated = tmp_path / "truncated.jsonl"
    truncated.write_bytes(b"\n".join(backup.read_bytes().splitlines()[:-5]) + b"\n")
    refused = await asyncio.to_thread(
        dispatchroom, "events", "import", str(truncated), env={"DATABASE_URL": target}
    )
    assert refused.returncode == 2 and "truncated" in refused.stdout, refused.stdout
    assert not (await dump(target))["events"], "a refused import leaves nothing behind"
    into_source = await asyncio.to_thread(
        dispatchroom, "events", "import", str(backup), env={"DATABASE_URL": db_url}
    )
    assert into_source.returncode == 2 and "not empty" in into_source.stdout, into_source.stdout
