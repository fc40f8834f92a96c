"""Managing API keys. The `api_keys` table (in `app.core.security`) is the read model of the
`api-key-*` streams; the stored hash travels in the event so that replaying the log restores
every key, and the key itself is never stored anywhere."""

from __future__ import annotations

import contextlib
import hashlib
import secrets
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field

from app.core.clock import Clock
from app.core.db import Database
from app.core.errors import AppError, register
from app.core.requestmeta import RequestMeta, event_metadata
from app.core.security import SYSTEM, Caller, Role, api_keys, generate_key, hash_key, key_hint
from app.core.types import DistrictId, Name, Source, Strict, UnitId
from app.directory.service import Directory
from app.events import ConcurrencyConflict, EventStore, NewEvent, registry
from app.routing.tree import UnitKind

register(
    "invalid_key_scope",
    422,
    "Invalid key scope",
    "The role's scope is incomplete or wrong (a handler needs a unit, a dispatcher a district).",
)

API_KEY_CREATED = registry.register("api_key.created", "An API key was issued (its hash is kept).")
API_KEY_REVOKED = registry.register("api_key.revoked", "An API key was revoked.")


class KeyIn(Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "example": {
                "name": "南关区第一服务队第一组",
                "role": "handler",
                "unit_id": "220102-t1-g1",
            }
        },
    )

    name: Name
    role: Role
    unit_id: UnitId | None = Field(None, description="Handlers: the unit the key acts for.")
    district_id: DistrictId | None = Field(
        None, description="Dispatchers (or a district-bound viewer): the district's code."
    )
    source: Source | None = Field(
        None, description="Portals: the portal's code; the key sees the problems it submitted."
    )
    permissions: list[Literal["import"]] = Field(
        default_factory=list, description="`import`: may give `occurred_at` (admins have it)."
    )


class KeyOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "id": "key_5e0c2b7f1a9d3e44",
                "name": "南关区第一服务队第一组",
                "role": "handler",
                "unit_id": "220102-t1-g1",
                "district_id": "220102",
                "source": None,
                "permissions": [],
                "key_hint": "dr_Xk3…",
                "created_at": "2026-11-16T09:00:00+08:00",
                "created_by": "admin_3f2a1b0c9d8e",
                "revoked_at": None,
            }
        }
    )

    id: str
    name: str
    role: Role
    unit_id: str | None
    district_id: str | None
    source: str | None
    permissions: list[str]
    key_hint: str = Field(description="The first characters of the key, to recognise it.")
    created_at: datetime
    created_by: str | None
    revoked_at: datetime | None


class KeyCreated(KeyOut):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                **KeyOut.model_config["json_schema_extra"]["example"],  # type: ignore[index, dict-item]
                "key": "dr_Xk3vQ9…(shown once)",
            }
        }
    )

    key: str = Field(description="The key itself. Shown once; store it now.")


def key_out(row: Any) -> KeyOut:
    return KeyOut.model_validate(row, from_attributes=True)


class Keys:
    def __init__(self, db: Database, store: EventStore, directory: Directory, clock: Clock) -> None:
        self.db = db
        self.store = store
        self.directory = directory
        self.clock = clock

    async def _scope(self, body: KeyIn) -> tuple[str | None, str | None, str | None]:
        """(unit_id, district_id, source) for the role, validated."""
        role = body.role
        if role is Role.handler:
            if not body.unit_id:
                raise AppError("invalid_key_scope", "a handler key needs unit_id")
            unit = await self.directory.unit(body.unit_id)
            if unit is None:
                raise AppError("unknown_unit", f"unit {body.unit_id} does not exist")
            return unit.id, unit.district_id, None
        if role is Role.dispatcher:
            district = body.district_id
            if body.unit_id:
                unit = await self.directory.unit(body.unit_id)
                if unit is None or unit.kind is not UnitKind.district_dispatch_room:
                    raise AppError(
                        "invalid_key_scope", "a dispatcher's unit must be a district dispatch room"
                    )
                if district and district != unit.district_id:
                    raise AppError("invalid_key_scope", "unit_id and district_id disagree")
                return unit.id, unit.district_id, None
            if not district:
                raise AppError(
                    "invalid_key_scope",
                    "a dispatcher key needs district_id (or its room's unit_id)",
                )
            return None, district, None
        if role is Role.portal:
            return None, None, body.source
        if role is Role.viewer:
            return None, body.district_id, None
        if body.unit_id or body.district_id or body.source:
            raise AppError("invalid_key_scope", f"a {role.value} key has no unit, district or source")
        return None, None, None

    async def create(
        self,
        caller: Caller,
        body: KeyIn,
        meta: RequestMeta | None = None,
        *,
        key: str | None = None,
        bootstrap: bool = False,
        permissions: frozenset[str] = frozenset(),
        id_prefix: str = "key_",
    ) -> tuple[Any, str]:
        """`permissions` adds permissions the request body cannot ask for (a wall-board token's
        `board`); `id_prefix` makes such keys recognisable in listings."""
        unit_id, district_id, source = await self._scope(body)
        key = key or generate_key()
        key_id = id_prefix + secrets.token_hex(8)
        if bootstrap:
            key_id = "admin_" + hashlib.sha256(key.encode()).hexdigest()[:12]
        if body.role is Role.portal and source is None:
            source = key_id
        now = self.clock.now()
        row = {
            "id": key_id,
            "name": body.name,
            "role": body.role.value,
            "unit_id": unit_id,
            "district_id": district_id,
            "source": source,
            "permissions": sorted(set(body.permissions) | permissions),
            "key_hash": hash_key(key),
            "key_hint": key_hint(key),
            "created_at": now,
            "created_by": caller.key_id,
            "revoked_at": None,
        }
        data: dict[str, Any] = {k: v for k, v in row.items() if k not in ("created_at", "revoked_at")}
        data["bootstrap"] = bootstrap
        event = NewEvent(API_KEY_CREATED, data, metadata=event_metadata(caller, meta))
        try:
            await self.store.append(f"api-key-{key_id}", 0, [event], also=[sa.insert(api_keys).values(row)])
        except (ConcurrencyConflict, sa.exc.IntegrityError):
            raise AppError("conflict", "a key with this value or id exists") from None
        return await self.get(key_id), key

    async def get(self, key_id: str) -> Any:
        async with self.db.read() as conn:
            row = (await conn.execute(sa.select(api_keys).where(api_keys.c.id == key_id))).first()
        if row is None:
            raise AppError("not_found", f"API key {key_id} does not exist")
        return row

    async def list(self, *, include_revoked: bool = False) -> list[Any]:
        stmt = sa.select(api_keys).order_by(api_keys.c.created_at, api_keys.c.id)
        if not include_revoked:
            stmt = stmt.where(api_keys.c.revoked_at.is_(None))
        async with self.db.read() as conn:
            return list((await conn.execute(stmt)).all())

    async def revoke(self, caller: Caller, key_id: str, meta: RequestMeta | None = None) -> Any:
        row = await self.get(key_id)
        if row.revoked_at is not None:
            return row
        stream = f"api-key-{key_id}"
        version = (await self.store.read_stream(stream))[-1].stream_version
        now = self.clock.now()
        event = NewEvent(API_KEY_REVOKED, {"id": key_id}, metadata=event_metadata(caller, meta))
        stmt = sa.update(api_keys).where(api_keys.c.id == key_id).values(revoked_at=now)
        with contextlib.suppress(ConcurrencyConflict):  # revoked concurrently: same outcome
            await self.store.append(stream, version, [event], also=[stmt])
        return await self.get(key_id)

    async def ensure_admin_key(self, key: str) -> str:
        """Make sure an admin key with exactly this value exists; revoke earlier bootstrap keys
        (the operator changed ADMIN_API_KEY). Returns the key's id."""
        digest = hash_key(key)
        async with self.db.read() as conn:
            existing = (await conn.execute(sa.select(api_keys).where(api_keys.c.key_hash == digest))).first()
            earlier = (
                (
                    await conn.execute(
                        sa.select(api_keys.c.id).where(
                            api_keys.c.id.startswith("admin_"),
                            api_keys.c.key_hash != digest,
                            api_keys.c.revoked_at.is_(None),
                            api_keys.c.created_by == SYSTEM.key_id,
                        )
                    )
                )
                .scalars()
                .all()
            )
        for key_id in earlier:
            await self.revoke(SYSTEM, key_id)
        if existing is not None:
            if existing.revoked_at is not None or existing.role != Role.admin.value:
                raise RuntimeError("ADMIN_API_KEY matches a revoked or non-admin key; choose another value")
            return str(existing.id)
        try:
            row, _ = await self.create(
                SYSTEM,
                KeyIn(name="admin (ADMIN_API_KEY)", role=Role.admin),
                key=key,
                bootstrap=True,
            )
        except AppError:
            # Another process bootstrapped the same key a moment ago.
            async with self.db.read() as conn:
                again = (
                    await conn.execute(sa.select(api_keys.c.id).where(api_keys.c.key_hash == digest))
                ).scalar()
            if again is None:
                raise
            return str(again)
        return str(row.id)
