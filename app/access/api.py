"""`/v1/api-keys` and `/v1/me`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict

from app.access.service import KeyCreated, KeyIn, KeyOut, Keys, key_out
from app.core.deps import AdminDep, CallerDep, MetaDep
from app.core.errors import responses
from app.core.security import Role

router = APIRouter(prefix="/v1", tags=["api keys"])


async def get_keys(request: Request) -> Keys:
    keys: Keys = request.app.state.keys
    return keys


KeysDep = Annotated[Keys, Depends(get_keys)]


class Me(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "id": "key_5e0c2b7f1a9d3e44",
                "name": "政务服务网",
                "role": "portal",
                "unit_id": None,
                "district_id": None,
                "source": "zwfw",
                "permissions": [],
            }
        }
    )

    id: str
    name: str
    role: Role | None
    unit_id: str | None
    district_id: str | None
    source: str | None
    permissions: list[str]


@router.get("/me", operation_id="get_me", summary="Who am I", response_model=Me, responses=responses(401))
async def get_me(caller: CallerDep) -> Me:
    """The identity and scope of the key making the request."""
    return Me(
        id=caller.key_id,
        name=caller.name,
        role=caller.role,
        unit_id=caller.unit_id,
        district_id=caller.district_id,
        source=caller.source,
        permissions=sorted(caller.permissions | ({"import"} if caller.can_import else set())),
    )


@router.get(
    "/api-keys",
    operation_id="list_api_keys",
    summary="List API keys",
    response_model=list[KeyOut],
    responses=responses(401, 403),
)
async def list_api_keys(
    caller: AdminDep,
    keys: KeysDep,
    include_revoked: Annotated[bool, Query()] = False,
) -> list[KeyOut]:
    """Admin only. Keys are listed without their value (only a hint)."""
    return [key_out(r) for r in await keys.list(include_revoked=include_revoked)]


@router.post(
    "/api-keys",
    operation_id="create_api_key",
    summary="Issue an API key",
    status_code=status.HTTP_201_CREATED,
    response_model=KeyCreated,
    responses=responses(401, 403, 409, 422),
)
async def create_api_key(
    body: KeyIn, caller: AdminDep, meta: MetaDep, keys: KeysDep, response: Response
) -> KeyCreated:
    """Admin only. The response carries the key once; only its SHA-256 hash is stored.

    Scope by role: `handler` needs `unit_id`; `dispatcher` needs `district_id` (or the
    `unit_id` of its district dispatch room); `portal` may name its `source` (default: the key
    id); `viewer` may be limited to a `district_id`; `commander` and `admin` see everything."""
    row, key = await keys.create(caller, body, meta)
    response.headers["Location"] = f"/v1/api-keys/{row.id}"
    return KeyCreated(**key_out(row).model_dump(), key=key)


@router.get(
    "/api-keys/{key_id}",
    operation_id="get_api_key",
    summary="Get an API key",
    response_model=KeyOut,
    responses=responses(401, 403, 404),
)
async def get_api_key(key_id: str, caller: AdminDep, keys: KeysDep) -> KeyOut:
    """Admin only. One key's name, role and scope (never its value)."""
    return key_out(await keys.get(key_id))


@router.delete(
    "/api-keys/{key_id}",
    operation_id="revoke_api_key",
    summary="Revoke an API key",
    response_model=KeyOut,
    responses=responses(401, 403, 404),
)
async def revoke_api_key(key_id: str, caller: AdminDep, meta: MetaDep, keys: KeysDep) -> KeyOut:
    """Admin only. Takes effect on the next request made with the key."""
    return key_out(await keys.revoke(caller, key_id, meta))
