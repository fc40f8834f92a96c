"""Building imported histories through the HTTP API (the admin key has the import permission)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx

from app.main import Services
from tests.factories import command, submit


async def submit_at(client: httpx.AsyncClient, enterprise_id: str, at: datetime, **extra: Any) -> str:
    problem = await submit(client, enterprise_id, occurred_at=at.isoformat(), **extra)
    return str(problem["id"])


async def at(
    client: httpx.AsyncClient,
    problem_id: str,
    when: datetime,
    name: str,
    body: dict[str, Any] | None = None,
    **kw: Any,
) -> dict[str, Any]:
    """A command with `occurred_at`: history, as an import would load it."""
    return await command(client, problem_id, name, {**(body or {}), "occurred_at": when.isoformat()}, **kw)


async def caught_up(services: Services) -> None:
    """Followers (the temporal model) at the head of the feed."""
    await services.projections.catch_up()


async def get(client: httpx.AsyncClient, path: str, **params: Any) -> dict[str, Any]:
    response = await client.get(path, params={k: v for k, v in params.items() if v is not None})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def by_key(body: dict[str, Any]) -> dict[str | None, dict[str, Any]]:
    return {g["key"]: g for g in body["groups"]}
