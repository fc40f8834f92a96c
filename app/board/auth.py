"""Who is looking at the board: a board token or a viewer's, dispatcher's, commander's or
admin's key, presented as the board's cookie (a browser) or `Authorization: Bearer` (scripts,
tests). The link's token becomes the cookie once (`exchange`): HttpOnly (no script reads it),
SameSite=Strict (no other site's page sends it), Path=/board (the API never sees it), Secure
over HTTPS. The key is looked up at every request, so revoking it takes effect at once.

`scoped` narrows a caller to one district (`?district=`): the narrowed caller is a district
viewer, so every figure the services compute for it has exactly a district room's scope.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from fastapi import Request, Response

from app.core.errors import AppError
from app.core.security import Caller, Role, authenticate

COOKIE = "dr_board"
COOKIE_PATH = "/board"
COOKIE_MAX_AGE = 90 * 24 * 3600  # a wall screen runs for months; revocation is server-side
BOARD_ROLES = (Role.viewer, Role.dispatcher, Role.commander, Role.admin)


def presented(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.cookies.get(COOKIE) or None


async def board_caller(request: Request, token: str | None = None) -> Caller:
    """The caller of a board request (401 without a valid key, 403 for roles without a board)."""
    token = token if token is not None else presented(request)
    if not token:
        raise AppError("unauthorized", "open the board with its link, or send a key")
    if len(token) > 200:
        raise AppError("unauthorized", "the key is unknown or revoked")
    caller = await authenticate(request.app.state.db, token, board=True)
    if caller is None:
        raise AppError("unauthorized", "the key is unknown or revoked")
    if caller.role not in BOARD_ROLES:
        raise AppError("forbidden", "the board is for viewer, dispatcher, commander and admin keys")
    request.state.caller = caller
    return caller


def scoped(caller: Caller, district: str | None) -> Caller:
    """The caller narrowed to `district` (None: as it is). A key bound to a district may ask
    only for its own."""
    if district is None or district == caller.district_id:
        return caller
    if caller.district_id is not None:
        raise AppError("forbidden", f"this key shows district {caller.district_id} only")
    return Caller(key_id=caller.key_id, name=caller.name, role=Role.viewer, district_id=district)


def same_origin(request: Request) -> bool:
    """A state-changing board request must come from the board's own pages (when the browser
    says where it comes from at all)."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == request.headers.get("host", "")


def set_cookie(request: Request, response: Response, token: str, secure: bool) -> None:
    response.set_cookie(
        COOKIE,
        token,
        max_age=COOKIE_MAX_AGE,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=secure or request.url.scheme == "https",
    )


def clear_cookie(request: Request, response: Response) -> None:
    response.delete_cookie(
        COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict", secure=request.url.scheme == "https"
    )
