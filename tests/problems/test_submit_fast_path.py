"""`POST /v1/problems` has a fast path (`app.problems.api.SubmitRoute`) for bodies of type
exactly `application/json`; any other JSON type goes through FastAPI's handler of the declared
route. Every request here is sent both ways and the two answers must be the same (status,
problem+json body, headers, the problem and the event stored), on SQLite and PostgreSQL:
successes, every refusal of the caller, of the body and of the headers, replays and rate limits."""

from __future__ import annotations

import re
from typing import Any

import httpx
import orjson
import pytest
import sqlalchemy as sa
from fastapi.routing import iter_route_contexts

from app.core.http import clean_target
from app.core.settings import Settings
from app.main import Services, create_app
from app.problems.api import SubmitRoute
from tests.conftest import ADMIN_KEY
from tests.factories import D1, D2, City, auth, build_city, make_key

FAST = "application/json"
DECLARED = "application/json; charset=utf-8"  # FastAPI's handler of the declared route
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
REMAINING = re.compile(r";r=\d+;t=\d+")


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # Portals may make 40 requests a minute: the refusals over it are compared too.
    return settings.model_copy(update={"rate_limits": "portal=40/60,*=100000/60"})


@pytest.fixture
async def city(services: Services) -> City:
    return await build_city(services)


def normalised(value: Any, key: str | None) -> Any:
    """The same answer to two requests differs in the ids of what each created (and in the
    Idempotency-Key each path sent, `key`)."""
    text = UUID.sub("<id>", orjson.dumps(value).decode())
    if key is not None:
        text = text.replace(key, "<key>")
    return orjson.loads(REMAINING.sub(";r=<n>;t=<n>", text))


async def answer(client: httpx.AsyncClient, response: httpx.Response, key: str | None) -> dict[str, Any]:
    headers = {k: v for k, v in response.headers.items() if k not in ("content-length", "date")}
    result: dict[str, Any] = {
        "status": response.status_code,
        "headers": headers,
        "body": response.json() if response.content else None,
    }
    if response.status_code == 201:
        pid = response.json()["id"]
        stored = await client.get(f"/v1/problems/{pid}", headers=auth(ADMIN_KEY))
        events = await client.get(f"/v1/problems/{pid}/events", headers=auth(ADMIN_KEY))
        result["stored"] = stored.json()
        result["events"] = [
            {k: v for k, v in e.items() if k not in ("id", "position", "recorded_at")} for e in events.json()
        ]
    return normalised(result, key)


async def both_ways(
    client: httpx.AsyncClient,
    body: Any,
    headers: dict[str, str] | None = None,
    *,
    path: str = "/v1/problems",
    idempotency_key: str | None = None,
) -> dict[str, Any]:
    """Send the request once by each path; assert the same answer; return it."""
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    answers = []
    for content_type in (FAST, DECLARED):
        sent = {"X-Request-ID": "same-request", **(headers or {}), "Content-Type": content_type}
        key = None
        if idempotency_key is not None:  # one key per path: the other path's would be a replay
            key = sent["Idempotency-Key"] = f"{idempotency_key}-{content_type[-5:]}"
        answers.append(await answer(client, await client.post(path, content=content, headers=sent), key))
    fast, declared = answers
    assert fast == declared
    return fast


def problem(city: City, **extra: Any) -> dict[str, Any]:
    return {
        "enterprise_id": city.enterprise(),
        "category": "utilities",
        "title": "双回路供电",
        "description": "新建厂房需要双回路供电。",
        **extra,
    }


def test_the_fast_path_serves_the_declared_route_with_its_dependencies() -> None:
    """The fast path calls the route's dependencies itself: a dependency added to the route or
    to the application must be added there too (this test then says where)."""
    app = create_app(Settings(environment="test"))
    [route] = [
        r for r in iter_route_contexts(app.routes) if r.path == "/v1/problems" and "POST" in (r.methods or ())
    ]
    assert isinstance(route.original_route, SubmitRoute)
    calls = {d.call.__name__ for d in route.dependant.dependencies if d.call is not None}
    assert calls == {
        clean_target.__name__,
        "get_caller",
        "get_request_meta",
        "get_problem_service",
        "get_settings",
    }, "update SubmitRoute.get_route_handler"


async def test_submissions_are_answered_alike(client: httpx.AsyncClient, city: City) -> None:
    full = problem(
        city,
        urgency="urgent",
        reported_by="  张三 ",
        reporter_unit_id=f"{D1}-t1-g2",
        source="portal-a",
        location={"address": "人民大街 1000 号", "lat": 43.88, "long": 125.32},
        media_url="https://example.org/a.jpg",
        contact={"name": "李四", "phone": "13800000000"},
    )
    assert (await both_ways(client, problem(city)))["status"] == 201
    created = await both_ways(client, full, {"X-Correlation-ID": "corr-1", "X-Causation-ID": "cause-1"})
    assert created["status"] == 201 and created["events"][0]["metadata"]["correlation_id"] == "corr-1"
    lower = await both_ways(client, problem(city, enterprise_id=city.enterprise().lower()))
    assert lower["status"] == 201
    duplicate = (
        b'{"enterprise_id": "%s", "category": "utilities", "title": "a", "title": "b", "description": "d"}'
    )
    assert (await both_ways(client, duplicate % city.enterprise().encode()))["body"]["title"] == "b"
    imported = await both_ways(client, problem(city, occurred_at="2026-11-10T09:00:00+08:00"))
    assert imported["status"] == 201 and imported["events"][0]["metadata"]["imported"] is True


async def test_refusals_of_the_caller_are_answered_alike(client: httpx.AsyncClient, city: City) -> None:
    body = problem(city)
    for headers, status in (
        ({}, 401),
        ({"Authorization": "Basic YTpi"}, 401),
        ({"Authorization": "Bearer"}, 401),
        ({"Authorization": "Bearer  "}, 401),
        (auth("dr_unknown"), 401),
        (auth(await make_key(client, "viewer")), 403),
    ):
        client.headers.pop("Authorization", None)
        assert (await both_ways(client, body, headers))["status"] == status, headers
    client.headers["Authorization"] = f"Bearer {ADMIN_KEY}"

    revoked = await client.post(
        "/v1/api-keys", json={"name": "gone", "role": "commander"}, headers=auth(ADMIN_KEY)
    )
    await client.delete(f"/v1/api-keys/{revoked.json()['id']}")
    assert (await both_ways(client, body, auth(revoked.json()["key"])))["status"] == 401
    board = await client.post("/v1/board/tokens", json={"name": "wall"})
    assert (await both_ways(client, body, auth(board.json()["token"])))["status"] == 401

    dispatcher = auth(await make_key(client, "dispatcher", district_id=D1))
    handler = auth(await make_key(client, "handler", unit_id=f"{D1}-t1-g1"))
    other_handler = auth(await make_key(client, "handler", unit_id=f"{D2}-t1-g1"))
    portal = auth(await make_key(client, "portal", source="portal-a"))
    for headers, sent, status in (
        (dispatcher, body, 201),
        (dispatcher, problem(city, enterprise_id=city.enterprise(D2)), 422),  # another district
        (dispatcher, problem(city, occurred_at="2026-11-10T09:00:00+08:00"), 403),  # no import
        (handler, body, 201),  # reports as its own unit
        (handler, problem(city, reporter_unit_id=f"{D1}-t1-g2"), 403),  # not its unit
        (other_handler, body, 422),
        (portal, body, 201),
        (portal, problem(city, source="portal-b"), 403),
        (auth(ADMIN_KEY), problem(city, enterprise_id="91220102MA17W1P07X"), 422),  # unknown
        (auth(ADMIN_KEY), problem(city, category="no_such_thing"), 422),
        (auth(ADMIN_KEY), problem(city, reporter_unit_id="nowhere"), 422),
        (auth(ADMIN_KEY), problem(city, reporter_unit_id=f"{D2}-t1-g1"), 422),  # not its district
        (auth(ADMIN_KEY), problem(city, occurred_at="2027-01-01T00:00:00+08:00"), 422),  # future
    ):
        assert (await both_ways(client, sent, headers))["status"] == status, (headers, sent)


async def test_refusals_of_the_input_are_answered_alike(client: httpx.AsyncClient, city: City) -> None:
    viewer = auth(await make_key(client, "viewer"))
    valid = orjson.dumps(problem(city))
    for content, status in (
        (b"", 422),
        (b"{", 422),
        (b"[]", 422),
        (b"null", 422),
        (valid[:-1] + b', "extra": 1}', 422),
        (valid + b" x", 422),
        (b"\xef\xbb\xbf" + valid, 201),  # a byte order mark: Python's JSON reads it
        (orjson.dumps(problem(city, title="a\u0000b")), 422),
        (orjson.dumps(problem(city, enterprise_id="9122010")), 422),
        (orjson.dumps(problem(city, location={"lat": 1.5})), 422),
        (valid.replace(b'"utilities"', b'"utilities", "location": {"lat": NaN, "long": 1}'), 422),
        (valid.replace("双回路供电".encode(), b"\\ud800"), 422),  # a lone surrogate
    ):
        for headers in ({}, viewer):
            answered = await both_ways(client, content, headers)
            expected = 403 if headers and status == 201 else status
            assert answered["status"] == expected, (content, headers, answered["body"])
    no_key = await both_ways(client, b"{", {"Authorization": ""})
    assert no_key["status"] == 422, "a body that is not JSON is refused before the key is read"
    for path, status in (("/v1/problems?x=%00", 400), ("/v1/problems?x=%ff", 400), ("/v1/problems?x=1", 201)):
        assert (await both_ways(client, valid, path=path))["status"] == status


async def test_idempotency_keys_are_answered_alike(client: httpx.AsyncClient, city: City) -> None:
    body = problem(city)
    first = await both_ways(client, body, idempotency_key="k1")
    again = await both_ways(client, body, idempotency_key="k1")
    assert (first["status"], again["status"]) == (201, 201)
    assert "idempotent-replayed" not in first["headers"] and again["headers"]["idempotent-replayed"] == "true"
    assert again["body"] == first["body"]
    other_body = await both_ways(client, problem(city, title="另一个"), idempotency_key="k1")
    assert other_body["status"] == 422 and other_body["body"]["code"] == "idempotency_key_reused"
    empty = await both_ways(client, body, {"Idempotency-Key": ""})
    too_long = await both_ways(client, body, {"Idempotency-Key": "k" * 201})
    assert empty["status"] == too_long["status"] == 422
    longest = await both_ways(client, body, idempotency_key="k" * 194)  # 200 characters sent
    assert longest["status"] == 201


async def test_rate_limits_are_answered_alike(client: httpx.AsyncClient, city: City) -> None:
    portal = auth(await make_key(client, "portal"))
    statuses = [(await both_ways(client, problem(city), portal))["status"] for _ in range(21)]
    assert statuses == [201] * 20 + [429]
    limited = await both_ways(client, problem(city), portal)
    assert limited["headers"]["retry-after"] and limited["body"]["code"] == "rate_limited"


@pytest.mark.sqlite_only
async def test_the_fast_path_reads_the_key_with_the_references(
    client: httpx.AsyncClient, city: City, services: Services
) -> None:
    """What makes it fast can be seen in the statements: one round trip fewer, the key read with
    the enterprise (SQLite, where every statement passes through SQLAlchemy's events)."""
    assert services.db.is_sqlite  # PostgreSQL's hot statements run on the driver, below those events
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    engine = services.db.engine.sync_engine
    sa.event.listen(engine, "before_cursor_execute", seen)
    try:
        for content_type, round_trips in ((FAST, 1), (DECLARED, 2)):
            statements.clear()
            response = await client.post(
                "/v1/problems", content=orjson.dumps(problem(city)), headers={"Content-Type": content_type}
            )
            assert response.status_code == 201
            lookups = [s for s in statements if "key_hash =" in s or "enterprises.id =" in s]
            assert len(lookups) == round_trips, content_type
    finally:
        sa.event.remove(engine, "before_cursor_execute", seen)
