"""Bad input, on SQLite and PostgreSQL: bodies, strings, lists and pages have limits; NUL and bytes
that are not UTF-8 are refused (400/422) wherever they come (body, path, query); unknown fields
are refused on every command; Chinese text comes back exactly as it was sent. Each refusal is
problem+json and writes nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from app.core.errors import PROBLEM_JSON
from app.main import Services
from tests.factories import City, build_city, submit

# Every plane of Unicode the service must keep as it is: CJK with full-width punctuation, an
# ideograph outside the BMP (𠮷), an emoji, a combining accent (not to be normalised), tabs and
# newlines in long text.
CHINESE_TITLE = "新厂房双回路供电接入（𠮷野家·南关店）😀"
CHINESE_TEXT = "申请已提交三个月未获答复；\n\t供电公司称“需区级协调”。Cafe\u0301 №5 ￥1,000"


@pytest.fixture
async def city(services: Services) -> City:
    return await build_city(services)


def assert_problem(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    doc: dict[str, Any] = response.json()
    assert doc["status"] == status
    if code:
        assert doc["code"] == code, doc
    return doc


async def event_count(client: httpx.AsyncClient, services: Services) -> int:
    """Events in the log (numbered first: PostgreSQL gives positions a moment after commit)."""
    await services.store.sequence()
    page = await client.get("/v1/events", params={"limit": 1000})
    assert page.status_code == 200
    return len(page.json()["items"])


def body(city: City, **fields: Any) -> dict[str, Any]:
    return {
        "enterprise_id": city.enterprise(),
        "category": "utilities",
        "title": "供电接入",
        "description": "新厂房需要双回路供电",
        **fields,
    }


async def test_chinese_text_round_trips_exactly(
    client: httpx.AsyncClient, city: City, services: Services
) -> None:
    created = await submit(client, city.enterprise(), title=CHINESE_TITLE, description=CHINESE_TEXT)
    pid = created["id"]
    assert (created["title"], created["description"]) == (CHINESE_TITLE, CHINESE_TEXT)
    fetched = (await client.get(f"/v1/problems/{pid}")).json()
    assert (fetched["title"], fetched["description"]) == (CHINESE_TITLE, CHINESE_TEXT)
    note = "已与供电公司现场踏勘 𠮷 ✓"
    progressed = await client.post(f"/v1/problems/{pid}/progress", json={"note": note})
    assert progressed.status_code == 200, progressed.text
    events = (await client.get(f"/v1/problems/{pid}/events")).json()
    assert events[0]["data"]["title"] == CHINESE_TITLE
    assert events[0]["data"]["description"] == CHINESE_TEXT
    assert events[-1]["data"]["note"] == note
    listed = (await client.get("/v1/problems", params={"enterprise_id": city.enterprise()})).json()
    assert [(p["id"], p["title"]) for p in listed["items"]] == [(pid, CHINESE_TITLE)]
    ledger = await client.get("/v1/problems/export", params={"format": "csv"})
    assert ledger.status_code == 200 and CHINESE_TITLE in ledger.content.decode("utf-8-sig")
    # The raw bytes on the wire are UTF-8, not \\u escapes that a client might mangle.
    raw = (await client.get(f"/v1/problems/{pid}")).content
    assert CHINESE_TITLE.encode() in raw


async def test_a_body_over_the_limit_is_413_with_or_without_content_length(
    client: httpx.AsyncClient, city: City, services: Services
) -> None:
    limit = services.settings.max_request_bytes
    before = await event_count(client, services)
    big = body(city, description="长" * (limit // 3 + 10))  # 3 bytes each in UTF-8
    assert_problem(await client.post("/v1/problems", json=big), 413, "payload_too_large")

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
        for _ in range(limit // 65536 + 2):
            yield b" " * 65536

    streamed = await client.post(
        "/v1/problems", content=chunks(), headers={"content-type": "application/json"}
    )
    assert_problem(streamed, 413, "payload_too_large")
    assert await event_count(client, services) == before


async def test_strings_are_bounded_in_characters_not_bytes(
    client: httpx.AsyncClient, city: City, services: Services
) -> None:
    at_limit = await client.post("/v1/problems", json=body(city, title="题" * 200, description="述" * 4000))
    assert at_limit.status_code == 201, at_limit.text  # 12,000 bytes of description is fine
    before = await event_count(client, services)
    for field, value in (("title", "题" * 201), ("description", "述" * 4001), ("title", "   ")):
        doc = assert_problem(await client.post("/v1/problems", json=body(city, **{field: value})), 422)
        assert ["body", field] in [e["loc"] for e in doc["errors"]], doc
    assert await event_count(client, services) == before


async def test_lists_and_pages_are_bounded(client: httpx.AsyncClient, city: City, services: Services) -> None:
    pid = (await submit(client, city.enterprise()))["id"]
    many = [f"unit-{i}" for i in range(21)]
    doc = assert_problem(
        await client.post(f"/v1/problems/{pid}/assign", json={"cooperating_unit_ids": many}), 422
    )
    assert doc["errors"][0]["loc"] == ["body", "cooperating_unit_ids"]
    for path, limit in (("/v1/problems", 501), ("/v1/events", 1001), ("/v1/enterprises", 501)):
        assert_problem(await client.get(path, params={"limit": limit}), 422, "validation_failed")
        assert_problem(await client.get(path, params={"limit": 0}), 422, "validation_failed")
        assert (await client.get(path, params={"limit": limit - 1})).status_code == 200
    assert_problem(await client.get("/v1/enterprises", params={"q": "长" * 101}), 422)


async def test_nul_and_invalid_utf8_are_refused_everywhere(
    client: httpx.AsyncClient, city: City, services: Services
) -> None:
    before = await event_count(client, services)
    # In a JSON string (as the \u0000 escape): every text field refuses control characters.
    for field in ("title", "description", "reported_by"):
        doc = assert_problem(await client.post("/v1/problems", json=body(city, **{field: "a\x00b"})), 422)
        assert doc["errors"][0]["loc"] == ["body", field]
    # A raw NUL or bytes that are not UTF-8 in the body: not JSON at all.
    raw_nul = b'{"enterprise_id": "x", "title": "a\x00b"}'
    not_utf8 = '{"title": "供电"}'.encode("gb18030")
    for content in (raw_nul, not_utf8):
        response = await client.post(
            "/v1/problems", content=content, headers={"content-type": "application/json"}
        )
        assert response.status_code in (400, 422), response.text
        assert_problem(response, response.status_code)
    # In the path and the query string, on any route (the database never sees them).
    for url in (
        "/v1/problems?q=%00",
        "/v1/problems?q=%FF%FE",
        "/v1/enterprises?q=a%00",
        "/v1/problems/%00",
        "/v1/problems/%C3%28",
        "/v1/units/%E4%B8",
    ):
        doc = assert_problem(await client.get(url), 400, "bad_request")
        assert "NUL" in doc["detail"] or "UTF-8" in doc["detail"]
    # Open311 keeps its own error format for the same refusal.
    open311 = await client.get("/open311/v2/requests.json?service_request_id=%00")
    assert open311.status_code == 400 and open311.json()[0]["code"] == 400
    assert await event_count(client, services) == before


async def test_every_command_refuses_unknown_fields(
    client: httpx.AsyncClient, city: City, services: Services
) -> None:
    """Every operation with a JSON body, from the OpenAPI document: a misspelt field is a 422
    naming it, never silently ignored."""
    pid = (await submit(client, city.enterprise()))["id"]
    doc = (await client.get("/openapi.json")).json()
    checked = []
    for path, methods in doc["paths"].items():
        for method, operation in methods.items():
            content = operation.get("requestBody", {}).get("content", {})
            if "application/json" not in content or not path.startswith("/v1/"):
                continue
            url = path.replace("{problem_id}", pid)
            for name in ("unit_id", "enterprise_id", "code", "webhook_id", "day", "key_id"):
                url = url.replace("{" + name + "}", {"day": "2026-12-01"}.get(name, "x"))
            response = await client.request(method, url, json={"unexpected_field": 1})
            problem = assert_problem(response, 422)
            assert ["body", "unexpected_field"] in [e["loc"] for e in problem["errors"]], (path, problem)
            checked.append(f"{method.upper()} {path}")
    assert len(checked) >= 25, checked  # every lifecycle command, the directory, keys, webhooks
    assert "POST /v1/problems/{problem_id}/resolve" in checked
