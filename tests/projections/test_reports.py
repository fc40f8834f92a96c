"""`/v1/reports/dispatch`: the bulletin of a period as JSON, CSV and Excel. The figures are
Nanguan district's of June 2019 (`demo_city.json`): 175 problems collected, 5 solved on the spot,
125 handed to district function groups, 45 sent to the city command room."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from openpyxl import load_workbook

from app.main import Services
from tests.factories import D1, City
from tests.projections.helpers import at, caught_up, get, submit_at

REPORT = "/v1/reports/dispatch"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


@pytest.fixture
async def nanguan(client: httpx.AsyncClient, services: Services, city: City) -> None:
    """In the first ten days of November: 175 problems; 5 solved by their service group, 125
    escalated and handed to function groups a (63) and b (62), 45 escalated on to the city. Two
    older problems (12 October) still sit with their service group, long overdue."""
    fg_a, fg_b = city.function_groups[D1]
    start = datetime(2026, 11, 2, 1, 0, tzinfo=UTC)
    for i in range(175):
        t = start + timedelta(minutes=40 * i)
        pid = await submit_at(client, city.enterprise(index=i % 4), t)
        if i < 5:
            await at(client, pid, t + timedelta(minutes=10), "resolve", {"resolution": "现场解决"})
            continue
        await at(client, pid, t + timedelta(minutes=10), "escalate", {"reason": "需区级协调"})
        if i < 130:
            lead = fg_a if i % 2 else fg_b
            await at(client, pid, t + timedelta(minutes=20), "assign", {"lead_unit_id": lead})
        else:
            await at(client, pid, t + timedelta(minutes=20), "escalate", {"reason": "超出区级权限"})
    for i in range(2):
        await submit_at(client, city.enterprise(index=i), datetime(2026, 10, 12, 1, i, tzinfo=UTC))
    await caught_up(services)


async def test_the_bulletin_as_json_csv_and_excel(
    client: httpx.AsyncClient, nanguan: None, city: City
) -> None:
    fg_a, fg_b = city.function_groups[D1]
    report = await get(client, REPORT, period="2026-11-D1")
    assert report["title"] == "助企问题调度通报（2026年11月上旬）"
    assert report["as_of"] == "2026-11-11T00:00:00+08:00"  # the period as it ended
    total = report["total"]
    assert (total["received"], total["solved"], total["solved_on_the_spot"], total["solve_rate"]) == (
        175,
        5,
        5,
        0.029,
    )
    assert {t["key"]: t["received"] for t in report["tiers"]} == {"local": 5, "district": 125, "city": 45}
    flow = report["flow"]
    assert flow["received"] == 175
    assert flow["escalated"] == [
        {"from_tier": "local", "to_tier": "district", "count": 170},
        {"from_tier": "district", "to_tier": "city", "count": 45},
    ]
    assert flow["assigned"] == {"local": 0, "district": 125, "city": 0}
    assert flow["solved"] == {"local": 5, "district": 0, "city": 0}
    units = {u["key"]: u for u in report["groups"]}
    assert (units[fg_a]["received"], units[fg_b]["received"], units["cc-room"]["received"]) == (63, 62, 45)
    assert units[fg_a]["tier"] == "district" and units["cc-room"]["rank"] is None  # rooms are not ranked
    assert report["overdue_count"] == 2
    assert [(o["overdue_days"], o["overdue_working_days"], o["holder_name"]) for o in report["overdue"]] == [
        (27, 19, f"{D1}服务组1"),
        (27, 19, f"{D1}服务组1"),
    ]
    assert report["overdue"][0]["deadline"] == "2026-10-15T23:59:59+08:00"
    assert report["warnings"] == []
    await the_same_as_csv_and_excel(client)


async def the_same_as_csv_and_excel(client: httpx.AsyncClient) -> None:
    response = await client.get(REPORT, params={"period": "2026-11-D1", "format": "csv"})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    assert 'filename="dispatch-report-2026-11-D1.csv"' in response.headers["content-disposition"]
    assert response.content.startswith(b"\xef\xbb\xbf")  # UTF-8 byte-order mark: Excel reads it right
    rows = list(csv.reader(io.StringIO(response.content.decode("utf-8-sig"))))
    assert rows[0] == ["助企问题调度通报（2026年11月上旬）"]
    assert rows[1] == ["统计截至", "2026-11-11 00:00"]
    assert ["【汇总】"] in rows and ["【单位情况】"] in rows and ["【超期问题】"] in rows
    summary = {r[0]: r[1] for r in rows[rows.index(["【汇总】"]) + 2 : rows.index(["【层级流转】"]) - 1]}
    assert (summary["收集问题（件）"], summary["已解决（件）"], summary["解决率"]) == ("175", "5", "2.9%")
    header = rows[rows.index(["【单位情况】"]) + 1]
    assert header[:4] == ["排名", "单位", "单位编号", "层级"] and "解决率" in header

    by_accept = await client.get(REPORT, params={"period": "2026-11-D1"}, headers={"Accept": XLSX})
    assert by_accept.status_code == 200 and by_accept.headers["content-type"] == XLSX
    book = load_workbook(io.BytesIO(by_accept.content))
    assert book.sheetnames == ["汇总", "层级流转", "单位情况", "超期问题", "预警"]
    summary_sheet = book["汇总"]
    assert summary_sheet["A1"].value == "助企问题调度通报（2026年11月上旬）"
    assert summary_sheet["B2"].value == datetime(2026, 11, 11, 0, 0)
    assert [summary_sheet.cell(4, c).value for c in (1, 2)] == ["指标", "数值"]
    rate = next(r for r in summary_sheet.iter_rows(min_row=5) if r[0].value == "解决率")[1]
    assert (rate.value, rate.number_format) == (0.029, "0.0%")
    units = book["单位情况"]
    titles = [c.value for c in units[1]]
    assert titles[:3] == ["排名", "单位", "单位编号"] and units[1][0].font.bold
    assert units.freeze_panes == "A2"
    column = titles.index("解决率") + 1
    assert units.cell(2, column).number_format == "0.0%"
    overdue = book["超期问题"]
    assert overdue.cell(2, 8).number_format == "yyyy-mm-dd hh:mm"
    assert overdue.cell(2, 8).value == datetime(2026, 10, 15, 23, 59, 59)

    csv_by_accept = await client.get(REPORT, params={"period": "2026-11-D1"}, headers={"Accept": "text/csv"})
    assert csv_by_accept.headers["content-type"].startswith("text/csv")
    override = await client.get(
        REPORT, params={"period": "2026-11-D1", "format": "json"}, headers={"Accept": "text/csv"}
    )
    assert override.headers["content-type"] == "application/json"
    refused = await client.get(REPORT, params={"period": "2026-11-D1"}, headers={"Accept": "image/png"})
    assert refused.status_code == 406 and refused.json()["code"] == "not_acceptable"
    bad = await client.get(REPORT, params={"period": "2026-11-D1", "format": "pdf"})
    assert bad.status_code == 422
