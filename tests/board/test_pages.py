"""`/board` against the application (httpx, SQLite and PostgreSQL): the figures it shows are the
API's for the same caller, scope applies, bad parameters are problem+json 4xx, the security
headers are there, and the basics of accessibility hold."""

from __future__ import annotations

import re
from typing import Any

import httpx

from tests.board.conftest import History, figures, number
from tests.factories import D1, D2, auth, make_key

NOVEMBER = {"from": "2026-11-01", "to": "2026-11-30"}
HEADLINE = (
    "received",
    "solved",
    "solve_rate",
    "solved_on_the_spot",
    "on_time_rate",
    "satisfaction_rate",
    "open",
    "overdue",
)


async def board(
    client: httpx.AsyncClient, path: str = "/board", key: str | None = None, **params: Any
) -> str:
    response = await client.get(path, params=params, headers=auth(key) if key else None)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    return response.text


async def api(client: httpx.AsyncClient, path: str, key: str | None = None, **params: Any) -> dict[str, Any]:
    response = await client.get(path, params=params, headers=auth(key) if key else None)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def headline(shown: dict[str, str]) -> dict[str, float | None]:
    return {name: number(shown[f"kpi-{name}"]) for name in HEADLINE}


def expected(total: dict[str, Any]) -> dict[str, float | None]:
    return {name: total[name] for name in HEADLINE}


async def test_the_figures_shown_are_the_apis(client: httpx.AsyncClient, history: History) -> None:
    page = await board(client, period="2026-11")
    shown = figures(page)
    total = (await api(client, "/v1/stats/solve-rates", **NOVEMBER))["total"]
    assert headline(shown) == expected(total)
    assert (total["received"], total["solved"], total["overdue"]) == (5, 2, 2)

    aging = await api(client, "/v1/stats/aging")
    assert (number(shown["aging-open"]), number(shown["aging-overdue"])) == (
        aging["total"]["open"],
        aging["total"]["overdue"],
    )
    for bucket, count in aging["total"]["buckets"].items():
        assert f'<tspan id="aging-{bucket}">{count}</tspan>' in page
    report = await api(client, "/v1/reports/dispatch", period="2026-11")
    assert number(shown["overdue-count"]) == report["overdue_count"] == 3
    # The overdue list: the report's, longest overdue first, each linking to its timeline.
    listed = re.findall(r'href="/board/problems/([^"?]+)', page)
    assert listed == [o["id"] for o in report["overdue"]][: len(listed)] and listed
    assert f'<tspan class="flow-num" id="flow-received">{report["flow"]["received"]}</tspan>' in page

    rankings = await api(client, "/v1/stats/rankings", period="2026-11", tier="district")
    for progress in ("ahead", "normal", "lagging", "no_progress"):
        count = sum(1 for g in rankings["groups"] if g["progress"] == progress)
        assert number(shown[f"class-{progress}"]) == count
    assert [g["progress"] for g in rankings["groups"]] == ["ahead", "no_progress"]
    # Bijie's warning with its evidence, period by period, on hover (title) and click (details).
    [warning] = rankings["warnings"]
    assert warning["level"] == "yellow" and len(warning["evidence"]) == 2
    panel = page.split('id="panel-rankings"')[1].split("</section>")[0]
    assert panel.count('<details class="evidence"><summary class="badge yellow"') == 1
    box = panel.split('class="evidence-box"')[1]
    assert box.count("<li>") == 2 and "2026年11月：第 2/2 名，0.0%（目标 80%）" in box
    assert "2026年10月：第 2/2 名" in box

    # A panel fetched alone (what the page's script does) shows the same.
    fragment = await board(client, "/board/panels/headline", period="2026-11")
    assert figures(fragment) == {k: v for k, v in shown.items() if k.startswith("kpi-")}
    assert "<html" not in fragment

    # The change against October as it stood at its end.
    october = await api(client, "/v1/stats/solve-rates", **{"from": "2026-10-01", "to": "2026-10-31"})
    assert october["total"]["received"] == 2
    assert re.search(r'tile-received">.*?tile-change (\w+)">.*?▲ 3', page, re.S)


async def test_a_district_key_sees_its_district_only(client: httpx.AsyncClient, history: History) -> None:
    dispatcher = await make_key(client, "dispatcher", district_id=D1)
    city_wide = figures(await board(client, period="2026-11"))
    mine = figures(await board(client, key=dispatcher, period="2026-11"))
    total = (await api(client, "/v1/stats/solve-rates", key=dispatcher, **NOVEMBER))["total"]
    assert headline(mine) == expected(total)
    assert headline(mine) != headline(city_wide)
    assert total["received"] == 3
    # What an admin sees with ?district= is exactly the dispatcher's board.
    narrowed = figures(await board(client, period="2026-11", district=D1))
    assert narrowed == mine

    page = await board(client, key=dispatcher, period="2026-11")
    assert history.ids["overdue_d1"] in page and history.ids["overdue_d2"] not in page
    assert '<ul class="districts">' not in page  # no switch to other districts
    assert f'href="/board?period=2026-11&amp;district={D2}"' in await board(client, period="2026-11")
    assert history.ids["october_d2"] not in page

    other = await client.get("/board", params={"district": D2}, headers=auth(dispatcher))
    assert other.status_code == 403 and other.headers["content-type"] == "application/problem+json"
    hidden = await client.get(f"/board/problems/{history.ids['overdue_d2']}", headers=auth(dispatcher))
    assert hidden.status_code == 404 and hidden.json()["code"] == "not_found"

    handler = await make_key(client, "handler", unit_id=history.city.groups[D1][0])
    refused = await client.get("/board", headers=auth(handler))
    assert refused.status_code == 403 and refused.json()["code"] == "forbidden"


BAD = [
    ("/board", {"period": "2026-13"}, 422),
    ("/board", {"period": "last week"}, 422),
    ("/board", {"period": "x" * 40}, 422),
    ("/board", {"district": "'; drop table units; --"}, 422),
    ("/board", {"district": "999999"}, 404),
    ("/board", {"tier": "galaxy"}, 422),
    ("/board", {"basis": "lunar"}, 422),
    ("/board", {"lang": "fr"}, 422),
    ("/board/panels/nope", {}, 404),
    ("/board/panels/headline", {"period": "2026-Q5"}, 422),
    ("/board/problems/" + "9" * 65, {}, 422),
    ("/board/problems/not-a-problem", {}, 404),
    ("/board/static/..%2Fpages.py", {}, 404),
    ("/board/stream", {"period": "0"}, 422),
]


async def test_bad_parameters_are_problem_json(client: httpx.AsyncClient) -> None:
    for path, params, status in BAD:
        response = await client.get(path, params=params)
        assert response.status_code == status, (path, params, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["status"] == status
        assert "content-security-policy" in response.headers


async def test_security_headers_and_no_inline_script_or_style(
    client: httpx.AsyncClient, history: History
) -> None:
    for path in ("/board", "/board/panels/units", "/board/open", "/board/static/board.js", "/board/nothing"):
        response = await client.get(path)
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "default-src 'none'" in csp
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert response.headers["x-frame-options"] == "DENY"
    api_response = await client.get("/v1/me")
    # the API's own (docs/security.md), not the board's
    assert api_response.headers["content-security-policy"] == "frame-ancestors 'none'"

    page = await board(client)
    assert re.findall(r"<script\b[^>]*>", page) == ['<script src="/board/static/board.js" defer>']
    assert not re.search(r"\sstyle\s*=|<style\b|\son[a-z]+\s*=", page), "inline style or handler"
    assert (await client.get("/board")).headers["cache-control"] == "no-store"
    script = await client.get("/board/static/board.js")
    assert script.headers["content-type"].startswith("text/javascript")
    assert "http://" not in script.text and "https://" not in script.text  # nothing from elsewhere
    css = (await client.get("/board/static/board.css")).text
    assert "@import" not in css and "url(http" not in css


async def test_accessibility_basics(client: httpx.AsyncClient, history: History) -> None:
    page = await board(client, period="2026-11")
    assert '<html lang="zh-CN">' in page
    assert len(re.findall(r"<h1\b", page)) == 1
    sections = re.findall(r'<section class="panel[^"]*" id="panel-(\w+)"[^>]*aria-labelledby="h-(\w+)"', page)
    assert [a for a, _ in sections] == [
        "headline",
        "flow",
        "districts",
        "units",
        "aging",
        "overdue",
        "rankings",
    ]
    for name, heading in sections:
        assert name == heading and f'<h2 id="h-{heading}">' in page
    charts = re.findall(r'<svg class="chart[^"]*"[^>]*role="img" aria-labelledby="([\w-]+)"', page)
    assert len(charts) == 4  # flow, districts, units, aging
    for title in charts:
        assert f'<title id="{title}">' in page
    # Every chart has a table of the same figures beside it.
    for name in ("flow", "districts", "units", "aging"):
        panel = page.split(f'id="panel-{name}"')[1].split("</section>")[0]
        assert "<svg" in panel and "<table>" in panel and '<th scope="col">' in panel, name
    english = await board(client, period="2026-11", lang="en")
    assert '<html lang="en">' in english and "Solve rate by district" in english and "解决率" not in english
    assert figures(english) == figures(page)


async def test_the_problem_page(client: httpx.AsyncClient, history: History) -> None:
    pid = history.ids["district"]
    page = await board(client, f"/board/problems/{pid}")
    events = await api(client, f"/v1/problems/{pid}/events")
    problem = await api(client, f"/v1/problems/{pid}")
    rows = re.findall(r'<tr class="event ([\w-]+)">', page)
    assert rows == [e["type"].removeprefix("problem.").replace("_", "-") for e in events]
    assert rows == [
        "submitted",
        "escalated",
        "assigned",
        "accepted",
        "resolved",
        "feedback-received",
        "closed",
    ]
    assert figures(page)["age-days"] == str(problem["age_days"])
    assert figures(page)["age-working-days"] == str(problem["age_working_days"])
    deadlines = page.split('id="h-deadlines"')[1]
    # The local tier's deadline, then the district's (the assignment kept it); header row first.
    assert deadlines.count("<tr>") == 1 + 2
    assert "<td>2026-11-18 23:59</td><td>2026-11-09 23:59</td>" in deadlines
    assert "协调办结" in page and "区调度室" in page and "/board" in page
