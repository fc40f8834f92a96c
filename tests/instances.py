"""A second application instance on the test's database: its own caches, scheduler and
connections, as another server process would have (without the cost of starting one)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from app.core.clock import Clock
from app.core.settings import Settings
from app.main import Services, create_app
from tests.conftest import ADMIN_KEY


@asynccontextmanager
async def another_instance(
    settings: Settings, clock: Clock | None = None, **changes: Any
) -> AsyncIterator[tuple[Services, httpx.AsyncClient]]:
    app = create_app(settings.model_copy(update=changes), clock=clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://another-instance",
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        ) as client:
            yield app.state.services, client
