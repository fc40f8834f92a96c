"""Rate limits per key (429 with Retry-After and the RateLimit headers), the security headers of
every response, and CORS (off unless configured)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import Response
from pydantic import ValidationError

from app.core.clock import ManualClock
from app.core.settings import RateLimit, Settings, parse_rate_limits
from app.main import create_app
from tests.conftest import ADMIN_KEY
from tests.factories import auth, make_key

ORIGIN = "https://portal.example.gov.cn"


def app_settings(db_url: str, **extra: Any) -> Settings:
    return Settings(
        database_url=db_url,
        environment="test",
        admin_api_key=ADMIN_KEY,  # type: ignore[arg-type]
        scheduler_interval_seconds=0,
        **extra,
    )


@pytest.fixture
async def limited(db_url: str, clock: ManualClock) -> AsyncIterator[httpx.AsyncClient]:
    """An application whose viewers may make 3 requests a minute, everyone else 100."""
    application = create_app(app_settings(db_url, rate_limits="viewer=3/60,*=100/60"), clock=clock)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


def test_rate_limit_settings() -> None:
    assert parse_rate_limits("portal=600/60, *=1200/60") == {
        "portal": RateLimit(600, 60),
        "*": RateLimit(1200, 60),
    }
    assert parse_rate_limits("off") == {} == Settings(environment="test").rate_limit_table
    assert Settings(environment="development").rate_limit_table == {}
    production = Settings(environment="production", database_url="postgresql+asyncpg://db/x")
    assert production.rate_limit_table == {"*": RateLimit(1200, 60)}, "production is limited by default"
    assert (
        Settings(
            environment="production", database_url="postgresql+asyncpg://db/x", rate_limits="off"
        ).rate_limit_table
        == {}
    )
    for bad in ("viewer=3", "viewer=3/0", "wizard=3/60", "viewer=x/60"):
        with pytest.raises(ValidationError, match="RATE_LIMITS"):
            Settings(rate_limits=bad)


async def test_a_key_over_its_limit_gets_429_until_its_bucket_refills(
    limited: httpx.AsyncClient, clock: ManualClock
) -> None:
    viewer = await make_key(limited, "viewer")
    other = await make_key(limited, "viewer")
    for remaining in (2, 1, 0):
        ok = await limited.get("/v1/me", headers=auth(viewer))
        assert ok.status_code == 200
        assert ok.headers["RateLimit-Policy"] == '"viewer";q=3;w=60'
        assert ok.headers["RateLimit"] == f'"viewer";r={remaining};t={(3 - remaining) * 20}'
    refused = await limited.get("/v1/problems", headers=auth(viewer))
    assert refused.status_code == 429
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["code"] == "rate_limited"
    assert refused.headers["Retry-After"] == "20"  # one request every 20 s
    assert refused.headers["RateLimit"] == '"viewer";r=0;t=60'
    # per key: another viewer is not affected; requests without a key are not counted
    assert (await limited.get("/v1/me", headers=auth(other))).status_code == 200
    assert "RateLimit" not in (await limited.get("/healthz")).headers
    # Open311 counts the same key, in its own error format
    open311 = await limited.get("/open311/v2/requests.json", params={"api_key": viewer})
    assert open311.status_code == 429 and open311.headers["Retry-After"] == "20"
    assert open311.json()[0]["description"].startswith("rate_limited")
    clock.advance(timedelta(seconds=20))
    again = await limited.get("/v1/me", headers=auth(viewer))
    assert again.status_code == 200 and again.headers["RateLimit"] == '"viewer";r=0;t=60'
    # the roles not named share the `*` policy
    admin = await limited.get("/v1/me", headers=auth(ADMIN_KEY))
    assert admin.headers["RateLimit-Policy"] == '"default";q=100;w=60'


async def test_no_limits_by_default(client: httpx.AsyncClient) -> None:
    for _ in range(30):
        response = await client.get("/v1/me")
        assert response.status_code == 200
    assert "RateLimit" not in response.headers and "RateLimit-Policy" not in response.headers


async def test_openapi_declares_429_wherever_a_key_is_taken(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/openapi.json")).json()
    me = doc["paths"]["/v1/me"]["get"]["responses"]["429"]
    assert set(me["headers"]) == {"Retry-After", "RateLimit-Policy", "RateLimit"}
    assert "429" in doc["paths"]["/open311/v2/requests.{fmt}"]["get"]["responses"]
    assert "429" not in doc["paths"]["/healthz"]["get"]["responses"]


SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "content-security-policy": "frame-ancestors 'none'",
}


async def test_every_response_carries_the_security_headers(client: httpx.AsyncClient, app: Any) -> None:
    async def own_policy() -> Response:
        return Response(
            "x", headers={"Content-Security-Policy": "default-src 'self'", "X-Frame-Options": "SAMEORIGIN"}
        )

    app.add_api_route("/test-own-policy", own_policy)
    responses = [
        await client.get("/v1/me"),
        await client.get("/healthz"),
        await client.get("/docs"),
        await client.get("/v1/problems/nope"),
        await client.get("/v1/me", headers={"Authorization": "Bearer wrong"}),
        await client.post(
            "/v1/problems", content=b"x" * 2_000_000, headers={"Content-Type": "application/json"}
        ),
        await client.get("/open311/v2/services.xml"),
    ]
    assert [r.status_code for r in responses] == [200, 200, 200, 404, 401, 413, 200]
    for response in responses:
        for name, value in SECURITY_HEADERS.items():
            assert response.headers.get(name) == value, (response.request.url, name)
    own = await client.get("/test-own-policy")
    assert own.headers["content-security-policy"] == "default-src 'self'"  # a route's own wins
    assert own.headers["x-frame-options"] == "SAMEORIGIN"
    assert own.headers.get_list("content-security-policy") == ["default-src 'self'"]
    assert own.headers["x-content-type-options"] == "nosniff"


async def test_cors_is_off_by_default(client: httpx.AsyncClient) -> None:
    preflight = await client.options(
        "/v1/problems",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert preflight.status_code == 405
    assert "access-control-allow-origin" not in preflight.headers
    simple = await client.get("/v1/me", headers={"Origin": ORIGIN})
    assert simple.status_code == 200 and "access-control-allow-origin" not in simple.headers


async def test_cors_for_configured_origins(db_url: str, clock: ManualClock) -> None:
    application = create_app(app_settings(db_url, cors_allow_origins=ORIGIN), clock=clock)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            ask = {
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type",
            }
            preflight = await client.options("/v1/problems", headers={"Origin": ORIGIN, **ask})
            assert preflight.status_code == 200
            assert preflight.headers["access-control-allow-origin"] == ORIGIN
            assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
            # keys travel in Authorization, never in cookies: no credentials
            assert "access-control-allow-credentials" not in preflight.headers
            assert preflight.headers["x-content-type-options"] == "nosniff"
            stranger = await client.options("/v1/problems", headers={"Origin": "https://evil.example", **ask})
            assert stranger.status_code == 400 and "access-control-allow-origin" not in stranger.headers
            actual = await client.get("/v1/me", headers={"Origin": ORIGIN, **auth(ADMIN_KEY)})
            assert actual.status_code == 200 and actual.headers["access-control-allow-origin"] == ORIGIN
            exposed = actual.headers["access-control-expose-headers"].lower()
            assert "etag" in exposed and "ratelimit" in exposed and "retry-after" in exposed
            other = await client.get("/v1/me", headers={"Origin": "https://evil.example", **auth(ADMIN_KEY)})
            assert "access-control-allow-origin" not in other.headers
