"""Board tokens: a link for a wall screen (`/board/open#token=…`).

A board token is an API key (the `api_keys` read model, every change an event) with the role
`viewer`, optionally one district, and the permission `board`, which limits it to the board's
pages: the API refuses it (`app.core.security.authenticate`). It is read-only (a viewer), scoped
(a district's room sees its district), revocable (a revoked token stops working at the next
request, open screens included) and never travels where logs and `Referer` keep it: the link
carries it in the URL fragment, which browsers do not send, and the board exchanges it for an
HttpOnly, SameSite=Strict cookie (`app.board.auth`).

Admins and commanders issue tokens for any district or the whole city; a district's dispatcher
for its own district only.
"""

from datetime import datetime
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field

from app.access.service import KeyIn, Keys
from app.core.deps import MetaDep, require_role
from app.core.errors import AppError, responses
from app.core.security import Caller, Permission, Role
from app.core.types import DistrictId, Name
from app.directory.tables import units
from app.routing.tree import UnitKind

router = APIRouter(prefix="/v1/board", tags=["board"])

TOKEN_PREFIX = "board_"  # noqa: S105 (the prefix of the id, not a secret)
ISSUERS = (Role.admin, Role.commander, Role.dispatcher)
IssuerDep = Annotated[Caller, Depends(require_role(*ISSUERS))]


class BoardTokenIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"example": {"name": "南关区调度室大屏", "district_id": "220102"}},
    )

    name: Name
    district_id: DistrictId | None = Field(
        None,
        description="The district the screen shows (a dispatcher's token: always its own). "
        "Omitted: the whole city.",
    )


class BoardTokenOut(BaseModel):
    id: str
    name: str
    district_id: str | None
    key_hint: str
    created_at: datetime
    created_by: str | None
    revoked_at: datetime | None


class BoardTokenCreated(BoardTokenOut):
    token: str = Field(description="The token itself. Shown once.")
    link: str = Field(
        description="Open this on the wall screen: the token travels in the URL fragment, which "
        "the browser never sends to a server; the board exchanges it for a cookie."
    )


def is_board_token(row: Any) -> bool:
    return Permission.board.value in (row.permissions or ())


def token_out(row: Any) -> BoardTokenOut:
    return BoardTokenOut.model_validate(row, from_attributes=True)


def get_keys(request: Request) -> Keys:
    keys: Keys = request.app.state.keys
    return keys


KeysDep = Annotated[Keys, Depends(get_keys)]


async def known_district(keys: Keys, district_id: str) -> bool:
    async with keys.db.read() as conn:
        found = await conn.execute(
            sa.select(units.c.id).where(
                units.c.kind == UnitKind.district_dispatch_room.value, units.c.district_id == district_id
            )
        )
        return found.first() is not None


def _visible(caller: Caller, row: Any) -> bool:
    return caller.role is not Role.dispatcher or row.district_id == caller.district_id


@router.post(
    "/tokens",
    operation_id="create_board_token",
    summary="Issue a board link for a wall screen",
    status_code=status.HTTP_201_CREATED,
    response_model=BoardTokenCreated,
    responses=responses(401, 403, 404, 422),
)
async def create_board_token(
    body: BoardTokenIn, caller: IssuerDep, meta: MetaDep, keys: KeysDep, request: Request, response: Response
) -> BoardTokenCreated:
    """A read-only token for the wall board (`/board`), scoped to a district or the whole city,
    and the link to open on the screen. Admins and commanders issue tokens for any district; a
    dispatcher for its own. The token opens the board's pages only: the API refuses it. Shown
    once; revoke it with `DELETE /v1/board/tokens/{id}`."""
    district = body.district_id
    if caller.role is Role.dispatcher:
        if district is not None and district != caller.district_id:
            raise AppError("forbidden", "a dispatcher issues board tokens for its own district")
        district = caller.district_id
    if district is not None and not await known_district(keys, district):
        raise AppError("not_found", f"district {district} has no dispatch room")
    row, token = await keys.create(
        caller,
        KeyIn(name=body.name, role=Role.viewer, district_id=district),
        meta,
        permissions=frozenset({Permission.board.value}),
        id_prefix=TOKEN_PREFIX,
    )
    response.headers["Location"] = f"/v1/board/tokens/{row.id}"
    link = str(request.base_url).rstrip("/") + f"/board/open#token={token}"
    return BoardTokenCreated(**token_out(row).model_dump(), token=token, link=link)


@router.get(
    "/tokens",
    operation_id="list_board_tokens",
    summary="List board tokens",
    response_model=list[BoardTokenOut],
    responses=responses(401, 403),
)
async def list_board_tokens(
    caller: IssuerDep, keys: KeysDep, include_revoked: bool = False
) -> list[BoardTokenOut]:
    """The board tokens the caller may manage (a dispatcher: its district's), without their value."""
    rows = await keys.list(include_revoked=include_revoked)
    return [token_out(r) for r in rows if is_board_token(r) and _visible(caller, r)]


@router.delete(
    "/tokens/{token_id}",
    operation_id="revoke_board_token",
    summary="Revoke a board token",
    response_model=BoardTokenOut,
    responses=responses(401, 403, 404),
)
async def revoke_board_token(token_id: str, caller: IssuerDep, meta: MetaDep, keys: KeysDep) -> BoardTokenOut:
    """The screen showing the board with this token loses it at its next request (its live
    stream ends within seconds)."""
    row = await keys.get(token_id)
    if not is_board_token(row) or not _visible(caller, row):
        raise AppError("not_found", f"board token {token_id} does not exist")
    return token_out(await keys.revoke(caller, token_id, meta))
