"""Reading and changing reference data. Every change is an event appended together with its
read-model row, so the tables never disagree with the log."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

from app.core.clock import Clock
from app.core.db import Database
from app.core.errors import AppError, register
from app.core.requestmeta import RequestMeta, event_metadata
from app.core.security import SYSTEM, Caller, Role, api_keys
from app.directory.schemas import (
    CategoryIn,
    CategoryPatch,
    EnterpriseIn,
    EnterprisePatch,
    UnitIn,
    UnitPatch,
)
from app.directory.tables import categories, enterprises, units
from app.events import ConcurrencyConflict, EventStore, NewEvent, registry
from app.routing.tree import PARENT_KINDS, TIER_OF_KIND, UnitKind, UnitRef

register("unit_exists", 409, "Unit exists", "A unit with this id exists.")
register(
    "invalid_unit",
    422,
    "Invalid unit",
    "The unit does not fit the routing tree (parent kind, district, uniqueness of rooms).",
)
register("unknown_unit", 422, "Unknown unit", "A referenced unit does not exist.")
register("enterprise_exists", 409, "Enterprise exists", "An enterprise with this credit code exists.")
register(
    "invalid_service_unit",
    422,
    "Invalid service unit",
    "The service unit must be an active service group or team of the enterprise's district.",
)
register("category_exists", 409, "Category exists", "A category with this code exists.")
register("unknown_category", 422, "Unknown category", "The category does not exist or is inactive.")

UNIT_CREATED = registry.register("unit.created", "A unit joined the routing tree.")
UNIT_UPDATED = registry.register("unit.updated", "A unit was renamed or (de)activated.")
ENTERPRISE_REGISTERED = registry.register("enterprise.registered", "An enterprise entered the directory.")
ENTERPRISE_UPDATED = registry.register("enterprise.updated", "An enterprise's record changed.")
CATEGORY_CREATED = registry.register("category.created", "A problem category was added.")
CATEGORY_UPDATED = registry.register("category.updated", "A problem category changed.")

# The default categories of SPEC §2 (codes fixed; names from the demo city).
DEFAULT_CATEGORIES: tuple[tuple[str, str, str], ...] = (
    ("land", "土地", "用地指标、土地出让、产权证办理"),
    ("planning_permit", "规划与施工许可", "规划许可、施工许可、竣工验收"),
    ("environmental_assessment", "环评安评", "环境影响评价、安全评价"),
    ("financing", "融资", "贷款、担保、授信、上市"),
    ("utilities", "水电气暖", "供电、供水、供气、供暖、通信接入"),
    ("demolition", "征地拆迁", "征收、拆迁、管线迁改"),
    ("labour_talent", "用工与人才", "招工、人才引进、社保"),
    ("policy", "政策兑现", "扶持资金、补贴、税费减免"),
    ("market_access", "市场准入", "资质、许可证、市场拓展"),
    ("other", "其他", "其他问题与诉求"),
)

_NAMESPACE = uuid.UUID("5b0f3a52-8d0e-4f7e-9a55-0c1b8c6f2d11")


@dataclass(frozen=True, slots=True)
class Enterprise:
    id: str
    name: str
    district_id: str
    service_unit_id: str
    address: str
    contact: dict[str, Any] | None
    version: int


@dataclass(frozen=True, slots=True)
class SubmissionRefs:
    """What a submission looks up, read in one round trip (`Directory.for_submission`)."""

    enterprise: Enterprise | None
    category_active: bool | None  # None: no such category
    units: dict[str, UnitRef]  # the city command room, the enterprise district's room, the reporter


def _prefixed(table: sa.Table, prefix: str) -> list[sa.Label[Any]]:
    return [c.label(f"{prefix}{c.name}") for c in table.c]


def _submission_query(*, keyed: bool = False) -> sa.Select[Any]:
    """One statement for the submission hot path (built once, so compiled once): the enterprise,
    the category and the units routing needs, joined to a one-row anchor so that a missing
    enterprise or category still returns a row. `keyed`: the caller's API key too (columns
    `k_…`, read by its hash among the keys not revoked, like `authenticate`), and the reporter
    unit defaults to a handler key's own unit, as `ProblemService.submit` does."""
    anchor: Any = sa.select(sa.literal(1).label("one")).subquery("anchor")
    reporter: Any = sa.bindparam("reporter", type_=sa.String)
    keys: list[sa.Label[Any]] = []
    if keyed:
        anchor = anchor.outerjoin(
            api_keys,
            sa.and_(
                api_keys.c.key_hash == sa.bindparam("digest", type_=sa.String),
                api_keys.c.revoked_at.is_(None),
            ),
        )
        handler_unit = sa.case((api_keys.c.role == Role.handler.value, api_keys.c.unit_id))
        reporter = sa.func.coalesce(reporter, handler_unit)
        keys = _prefixed(api_keys, "k_")
    joined = (
        anchor.outerjoin(enterprises, enterprises.c.id == sa.bindparam("enterprise_id", type_=sa.String))
        .outerjoin(categories, categories.c.code == sa.bindparam("category", type_=sa.String))
        .outerjoin(
            units,
            sa.or_(
                units.c.kind == UnitKind.city_command_room.value,
                sa.and_(
                    units.c.kind == UnitKind.district_dispatch_room.value,
                    units.c.district_id == enterprises.c.district_id,
                ),
                units.c.id == reporter,
            ),
        )
    )
    return sa.select(
        *keys,
        *_prefixed(enterprises, "e_"),
        categories.c.code.label("c_code"),
        categories.c.active.label("c_active"),
        *_prefixed(units, "u_"),
    ).select_from(joined)


_SUBMISSION_QUERY = _submission_query()
_KEYED_SUBMISSION_QUERY = _submission_query(keyed=True)

# `units_with_rooms` on PostgreSQL: arrays instead of IN lists keep one statement for any count.
_ROUTING_UNITS = sa.select(units).where(
    sa.or_(
        units.c.kind == UnitKind.city_command_room.value,
        units.c.id == sa.any_(sa.bindparam("ids", type_=postgresql.ARRAY(sa.String))),
        sa.and_(
            units.c.kind == UnitKind.district_dispatch_room.value,
            units.c.district_id == sa.any_(sa.bindparam("districts", type_=postgresql.ARRAY(sa.String))),
        ),
    )
)


def _unprefixed(row: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    return {short: row[name] for name, short in _short_names(tuple(row.keys()), prefix)}


@functools.cache
def _short_names(names: tuple[str, ...], prefix: str) -> tuple[tuple[str, str], ...]:
    """The names of a query's columns that start with `prefix`, each with the prefix taken off
    (worked out once per query and prefix: the submission's query reads a row per unit)."""
    return tuple((name, name[len(prefix) :]) for name in names if name.startswith(prefix))


def unit_from_row(row: Any) -> UnitRef:
    return UnitRef(
        id=row.id,
        name=row.name,
        kind=UnitKind(row.kind),
        district_id=row.district_id,
        parent_id=row.parent_id,
        path=row.path,
        active=row.active,
    )


def enterprise_from_row(row: Any) -> Enterprise:
    return Enterprise(
        id=row.id,
        name=row.name,
        district_id=row.district_id,
        service_unit_id=row.service_unit_id,
        address=row.address,
        contact=row.contact,
        version=row.version,
    )


def _refs(rows: Sequence[Mapping[str, Any]]) -> SubmissionRefs:
    """`SubmissionRefs` from the rows of a submission query (at least one: the anchor's)."""
    first = rows[0]
    enterprise = (
        enterprise_from_row(SimpleNamespace(**_unprefixed(first, "e_")))
        if first["e_id"] is not None
        else None
    )
    found = {
        r["u_id"]: unit_from_row(SimpleNamespace(**_unprefixed(r, "u_")))
        for r in rows
        if r["u_id"] is not None
    }
    active = first["c_active"] if first["c_code"] is not None else None
    return SubmissionRefs(enterprise, active, found)


class Directory:
    def __init__(self, db: Database, store: EventStore, clock: Clock) -> None:
        self.db = db
        self.store = store
        self.clock = clock

    # -- reading ---------------------------------------------------------------------------

    async def units_by_id(
        self, ids: Iterable[str], conn: AsyncConnection | None = None
    ) -> dict[str, UnitRef]:
        wanted = sorted(set(ids))
        if not wanted:
            return {}
        stmt = sa.select(units).where(units.c.id.in_(wanted))
        rows = await self._all(stmt, conn)
        return {r.id: unit_from_row(r) for r in rows}

    async def unit(self, unit_id: str, conn: AsyncConnection | None = None) -> UnitRef | None:
        return (await self.units_by_id([unit_id], conn)).get(unit_id)

    async def units_for_routing(
        self, district_id: str | None, ids: Iterable[str], conn: AsyncConnection | None = None
    ) -> dict[str, UnitRef]:
        """The units a routing decision may need in one query: the given ids, the city command
        room, and the dispatch room of `district_id`."""
        return await self.units_with_rooms([district_id] if district_id else [], ids, conn)

    async def units_with_rooms(
        self, district_ids: Iterable[str], ids: Iterable[str], conn: AsyncConnection | None = None
    ) -> dict[str, UnitRef]:
        """The given units, the city command room and the districts' dispatch rooms, in one query."""
        wanted, districts = sorted(set(ids)), sorted(set(district_ids))
        if conn is None and self.db.is_postgres:  # the command path: one statement shape, on the driver
            found = await self.db.fetch(_ROUTING_UNITS, {"ids": wanted, "districts": districts})
            return {r["id"]: unit_from_row(SimpleNamespace(**r)) for r in found}
        cond = sa.or_(
            units.c.kind == UnitKind.city_command_room.value,
            units.c.id.in_(wanted) if wanted else sa.false(),
            sa.and_(
                units.c.kind == UnitKind.district_dispatch_room.value,
                units.c.district_id.in_(districts),
            )
            if districts
            else sa.false(),
        )
        rows = await self._all(sa.select(units).where(cond), conn)
        return {r.id: unit_from_row(r) for r in rows}

    async def subtree(self, unit_id: str, conn: AsyncConnection | None = None) -> frozenset[str]:
        """The unit and every unit below it."""
        unit = await self.unit(unit_id, conn)
        if unit is None:
            return frozenset()
        stmt = sa.select(units.c.id).where(
            sa.or_(units.c.id == unit_id, units.c.path.startswith(unit.path + "/", autoescape=True))
        )
        return frozenset(r.id for r in await self._all(stmt, conn))

    async def enterprise(self, enterprise_id: str, conn: AsyncConnection | None = None) -> Enterprise | None:
        rows = await self._all(sa.select(enterprises).where(enterprises.c.id == enterprise_id), conn)
        return enterprise_from_row(rows[0]) if rows else None

    async def for_submission(
        self, enterprise_id: str, category: str, reporter_unit_id: str | None
    ) -> SubmissionRefs:
        """The enterprise, whether the category exists and is active, and the units a new
        problem's routing needs (plus the reporter unit), in one round trip."""
        params = {"enterprise_id": enterprise_id, "category": category, "reporter": reporter_unit_id}
        return _refs(await self.db.fetch(_SUBMISSION_QUERY, params))

    async def for_keyed_submission(
        self, digest: str, enterprise_id: str, category: str, reporter_unit_id: str | None
    ) -> tuple[Mapping[str, Any] | None, SubmissionRefs]:
        """The API key whose hash is `digest` (its row, None if unknown or revoked) and what
        `for_submission` reads, in one round trip; the reporter unit, when not given, is a
        handler key's own unit (what `ProblemService.submit` looks up for such a caller)."""
        params = {
            "digest": digest,
            "enterprise_id": enterprise_id,
            "category": category,
            "reporter": reporter_unit_id,
        }
        rows = await self.db.fetch(_KEYED_SUBMISSION_QUERY, params)
        key = _unprefixed(rows[0], "k_")
        return (key if key["id"] is not None else None), _refs(rows)

    async def category_codes(self) -> set[str]:
        return {r.code for r in await self._all(sa.select(categories.c.code), None)}

    async def category(self, code: str, conn: AsyncConnection | None = None) -> Any | None:
        rows = await self._all(sa.select(categories).where(categories.c.code == code), conn)
        return rows[0] if rows else None

    async def _all(self, stmt: sa.Select[Any], conn: AsyncConnection | None) -> Sequence[Any]:
        if conn is not None:
            return list((await conn.execute(stmt)).all())
        async with self.db.read() as own:
            return list((await own.execute(stmt)).all())

    # -- units -----------------------------------------------------------------------------

    async def create_unit(self, caller: Caller, body: UnitIn, meta: RequestMeta | None = None) -> Any:
        parent = await self.unit(body.parent_id) if body.parent_id else None
        if body.parent_id and parent is None:
            raise AppError("unknown_unit", f"parent unit {body.parent_id} does not exist")
        district_id = _check_unit_placement(body, parent)
        now = self.clock.now()
        path = f"{parent.path}/{body.id}" if parent else body.id
        if len(path) > 1000:
            raise AppError("invalid_unit", "the unit tree is too deep")
        row = {
            "id": body.id,
            "name": body.name,
            "kind": body.kind.value,
            "tier": TIER_OF_KIND[body.kind].value,
            "parent_id": body.parent_id,
            "district_id": district_id,
            "path": path,
            "active": True,
            "created_at": now,
            "updated_at": now,
            "version": 1,
        }
        data = {k: row[k] for k in ("id", "name", "kind", "parent_id", "district_id")}
        event = NewEvent(UNIT_CREATED, data, metadata=event_metadata(caller, meta))
        try:
            await self.store.append(f"unit-{body.id}", 0, [event], also=[sa.insert(units).values(row)])
        except ConcurrencyConflict:
            raise AppError("unit_exists", f"unit {body.id} exists") from None
        except sa.exc.IntegrityError:
            raise AppError(
                "invalid_unit",
                "the district already has a dispatch room"
                if body.kind is UnitKind.district_dispatch_room
                else "the city already has a command room",
            ) from None
        return await self.unit_row(body.id)

    async def update_unit(
        self, caller: Caller, unit_id: str, body: UnitPatch, meta: RequestMeta | None = None
    ) -> Any:
        changes = body.model_dump(exclude_unset=True, exclude_none=True)
        return await self._update(
            caller,
            meta,
            table=units,
            key=units.c.id,
            key_value=unit_id,
            stream=f"unit-{unit_id}",
            event_type=UNIT_UPDATED,
            changes=changes,
            what="unit",
        )

    async def unit_row(self, unit_id: str) -> Any:
        rows = await self._all(sa.select(units).where(units.c.id == unit_id), None)
        return rows[0] if rows else None

    # -- enterprises -----------------------------------------------------------------------

    async def _check_service_unit(self, unit_id: str, district_id: str) -> None:
        unit = await self.unit(unit_id)
        if (
            unit is None
            or not unit.active
            or unit.kind not in (UnitKind.service_group, UnitKind.service_team)
            or unit.district_id != district_id
        ):
            raise AppError(
                "invalid_service_unit",
                f"{unit_id} is not an active service group or team of district {district_id}",
            )

    async def register_enterprise(
        self, caller: Caller, body: EnterpriseIn, meta: RequestMeta | None = None
    ) -> Any:
        _require_district(caller, body.district_id)
        await self._check_service_unit(body.service_unit_id, body.district_id)
        now = self.clock.now()
        contact = body.contact.model_dump(exclude_none=True) if body.contact else None
        row = {
            "id": body.id,
            "name": body.name,
            "district_id": body.district_id,
            "service_unit_id": body.service_unit_id,
            "address": body.address,
            "contact": contact,
            "created_at": now,
            "updated_at": now,
            "version": 1,
        }
        data = {k: v for k, v in row.items() if k not in ("created_at", "updated_at", "version")}
        event = NewEvent(ENTERPRISE_REGISTERED, data, metadata=event_metadata(caller, meta))
        try:
            await self.store.append(
                f"enterprise-{body.id}", 0, [event], also=[sa.insert(enterprises).values(row)]
            )
        except ConcurrencyConflict:
            raise AppError("enterprise_exists", f"enterprise {body.id} is registered") from None
        return await self.enterprise_row(body.id)

    async def update_enterprise(
        self,
        caller: Caller,
        enterprise_id: str,
        body: EnterprisePatch,
        meta: RequestMeta | None = None,
    ) -> Any:
        current = await self.enterprise(enterprise_id)
        if current is None or not _sees_district(caller, current.district_id):
            raise AppError("not_found", f"enterprise {enterprise_id} does not exist")
        changes = body.model_dump(exclude_unset=True, exclude_none=True)
        if "service_unit_id" in changes:
            await self._check_service_unit(changes["service_unit_id"], current.district_id)
        return await self._update(
            caller,
            meta,
            table=enterprises,
            key=enterprises.c.id,
            key_value=enterprise_id,
            stream=f"enterprise-{enterprise_id}",
            event_type=ENTERPRISE_UPDATED,
            changes=changes,
            what="enterprise",
        )

    async def enterprise_row(self, enterprise_id: str) -> Any:
        rows = await self._all(sa.select(enterprises).where(enterprises.c.id == enterprise_id), None)
        return rows[0] if rows else None

    # -- categories ------------------------------------------------------------------------

    async def create_category(
        self,
        caller: Caller,
        body: CategoryIn,
        meta: RequestMeta | None = None,
        *,
        event_id: uuid.UUID | None = None,
    ) -> Any:
        now = self.clock.now()
        row = {
            "code": body.code,
            "name": body.name,
            "description": body.description or "",
            "active": True,
            "created_at": now,
            "updated_at": now,
            "version": 1,
        }
        data = {"code": body.code, "name": body.name, "description": row["description"]}
        event = NewEvent(
            CATEGORY_CREATED, data, event_id=event_id or uuid.uuid4(), metadata=event_metadata(caller, meta)
        )
        try:
            await self.store.append(
                f"category-{body.code}", 0, [event], also=[sa.insert(categories).values(row)]
            )
        except ConcurrencyConflict:
            raise AppError("category_exists", f"category {body.code} exists") from None
        rows = await self._all(sa.select(categories).where(categories.c.code == body.code), None)
        return rows[0]

    async def update_category(
        self, caller: Caller, code: str, body: CategoryPatch, meta: RequestMeta | None = None
    ) -> Any:
        changes = body.model_dump(exclude_unset=True, exclude_none=True)
        return await self._update(
            caller,
            meta,
            table=categories,
            key=categories.c.code,
            key_value=code,
            stream=f"category-{code}",
            event_type=CATEGORY_UPDATED,
            changes=changes,
            what="category",
        )

    async def ensure_default_categories(self) -> int:
        """Create the default categories that are missing; safe to run from several processes
        at once (deterministic event ids make a repeated creation an idempotent no-op)."""
        created = 0
        async with self.db.read() as conn:
            existing = set((await conn.execute(sa.select(categories.c.code))).scalars().all())
        for code, name, description in DEFAULT_CATEGORIES:
            if code in existing:
                continue
            try:
                await self.create_category(
                    SYSTEM,
                    CategoryIn(code=code, name=name, description=description),
                    event_id=uuid.uuid5(_NAMESPACE, f"category:{code}"),
                )
                created += 1
            except AppError as exc:
                if exc.code != "category_exists":
                    raise
        return created

    # -- shared ----------------------------------------------------------------------------

    async def _update(
        self,
        caller: Caller,
        meta: RequestMeta | None,
        *,
        table: sa.Table,
        key: sa.Column[Any],
        key_value: str,
        stream: str,
        event_type: str,
        changes: dict[str, Any],
        what: str,
    ) -> Any:
        for _attempt in range(5):
            rows = await self._all(sa.select(table).where(key == key_value), None)
            if not rows:
                raise AppError("not_found", f"{what} {key_value} does not exist")
            current = rows[0]
            if not changes:
                return current
            now = self.clock.now()
            version = current.version + 1
            event = NewEvent(
                event_type,
                {str(key.name): key_value, **changes},
                metadata=event_metadata(caller, meta),
            )
            stmt = sa.update(table).where(key == key_value).values(**changes, updated_at=now, version=version)
            try:
                await self.store.append(stream, current.version, [event], also=[stmt])
            except ConcurrencyConflict:
                continue
            return (await self._all(sa.select(table).where(key == key_value), None))[0]
        raise AppError("contention", f"{what} {key_value} kept changing; try again")


def _check_unit_placement(body: UnitIn, parent: UnitRef | None) -> str | None:
    """Validate where a new unit hangs in the tree; returns its district."""
    allowed = PARENT_KINDS[body.kind]
    if parent is None:
        if None not in allowed:
            raise AppError("invalid_unit", f"a {body.kind.value} needs a parent_id")
        if body.district_id:
            raise AppError("invalid_unit", "the city command room has no district")
        return None
    if parent.kind not in allowed:
        kinds = ", ".join(k.value for k in allowed if k)
        raise AppError(
            "invalid_unit",
            f"a {body.kind.value} must hang under a {kinds}, not a {parent.kind.value}",
        )
    if not parent.active:
        raise AppError("invalid_unit", f"parent unit {parent.id} is inactive")
    if body.kind is UnitKind.district_dispatch_room:
        if not body.district_id:
            raise AppError("invalid_unit", "a district_dispatch_room gives its district_id")
        return body.district_id
    if body.district_id and body.district_id != parent.district_id:
        raise AppError(
            "invalid_unit",
            f"units below a district room inherit its district ({parent.district_id})",
        )
    return parent.district_id


def _sees_district(caller: Caller, district_id: str) -> bool:
    if caller.role in (Role.admin, Role.commander):
        return True
    if caller.role is Role.viewer and caller.district_id is None:
        return True
    if caller.role in (Role.dispatcher, Role.handler, Role.viewer):
        return caller.district_id == district_id
    return False


def _require_district(caller: Caller, district_id: str) -> None:
    if caller.role is Role.admin or caller.is_system:
        return
    if caller.role is Role.dispatcher and caller.district_id == district_id:
        return
    raise AppError("forbidden", "only an admin, or the district's dispatcher, registers enterprises")
