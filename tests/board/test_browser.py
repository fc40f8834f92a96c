"""The wall board in a real browser (headless Chromium driven by Playwright, no browser
download: Debian's /usr/bin/chromium) against a real server process with the demo data, on
SQLite and PostgreSQL: a board link opens it, the figures shown are the API's, a new problem
appears within seconds without a reload, the problem page opens from the overdue list, the
English switch works, a revoked link loses the board, and the page logs no error (a violation
of the Content-Security-Policy would). Screenshots go to the test's directory, or to
BOARD_SCREENSHOTS if set (that is how docs/board.png is made).

Before the browser, the live stream itself is checked over HTTP (that part needs no browser).
Without Chromium the browser part is skipped with the reason, except with CI=true, where it
fails."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from tests.server import server

ADMIN = "dr_dev_admin_key"
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
HEADLINE = ("received", "solved", "solve_rate", "solved_on_the_spot", "on_time_rate", "satisfaction_rate",
            "open", "overdue")  # fmt: skip
LIVE_SECONDS = 10  # "within a few seconds", with room for a loaded machine


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_chromium(path: Path) -> Path:
    """The browser, or a skip with the reason; with CI=true a failure instead."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as exc:  # pragma: no cover - the dev dependencies include it
        reason = f"Playwright is not installed ({exc})"
    else:
        if path.exists():
            return path
        reason = f"no Chromium at {path} (apt-get install chromium, or set CHROMIUM)"
    if in_ci():
        pytest.fail(f"CI=true but the browser tests cannot run: {reason}")
    pytest.skip(reason)


@pytest.fixture
def chromium() -> Path:
    return require_chromium(CHROMIUM)


def test_without_chromium_the_browser_test_skips_except_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    missing = Path("/nonexistent/chromium")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        require_chromium(missing)
    monkeypatch.setenv("CI", "")
    with pytest.raises(pytest.skip.Exception, match="no Chromium at /nonexistent/chromium"):
        require_chromium(missing)


def screenshots(tmp_path: Path) -> Path:
    target = Path(os.environ.get("BOARD_SCREENSHOTS") or tmp_path)
    target.mkdir(parents=True, exist_ok=True)
    return target


def this_month() -> tuple[str, str]:
    today = datetime.now(ZoneInfo("Asia/Shanghai")).date()
    first = today.replace(day=1)
    last = (first + timedelta(days=32)).replace(day=1) - timedelta(days=1)
    return first.isoformat(), last.isoformat()


def submit(api: httpx.Client, enterprise_id: str, title: str) -> str:
    body = {"enterprise_id": enterprise_id, "category": "utilities", "title": title, "description": title}
    response = api.post("/v1/problems", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def events(response: httpx.Response) -> Iterator[str]:
    """The `event:` names of a Server-Sent Events response, as they arrive."""
    for line in response.iter_lines():
        if line.startswith("event:"):
            yield line.partition(":")[2].strip()


def check_stream(base: str, api: httpx.Client, enterprise_id: str) -> None:
    token = api.post("/v1/board/tokens", json={"name": "stream check"}).json()
    headers = {"Authorization": f"Bearer {token['token']}"}
    with httpx.stream("GET", f"{base}/board/stream", headers=headers, timeout=15) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert "content-security-policy" in response.headers
        names = events(response)
        started = time.monotonic()
        submit(api, enterprise_id, "流测试")
        assert next(names) == "changed"
        assert time.monotonic() - started < LIVE_SECONDS
        assert api.delete(f"/v1/board/tokens/{token['id']}").status_code == 200
        assert next(n for n in names if n != "changed") == "revoked"  # within seconds, not at reconnect
    assert httpx.get(f"{base}/board/stream", headers=headers).status_code == 401


def test_the_wall_board_live_in_a_browser(
    db_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    env = {"DATABASE_URL": db_url, "ADMIN_API_KEY": ADMIN, "SERVER_LOG": str(tmp_path / "server.log")}
    out = screenshots(tmp_path)
    with server(env, "--demo") as base:
        api = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30)
        enterprise = api.get("/v1/enterprises", params={"district_id": "220102", "limit": 1}).json()
        enterprise_id = enterprise["items"][0]["id"]
        check_stream(base, api, enterprise_id)

        path = request.getfixturevalue("chromium")
        from playwright.sync_api import sync_playwright

        link = api.post("/v1/board/tokens", json={"name": "市总调度室大屏"}).json()
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(path), args=["--no-sandbox"])
            try:
                in_browser(browser, base, api, link, enterprise_id, out)
            finally:
                browser.close()


def in_browser(browser: Any, base: str, api: httpx.Client, link: dict[str, Any], enterprise_id: str,
               out: Path) -> None:  # fmt: skip
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1920, "height": 1080})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))

    # The link opens the board; the token leaves the address bar and is out of scripts' reach.
    page.goto(link["link"])
    page.wait_for_url(f"{base}/board", timeout=15_000)
    assert "token" not in page.url
    assert page.evaluate("document.cookie") == ""  # HttpOnly
    page.wait_for_selector("#live.on", timeout=10_000)

    # The figures shown are the API's.
    first, last = this_month()
    total = api.get("/v1/stats/solve-rates", params={"from": first, "to": last}).json()["total"]
    shown = {name: page.get_attribute(f"#kpi-{name}", "value") for name in HEADLINE}
    assert shown == {name: "" if total[name] is None else str(total[name]) for name in HEADLINE}
    aging = api.get("/v1/stats/aging").json()["total"]
    assert page.get_attribute("#aging-open", "value") == str(aging["open"])
    for bucket, count in aging["buckets"].items():
        assert page.text_content(f'[id="aging-{bucket}"]') == str(count)
    overdue = api.get("/v1/reports/dispatch", params={"period": first[:7]}).json()["overdue_count"]
    assert page.get_attribute("#overdue-count", "value") == str(overdue)
    assert page.locator("h1").count() == 1 and page.locator("section.panel h2").count() == 7
    page.screenshot(path=str(out / "board.png"))

    # A warning's evidence opens on click (and closes again: an open box holds its panel still).
    badge = page.locator("#panel-rankings details.evidence summary")
    if badge.count():
        badge.first.click()
        expect(page.locator("#panel-rankings .evidence-box").first).to_be_visible()
        page.screenshot(path=str(out / "board-evidence.png"))
        badge.first.click()

    # Live: a new problem shows within seconds, on the same page (no reload).
    page.evaluate("window.boardTestMarker = 'same page'")
    before = int(shown["received"] or 0)
    started = time.monotonic()
    submit(api, enterprise_id, "大屏实时测试")
    # (A locator, not wait_for_function: the page's CSP forbids evaluating strings, rightly.)
    expect(page.locator("#kpi-received")).to_have_attribute(
        "value", str(before + 1), timeout=LIVE_SECONDS * 1000
    )
    took = time.monotonic() - started
    assert page.evaluate("window.boardTestMarker") == "same page"
    assert took < LIVE_SECONDS
    (out / "live-seconds.txt").write_text(f"{took:.2f}\n")
    page.screenshot(path=str(out / "board-live.png"))

    # From the overdue list to a problem's timeline, and back in English.
    if overdue:
        page.click("#panel-overdue tbody a")
        page.wait_for_selector("#h-timeline")
        assert page.locator("table.timeline tbody tr").count() >= 2
        page.screenshot(path=str(out / "problem.png"))
    page.goto(f"{base}/board?lang=en")
    assert page.inner_text("h1") == "Enterprise problems · wall board"
    page.screenshot(path=str(out / "board-en.png"))

    # Revoked: the open screen loses the board within seconds.
    assert api.delete(f"/v1/board/tokens/{link['id']}").status_code == 200
    page.wait_for_url(f"{base}/board/open", timeout=15_000)
    assert problems == [], problems
