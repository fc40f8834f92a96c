"""API keys restored from their events. The key itself was never stored; its hash is in
`api_key.created`, so restored keys keep working."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from app.access.service import API_KEY_CREATED, API_KEY_REVOKED
from app.core.security import api_keys
from app.events import RecordedEvent


class KeysReplay:
    types = (API_KEY_CREATED, API_KEY_REVOKED)

    async def apply(self, conn: AsyncConnection, event: RecordedEvent) -> None:
        if event.type == API_KEY_CREATED:
            row = {k: v for k, v in event.data.items() if k in api_keys.c and k != "revoked_at"}
            await conn.execute(
                sa.insert(api_keys).values(**row, created_at=event.recorded_at, revoked_at=None)
            )
        else:
            await conn.execute(
                sa.update(api_keys)
                .where(api_keys.c.id == event.data["id"])
                .values(revoked_at=event.recorded_at)
            )
