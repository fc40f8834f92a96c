"""Webhook subscriptions restored from their events. The signing secrets were never in the log
(portals read the feed), so a restored subscription gets a fresh secret and is left DISABLED
with a reason: its owner rotates the secret, gives it to the receiver, and enables it again.
Deliveries and attempts are operational records and are not restored (see docs/operations.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from app.core.db import upsert
from app.events import RecordedEvent
from app.projections.runner import checkpoints
from app.webhooks.fanout import Fanout
from app.webhooks.service import (
    WEBHOOK_CREATED,
    WEBHOOK_DELETED,
    WEBHOOK_DISABLED,
    WEBHOOK_REDELIVERY_REQUESTED,
    WEBHOOK_SECRET_ROTATED,
    WEBHOOK_UPDATED,
)
from app.webhooks.signing import generate_secret
from app.webhooks.tables import webhook_subscriptions as ws

RESTORED_REASON = "restored from a backup: rotate the secret, then enable it again"
_INSTANTS = ("disabled_at", "previous_secret_expires_at", "created_at", "updated_at")


def _instants(values: dict[str, Any]) -> dict[str, Any]:
    return {
        k: datetime.fromisoformat(v) if k in _INSTANTS and isinstance(v, str) else v
        for k, v in values.items()
    }


class WebhooksReplay:
    types = (
        WEBHOOK_CREATED,
        WEBHOOK_UPDATED,
        WEBHOOK_SECRET_ROTATED,
        WEBHOOK_DELETED,
        WEBHOOK_REDELIVERY_REQUESTED,
        WEBHOOK_DISABLED,
    )

    async def apply(self, conn: AsyncConnection, event: RecordedEvent) -> None:
        data, at, version = event.data, event.recorded_at, event.stream_version
        where = ws.c.id == data["id"]
        if event.type == WEBHOOK_CREATED:
            row = _instants({k: v for k, v in data.items() if k in ws.c})
            await conn.execute(sa.insert(ws).values(**row, secret=generate_secret()))
        elif event.type == WEBHOOK_UPDATED:
            changes = _instants(dict(data["changes"]))
            if changes.get("enabled") is True:
                changes["failing_since"] = None
            await conn.execute(sa.update(ws).where(where).values(**changes, updated_at=at, version=version))
        elif event.type == WEBHOOK_SECRET_ROTATED:
            expires = _instants(data)["previous_secret_expires_at"]
            await conn.execute(
                sa.update(ws)
                .where(where)
                .values(previous_secret_expires_at=expires, updated_at=at, version=version)
            )
        elif event.type == WEBHOOK_DELETED:
            await conn.execute(sa.delete(ws).where(where))
        elif event.type == WEBHOOK_DISABLED:
            await conn.execute(
                sa.update(ws)
                .where(where)
                .values(
                    enabled=False,
                    disabled_reason=data["reason"],
                    disabled_at=at,
                    updated_at=at,
                    version=version,
                )
            )
        else:  # a redelivery request only moves the version
            await conn.execute(sa.update(ws).where(where).values(version=version))


async def hold_restored(conn: AsyncConnection, now: datetime) -> int:
    """After a restore: every subscription waits, disabled, for its owner (new secret)."""
    result = await conn.execute(
        sa.update(ws)
        .where(ws.c.enabled.is_(True))
        .values(enabled=False, disabled_reason=RESTORED_REASON, disabled_at=now)
    )
    return int(result.rowcount)


async def skip_history(conn: AsyncConnection, head: int, now: datetime) -> None:
    """After a restore the fan-out starts at the head: what was notified before the backup is
    not notified again."""
    row = {"name": Fanout.name, "position": head, "updated_at": now}
    await conn.execute(upsert(conn.dialect.name, checkpoints, row, key=["name"]))
