"""`/v1/units`, `/v1/enterprises`, `/v1/categories`."""

from __future__ import annotations

from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Query, Request, Response, status

from app.core.deps import AdminDep, CallerDep, DbDep, MetaDep, require_role
from app.core.errors import AppError, responses
from app.core.pagination import DEFAULT_LIMIT, MAX_LIMIT, Page, decode_cursor, next_page
from app.core.security import Caller, Role
from app.directory.schemas import (
    CategoryIn,
    CategoryOut,
    CategoryPatch,
    EnterpriseIn,
    EnterpriseOut,
    EnterprisePatch,
    UnitIn,
    UnitOut,
    UnitPatch,
)
from app.directory.service import Directory
from app.directory.tables import categories, enterprises, units
from app.routing.tree import UnitKind

router = APIRouter(prefix="/v1")

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Page size.")]
Cursor = Annotated[str | None, Query(max_length=500, description="`next_cursor` of the previous page.")]


async def get_directory(request: Request) -> Directory:
    directory: Directory = request.app.state.directory
    return directory


DirectoryDep = Annotated[Directory, Depends(get_directory)]
EnterpriseWriter = Annotated[Caller, Depends(require_role(Role.admin, Role.dispatcher))]


def _unit_out(row: Any) -> UnitOut:
    return UnitOut.model_validate(row, from_attributes=True)


def _enterprise_out(row: Any) -> EnterpriseOut:
    return EnterpriseOut.model_validate(row, from_attributes=True)


def _category_out(row: Any) -> CategoryOut:
    return CategoryOut.model_validate(row, from_attributes=True)


# -- units -----------------------------------------------------------------------------------


@router.get(
    "/units",
    tags=["units"],
    operation_id="list_units",
    summary="List units of the routing tree",
    response_model=Page[UnitOut],
    responses=responses(400, 401, 422),
)
async def list_units(
    db: DbDep,
    caller: CallerDep,
    kind: UnitKind | None = None,
    district_id: Annotated[str | None, Query(max_length=12)] = None,
    parent_id: Annotated[str | None, Query(max_length=64)] = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[UnitOut]:
    """Units ordered by their path in the tree (a depth-first listing). Any key may read the
    tree: handlers and portals need it to address units."""
    stmt = sa.select(units).order_by(units.c.path).limit(limit + 1)
    if kind:
        stmt = stmt.where(units.c.kind == kind.value)
    if district_id:
        stmt = stmt.where(units.c.district_id == district_id)
    if parent_id:
        stmt = stmt.where(units.c.parent_id == parent_id)
    after = decode_cursor(cursor, 1)
    if after:
        stmt = stmt.where(units.c.path > str(after[0]))
    async with db.read() as conn:
        rows = (await conn.execute(stmt)).all()
    page, next_cursor = next_page(rows, limit, lambda r: [r.path])
    return Page[UnitOut](items=[_unit_out(r) for r in page], next_cursor=next_cursor)


@router.post(
    "/units",
    tags=["units"],
    operation_id="create_unit",
    summary="Add a unit to the routing tree",
    status_code=status.HTTP_201_CREATED,
    response_model=UnitOut,
    responses=responses(401, 403, 409, 422),
)
async def create_unit(
    body: UnitIn, caller: AdminDep, meta: MetaDep, directory: DirectoryDep, response: Response
) -> UnitOut:
    """Admin only. The parent's kind must fit (a service group under a service team, a team or
    function group under a district dispatch room, a department or dispatch room under the
    city command room). One dispatch room per district, one command room per city."""
    row = await directory.create_unit(caller, body, meta)
    response.headers["Location"] = f"/v1/units/{row.id}"
    return _unit_out(row)


@router.get(
    "/units/{unit_id}",
    tags=["units"],
    operation_id="get_unit",
    summary="Get a unit",
    response_model=UnitOut,
    responses=responses(401, 404),
)
async def get_unit(unit_id: str, caller: CallerDep, directory: DirectoryDep) -> UnitOut:
    """One unit of the routing tree, with its kind, tier, district and path. Any key may read it."""
    row = await directory.unit_row(unit_id)
    if row is None:
        raise AppError("not_found", f"unit {unit_id} does not exist")
    return _unit_out(row)


@router.patch(
    "/units/{unit_id}",
    tags=["units"],
    operation_id="update_unit",
    summary="Rename or (de)activate a unit",
    response_model=UnitOut,
    responses=responses(401, 403, 404, 409, 422),
)
async def update_unit(
    unit_id: str, body: UnitPatch, caller: AdminDep, meta: MetaDep, directory: DirectoryDep
) -> UnitOut:
    """Admin only. Rename a unit or (de)activate it: inactive units receive no new assignments;
    what they hold stays with them."""
    return _unit_out(await directory.update_unit(caller, unit_id, body, meta))


# -- enterprises -----------------------------------------------------------------------------


def _enterprise_scope(caller: Caller) -> sa.ColumnElement[bool] | None:
    """Which enterprises a key may see: admins, commanders and unbound viewers all; district
    roles their district; portals none (they address enterprises by credit code only)."""
    if caller.role in (Role.admin, Role.commander):
        return None
    if caller.role is Role.viewer and caller.district_id is None:
        return None
    if caller.role in (Role.dispatcher, Role.handler, Role.viewer):
        return enterprises.c.district_id == caller.district_id
    return sa.false()


@router.get(
    "/enterprises",
    tags=["enterprises"],
    operation_id="list_enterprises",
    summary="List enterprises",
    response_model=Page[EnterpriseOut],
    responses=responses(400, 401, 422),
)
async def list_enterprises(
    db: DbDep,
    caller: CallerDep,
    district_id: Annotated[str | None, Query(max_length=12)] = None,
    service_unit_id: Annotated[str | None, Query(max_length=64)] = None,
    q: Annotated[str | None, Query(max_length=100, description="Part of the name.")] = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[EnterpriseOut]:
    """Enterprises in the caller's scope, ordered by credit code."""
    stmt = sa.select(enterprises).order_by(enterprises.c.id).limit(limit + 1)
    scope = _enterprise_scope(caller)
    if scope is not None:
        stmt = stmt.where(scope)
    if district_id:
        stmt = stmt.where(enterprises.c.district_id == district_id)
    if service_unit_id:
        stmt = stmt.where(enterprises.c.service_unit_id == service_unit_id)
    if q:
        stmt = stmt.where(enterprises.c.name.contains(q, autoescape=True))
    after = decode_cursor(cursor, 1)
    if after:
        stmt = stmt.where(enterprises.c.id > str(after[0]))
    async with db.read() as conn:
        rows = (await conn.execute(stmt)).all()
    page, next_cursor = next_page(rows, limit, lambda r: [r.id])
    return Page[EnterpriseOut](items=[_enterprise_out(r) for r in page], next_cursor=next_cursor)


@router.post(
    "/enterprises",
    tags=["enterprises"],
    operation_id="register_enterprise",
    summary="Register an enterprise",
    status_code=status.HTTP_201_CREATED,
    response_model=EnterpriseOut,
    responses=responses(401, 403, 409, 422),
)
async def register_enterprise(
    body: EnterpriseIn,
    caller: EnterpriseWriter,
    meta: MetaDep,
    directory: DirectoryDep,
    response: Response,
) -> EnterpriseOut:
    """Admins anywhere, dispatchers in their district. `id` is the unified social credit code;
    its check character is validated (GB 32100-2015). The service unit must be a service group
    or team of the same district."""
    row = await directory.register_enterprise(caller, body, meta)
    response.headers["Location"] = f"/v1/enterprises/{row.id}"
    return _enterprise_out(row)


@router.get(
    "/enterprises/{enterprise_id}",
    tags=["enterprises"],
    operation_id="get_enterprise",
    summary="Get an enterprise",
    response_model=EnterpriseOut,
    responses=responses(401, 404),
)
async def get_enterprise(enterprise_id: str, db: DbDep, caller: CallerDep) -> EnterpriseOut:
    """One enterprise by its credit code, if it is in the caller's scope (else 404)."""
    stmt = sa.select(enterprises).where(enterprises.c.id == enterprise_id.upper())
    scope = _enterprise_scope(caller)
    if scope is not None:
        stmt = stmt.where(scope)
    async with db.read() as conn:
        row = (await conn.execute(stmt)).first()
    if row is None:
        raise AppError("not_found", f"enterprise {enterprise_id} does not exist")
    return _enterprise_out(row)


@router.patch(
    "/enterprises/{enterprise_id}",
    tags=["enterprises"],
    operation_id="update_enterprise",
    summary="Change an enterprise's record",
    response_model=EnterpriseOut,
    responses=responses(401, 403, 404, 409, 422),
)
async def update_enterprise(
    enterprise_id: str,
    body: EnterprisePatch,
    caller: EnterpriseWriter,
    meta: MetaDep,
    directory: DirectoryDep,
) -> EnterpriseOut:
    """Admins anywhere, dispatchers in their district: the name, the covering service unit, the
    address or the contact. The credit code never changes."""
    return _enterprise_out(await directory.update_enterprise(caller, enterprise_id.upper(), body, meta))


# -- categories ------------------------------------------------------------------------------


@router.get(
    "/categories",
    tags=["categories"],
    operation_id="list_categories",
    summary="List problem categories",
    response_model=list[CategoryOut],
    responses=responses(401),
)
async def list_categories(db: DbDep, caller: CallerDep) -> list[CategoryOut]:
    """All categories, active and inactive (inactive ones accept no new problems)."""
    async with db.read() as conn:
        rows = (await conn.execute(sa.select(categories).order_by(categories.c.code))).all()
    return [_category_out(r) for r in rows]


@router.post(
    "/categories",
    tags=["categories"],
    operation_id="create_category",
    summary="Add a problem category",
    status_code=status.HTTP_201_CREATED,
    response_model=CategoryOut,
    responses=responses(401, 403, 409, 422),
)
async def create_category(
    body: CategoryIn, caller: AdminDep, meta: MetaDep, directory: DirectoryDep, response: Response
) -> CategoryOut:
    """Admin only. The code is the Open311 `service_code` too."""
    row = await directory.create_category(caller, body, meta)
    response.headers["Location"] = f"/v1/categories/{row.code}"
    return _category_out(row)


@router.patch(
    "/categories/{code}",
    tags=["categories"],
    operation_id="update_category",
    summary="Rename or (de)activate a category",
    response_model=CategoryOut,
    responses=responses(401, 403, 404, 409, 422),
)
async def update_category(
    code: str, body: CategoryPatch, caller: AdminDep, meta: MetaDep, directory: DirectoryDep
) -> CategoryOut:
    """Admin only. Rename a category or (de)activate it (inactive: no new problems, and it
    leaves the Open311 service list)."""
    return _category_out(await directory.update_category(caller, code, body, meta))
