"""What lists show each role: the problem inside its scope, never the one outside (lists, the
ledger export, the feed, enterprises, webhooks, statistics), and Open311's public reads withhold
what the key does not cover. The same world as the authorisation matrix."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx

from app.main import Services
from tests.access.test_matrix import BOUND, KEYED, UNBOUND, World, build_world
from tests.factories import D1, D2, auth


def expected(role: str) -> dict[str, bool]:
    """Whether `role` sees the problem inside and the one outside."""
    return {"inside": True, "outside": role in UNBOUND}


async def feed_problem_ids(client: httpx.AsyncClient, key: str, world: World) -> set[str]:
    """The problems of the key's feed, once every event of the set-up has a position."""
    deadline = time.monotonic() + 15
    while True:
        page = (await client.get("/v1/events", params={"after": 0, "limit": 1000}, headers=auth(key))).json()
        admin = (
            await client.get("/v1/events", params={"after": 0, "limit": 1}, headers=auth(world.keys["admin"]))
        ).json()
        if page["last_position"] >= admin["head"] > 0 or time.monotonic() > deadline:
            return {e["problem_id"] for e in page["items"] if e["problem_id"]}
        await asyncio.sleep(0.05)


async def test_lists_show_the_scope_and_nothing_else(app: Any, services: Services) -> None:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        world = await build_world(client, services)
        ids = world.problems
        for role in KEYED:
            key = world.keys[role]
            sees = expected(role)
            listed = {p["id"] for p in (await client.get("/v1/problems", headers=auth(key))).json()["items"]}
            export = (
                await client.get("/v1/problems/export", params={"format": "csv"}, headers=auth(key))
            ).text
            feed = await feed_problem_ids(client, key, world)
            for scope, pid in ids.items():
                assert (pid in listed) is sees[scope], (role, scope, "list")
                assert (pid in feed) is sees[scope], (role, scope, "feed")
                # the export names problems by their 台账编号 or id
                assert (pid in export) is sees[scope], (role, scope, "export")

            # enterprises: district roles their district's, portals none
            enterprises = {
                e["district_id"]
                for e in (await client.get("/v1/enterprises", headers=auth(key))).json()["items"]
            }
            assert enterprises == (
                {D1} if role in BOUND - {"portal"} else set() if role == "portal" else {D1, D2}
            )

            # statistics count what the key sees (the temporal model follows the log)
            for _ in range(100):
                rates = (await client.get("/v1/stats/solve-rates", headers=auth(key))).json()
                if rates["total"]["received"] == sum(sees.values()):
                    break
                await asyncio.sleep(0.05)
            assert rates["total"]["received"] == sum(sees.values()), (role, rates["total"])

        # webhooks: managers see their district's or units' subscriptions; others may not list
        for role, visible in {
            "admin": {"inside", "outside"},
            "commander": {"inside", "outside"},
            "dispatcher": {"inside"},
            "handler": {"inside"},
        }.items():
            items = (await client.get("/v1/webhooks", headers=auth(world.keys[role]))).json()["items"]
            assert {h["id"] for h in items} == {world.webhooks[s] for s in visible}, role
            assert all("secret" not in h for h in items)
        for role in ("portal", "viewer", "district_viewer"):
            assert (await client.get("/v1/webhooks", headers=auth(world.keys[role]))).status_code == 403


async def test_open311_public_reads_withhold_what_the_key_does_not_cover(
    app: Any, services: Services
) -> None:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        world = await build_world(client, services)
        for role in ("anonymous", *KEYED):
            params = {"api_key": world.keys[role]} if role in world.keys else {}
            items = (await client.get("/open311/v2/requests.json", params=params)).json()
            shown = {i["service_request_id"]: i for i in items}
            for scope, pid in world.problems.items():
                assert pid in shown, (role, scope)  # public reads: every request, redacted
                covered = role in KEYED and (scope == "inside" or role in UNBOUND)
                assert (shown[pid]["description"] is not None) is covered, (role, scope)


async def test_outside_the_scope_is_indistinguishable_from_nothing(app: Any, services: Services) -> None:
    """The 404 for a problem outside the scope is the 404 for an id never used (SPEC §6)."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        world = await build_world(client, services)
        outside, never = world.problems["outside"], str(uuid.uuid4())
        for role in BOUND:
            for suffix, method, body in (
                ("", "GET", None),
                ("/events", "GET", None),
                ("/progress", "POST", {"note": "x"}),
            ):
                answers = []
                for pid in (outside, never):
                    r = await client.request(
                        method, f"/v1/problems/{pid}{suffix}", json=body, headers=auth(world.keys[role])
                    )
                    doc = r.json()
                    answers.append(
                        (
                            r.status_code,
                            doc["code"],
                            doc["detail"].replace(pid, "ID"),
                            doc["instance"].replace(pid, "ID"),
                        )
                    )
                assert answers[0] == answers[1] and answers[0][0] == 404, (role, suffix, answers)
