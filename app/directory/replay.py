"""The reference-data read models (units, enterprises, categories, routing rules, calendar
overrides) restored from their events: what each event wrote, with the event's `recorded_at`
as the row's time and the stream version as the row's version."""

from __future__ import annotations

from datetime import date

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from app.core.db import upsert
from app.directory.calendar import OVERRIDE_REMOVED, OVERRIDE_SET
from app.directory.rules import RULES_CHANGED
from app.directory.service import (
    CATEGORY_CREATED,
    CATEGORY_UPDATED,
    ENTERPRISE_REGISTERED,
    ENTERPRISE_UPDATED,
    UNIT_CREATED,
    UNIT_UPDATED,
)
from app.directory.tables import calendar_overrides, categories, enterprises, routing_rules, units
from app.events import RecordedEvent
from app.routing.tree import TIER_OF_KIND, UnitKind

_UPDATES = {
    UNIT_UPDATED: (units, "id"),
    ENTERPRISE_UPDATED: (enterprises, "id"),
    CATEGORY_UPDATED: (categories, "code"),
}


class DirectoryReplay:
    types = (
        UNIT_CREATED,
        UNIT_UPDATED,
        ENTERPRISE_REGISTERED,
        ENTERPRISE_UPDATED,
        CATEGORY_CREATED,
        CATEGORY_UPDATED,
        RULES_CHANGED,
        OVERRIDE_SET,
        OVERRIDE_REMOVED,
    )

    async def apply(self, conn: AsyncConnection, event: RecordedEvent) -> None:
        data, at = event.data, event.recorded_at
        stamps = {"created_at": at, "updated_at": at, "version": event.stream_version}
        if event.type == UNIT_CREATED:
            parent = data.get("parent_id")
            path = data["id"]
            if parent:
                parent_path = (
                    await conn.execute(sa.select(units.c.path).where(units.c.id == parent))
                ).scalar_one()
                path = f"{parent_path}/{data['id']}"
            tier = TIER_OF_KIND[UnitKind(data["kind"])].value
            await conn.execute(sa.insert(units).values(**data, tier=tier, path=path, active=True, **stamps))
        elif event.type == ENTERPRISE_REGISTERED:
            await conn.execute(sa.insert(enterprises).values(**data, **stamps))
        elif event.type == CATEGORY_CREATED:
            await conn.execute(sa.insert(categories).values(**data, active=True, **stamps))
        elif event.type in _UPDATES:
            table, key = _UPDATES[event.type]
            changes = {k: v for k, v in data.items() if k != key}
            await conn.execute(
                sa.update(table)
                .where(table.c[key] == data[key])
                .values(**changes, updated_at=at, version=event.stream_version)
            )
        elif event.type == RULES_CHANGED:
            await conn.execute(
                sa.insert(routing_rules).values(
                    version=data["version"],
                    rules=data["rules"],
                    changes=data["changes"],
                    note=data.get("note"),
                    changed_at=at,
                    changed_by=event.metadata["actor"],
                    changed_by_name=event.metadata.get("actor_name"),
                )
            )
        elif event.type == OVERRIDE_SET:
            row = {
                "day": date.fromisoformat(data["date"]),
                "working": data["working"],
                "note": data["note"],
                "updated_at": at,
                "updated_by": event.metadata["actor"],
            }
            await conn.execute(upsert(conn.dialect.name, calendar_overrides, row, key=["day"]))
        elif event.type == OVERRIDE_REMOVED:
            day = date.fromisoformat(data["date"])
            await conn.execute(sa.delete(calendar_overrides).where(calendar_overrides.c.day == day))
