"""Board tokens: issued for a district or the city, exchanged for an HttpOnly SameSite=Strict
cookie, refused by the API, revoked at once; who may issue and revoke them."""

from __future__ import annotations

from typing import Any

import httpx

from app.main import Services
from tests.board.conftest import History, figures
from tests.conftest import ADMIN_KEY
from tests.factories import D1, D2, auth, make_key

ORIGIN = {"Origin": "http://testserver"}


def browser(app: Any) -> httpx.AsyncClient:
    """A client without an API key: what a wall screen's browser is."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


async def issue(client: httpx.AsyncClient, key: str = ADMIN_KEY, **body: Any) -> httpx.Response:
    return await client.post("/v1/board/tokens", json={"name": "大屏", **body}, headers=auth(key))


async def test_a_board_link_opens_the_board_of_its_district_until_revoked(
    app: Any, client: httpx.AsyncClient, history: History
) -> None:
    created = await issue(client, district_id=D1)
    assert created.status_code == 201, created.text
    token, token_id = created.json()["token"], created.json()["id"]
    assert created.json()["link"] == f"http://testserver/board/open#token={token}"  # in the fragment
    assert token_id.startswith("board_") and created.json()["district_id"] == D1

    # The API refuses a board token: it opens the board only.
    assert (await client.get("/v1/me", headers=auth(token))).status_code == 401
    assert (await client.get("/v1/problems", headers=auth(token))).status_code == 401

    async with browser(app) as screen:
        # Without the cookie, the board sends the screen to the page that opens it.
        first = await screen.get("/board")
        assert first.status_code == 303 and first.headers["location"] == "/board/open"
        assert (await screen.get("/board/panels/headline")).status_code == 401

        cross_site = await screen.post(
            "/board/session", json={"token": token}, headers={"Origin": "https://evil.example"}
        )
        assert cross_site.status_code == 403 and "set-cookie" not in cross_site.headers

        opened = await screen.post("/board/session", json={"token": token}, headers=ORIGIN)
        assert opened.status_code == 204, opened.text
        cookie = opened.headers["set-cookie"]
        assert cookie.startswith("dr_board=")
        for attribute in ("HttpOnly", "SameSite=strict", "Path=/board", "Max-Age="):
            assert attribute in cookie, cookie
        assert opened.headers["referrer-policy"] == "no-referrer"

        page = await screen.get("/board", params={"period": "2026-11"})
        assert page.status_code == 200
        dispatcher = await make_key(client, "dispatcher", district_id=D1)
        theirs = await client.get("/board", params={"period": "2026-11"}, headers=auth(dispatcher))
        assert figures(page.text) == figures(theirs.text)  # exactly the district room's figures
        assert (await screen.get("/board", params={"district": D2})).status_code == 403

        # Revoked: refused at the next request, and it cannot open a new session.
        revoked = await client.delete(f"/v1/board/tokens/{token_id}")
        assert revoked.status_code == 200 and revoked.json()["revoked_at"]
        again = await screen.get("/board")
        assert again.status_code == 401 and again.json()["code"] == "unauthorized"
        refused = await screen.post("/board/session", json={"token": token}, headers=ORIGIN)
        assert refused.status_code == 401 and "set-cookie" not in refused.headers


async def test_the_form_and_the_keys_that_may_open_a_board(
    app: Any, client: httpx.AsyncClient, history: History
) -> None:
    viewer = await make_key(client, "viewer")
    handler = await make_key(client, "handler", unit_id=history.city.groups[D1][0])
    portal = await make_key(client, "portal")
    async with browser(app) as screen:
        form = await screen.post("/board/session", data={"token": viewer}, headers=ORIGIN)
        assert form.status_code == 303 and form.headers["location"] == "/board"
        assert (await screen.get("/board")).status_code == 200
        for key in (handler, portal):
            response = await screen.post("/board/session", json={"token": key}, headers=ORIGIN)
            assert response.status_code == 403 and response.json()["code"] == "forbidden"
        for body in ("{}", "not json", '{"token": 7}'):
            bad = await screen.post(
                "/board/session", content=body, headers={**ORIGIN, "Content-Type": "application/json"}
            )
            assert bad.status_code in (400, 401), body
            assert bad.headers["content-type"] == "application/problem+json"
        out = await screen.post("/board/logout", headers=ORIGIN)
        assert out.status_code == 303 and 'dr_board=""' in out.headers["set-cookie"]


async def test_who_issues_and_revokes_board_tokens(
    client: httpx.AsyncClient, services: Services, history: History
) -> None:
    dispatcher = await make_key(client, "dispatcher", district_id=D1)
    commander = await make_key(client, "commander")
    viewer = await make_key(client, "viewer")

    own = await issue(client, dispatcher)
    assert own.status_code == 201 and own.json()["district_id"] == D1  # always its own district
    assert (await issue(client, dispatcher, district_id=D2)).status_code == 403
    assert (await issue(client, viewer)).status_code == 403
    assert (await issue(client, commander, district_id="999999")).status_code == 404
    city = await issue(client, commander)
    assert city.status_code == 201 and city.json()["district_id"] is None
    other = await issue(client, commander, district_id=D2)

    listed = await client.get("/v1/board/tokens", headers=auth(dispatcher))
    assert [t["id"] for t in listed.json()] == [own.json()["id"]]
    assert "token" not in listed.json()[0]
    everyone = await client.get("/v1/board/tokens", headers=auth(commander))
    assert len(everyone.json()) == 3
    assert (
        await client.delete(f"/v1/board/tokens/{other.json()['id']}", headers=auth(dispatcher))
    ).status_code == 404
    me = await client.get("/v1/me")
    not_a_board_token = await client.delete(f"/v1/board/tokens/{me.json()['id']}")
    assert not_a_board_token.status_code == 404
    done = await client.delete(f"/v1/board/tokens/{own.json()['id']}", headers=auth(dispatcher))
    assert done.status_code == 200 and done.json()["revoked_at"]
    # Every change is an event, like every key's.
    events = await services.store.read_stream(f"api-key-{own.json()['id']}")
    assert [e.type for e in events] == ["api_key.created", "api_key.revoked"]
