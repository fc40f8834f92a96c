"""Ledger import and export over HTTP (in process), on SQLite and PostgreSQL: dates become
events with `occurred_at`, bad rows are reported and skipped, a second import creates nothing,
and the export has the import's columns."""

from __future__ import annotations

import csv
import io
from typing import Any

import httpx
import pytest
from openpyxl import Workbook, load_workbook

from app.ledger.columns import COLUMNS
from app.ledger.importer import problem_id_for
from app.main import Services
from tests.factories import D1, D2, City, build_city

TITLES = [c.title for c in COLUMNS]


@pytest.fixture
async def city(services: Services) -> City:
    return await build_city(services)


def ledger_rows(city: City) -> list[dict[str, Any]]:
    return [
        {  # the district path, closed after satisfied feedback
            "台账编号": "NG-2026-001",
            "企业统一社会信用代码": city.enterprise(),
            "问题类别": "水电气暖",
            "问题标题": "新厂房双回路供电接入",
            "问题描述": "申请已提交三个月未获答复",
            "紧急程度": "一般",
            "填报人": "张三",
            "问题地址": "测试路 1 号",
            "提交时间": "2026-09-01 09:00:00",
            "上交时间": "2026-09-02 10:00",
            "交办时间": "2026-09-03 10:00",
            "牵头单位": "220102职能组a",
            "配合单位": "220102职能组b",
            "办结时限": "2026-09-30",
            "签收时间": "2026-09-03 15:00",
            "办结时间": "2026/09/20 16:00",
            "办理结果": "已完成接入",
            "回访时间": "2026年9月22日 10:00",
            "满意度评分": "5",
            "回访意见": "满意",
        },
        {  # solved on the spot, awaiting feedback
            "台账编号": "NG-2026-002",
            "企业统一社会信用代码": city.enterprise(index=1),
            "问题类别": "policy",
            "问题标题": "稳岗补贴拨付",
            "提交时间": "2026-09-05",
            "签收时间": "2026-09-05 11:00",
            "办结时间": "2026-09-06 11:00",
        },
        {
            "台账编号": "NG-2026-003",
            "企业统一社会信用代码": city.enterprise(),
            "问题类别": "land",
            "问题标题": "缺时间",
        },
        {
            "台账编号": "NG-2026-004",
            "企业统一社会信用代码": "9" * 18,
            "问题类别": "land",
            "问题标题": "未登记企业",
            "提交时间": "2026-09-05",
        },
        {  # up to the city, a department leads, withdrawn
            "台账编号": "NG-2026-005",
            "企业统一社会信用代码": city.enterprise(D2),
            "问题类别": "financing",
            "问题标题": "上市辅导对接",
            "紧急程度": "紧急",
            "提交时间": "2026-09-07 09:00",
            "上交时间": "2026-09-08 09:00",
            "再次上交时间": "2026-09-09 09:00",
            "交办时间": "2026-09-10 09:00",
            "牵头单位": "cc-dept-a",
            "撤回时间": "2026-09-11 09:00",
            "撤回原因": "企业自行解决",
        },
        {
            "台账编号": "NG-2026-006",
            "企业统一社会信用代码": city.enterprise(),
            "问题类别": "land",
            "问题标题": "回访早于办结",
            "提交时间": "2026-09-07 09:00",
            "办结时间": "2026-09-09 09:00",
            "回访时间": "2026-09-08 09:00",
            "满意度评分": "4",
        },
        {  # the lifecycle refuses the assignment (a unit of another district): stops halfway
            "台账编号": "NG-2026-007",
            "企业统一社会信用代码": city.enterprise(),
            "问题类别": "land",
            "问题标题": "交办错区",
            "提交时间": "2026-09-07 09:00",
            "上交时间": "2026-09-08 09:00",
            "交办时间": "2026-09-09 09:00",
            "牵头单位": "220103职能组a",
        },
    ]


def as_csv(rows: list[dict[str, Any]], extra_column: bool = True) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    titles = [*TITLES, "备注"] if extra_column else TITLES
    writer.writerow(titles)
    for row in rows:
        writer.writerow([row.get(t, "") for t in titles])
    return out.getvalue().encode("utf-8-sig")


def as_xlsx(rows: list[dict[str, Any]]) -> bytes:
    book = Workbook()
    sheet = book.active
    sheet.append(TITLES)
    for row in rows:
        sheet.append([row.get(t) for t in TITLES])
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


async def test_import_report_idempotency_and_export(client: httpx.AsyncClient, city: City) -> None:
    body = as_csv(ledger_rows(city))
    response = await client.post("/v1/imports", content=body, headers={"Content-Type": "text/csv"})
    assert response.status_code == 200, response.text
    report = response.json()
    assert (report["rows"], report["created"], report["failed"]) == (7, 3, 4), report
    assert report["ignored_columns"] == ["备注"]
    reasons = {e["row"]: e["reason"] for e in report["errors"]}
    assert reasons[4] == "提交时间 is empty"
    assert "unknown_enterprise" in reasons[5]
    assert reasons[7] == "回访时间 lies before 办结时间"
    assert reasons[8].startswith("交办: invalid_lead_unit")

    closed = (await client.get(f"/v1/problems/{problem_id_for('NG-2026-001')}")).json()
    assert (closed["status"], closed["tier"], closed["satisfied"]) == ("closed", "district", True)
    assert closed["lead_unit_id"] == city.function_groups[D1][0]
    assert closed["cooperating_unit_ids"] == [city.function_groups[D1][1]]
    assert closed["submitted_at"] == "2026-09-01T09:00:00+08:00"
    assert closed["resolved_at"] == "2026-09-20T16:00:00+08:00"
    assert closed["location"] == {"address": "测试路 1 号"}
    assert closed["deadline"] == "2026-09-30T23:59:59+08:00"
    events = (await client.get(f"/v1/problems/{closed['id']}/events")).json()
    assert [(e["type"], e["occurred_at"]) for e in events][:3] == [
        ("problem.submitted", "2026-09-01T09:00:00+08:00"),
        ("problem.escalated", "2026-09-02T10:00:00+08:00"),
        ("problem.assigned", "2026-09-03T10:00:00+08:00"),
    ]
    assert all(e["metadata"]["imported"] for e in events)
    local = (await client.get(f"/v1/problems/{problem_id_for('NG-2026-002')}")).json()
    assert (local["status"], local["solved_tier"]) == ("resolved", "local")
    city_level = (await client.get(f"/v1/problems/{problem_id_for('NG-2026-005')}")).json()
    assert (city_level["status"], city_level["tier"], city_level["urgency"]) == (
        "withdrawn",
        "city",
        "urgent",
    )

    again = (await client.post("/v1/imports?format=csv", content=body)).json()
    assert (again["created"], again["updated"], again["unchanged"], again["failed"]) == (0, 0, 3, 4)

    # A corrected row goes on where it stopped; the same content in Excel changes nothing.
    fixed = ledger_rows(city)
    fixed[5]["回访时间"] = "2026-09-10 09:00"
    fixed[6]["牵头单位"] = "220102职能组a"
    files = {"file": ("ledger.xlsx", as_xlsx(fixed), "application/octet-stream")}
    third = (await client.post("/v1/imports", files=files)).json()
    assert (third["created"], third["updated"], third["unchanged"], third["failed"]) == (1, 1, 3, 2), third
    changed = ledger_rows(city)
    changed[0]["问题标题"] = "改过的标题"
    refused = (
        await client.post("/v1/imports", content=as_csv(changed[:1]), headers={"Content-Type": "text/csv"})
    ).json()
    assert "imported before with other content" in refused["errors"][0]["reason"]

    exported = await client.get("/v1/problems/export", params={"format": "csv"})
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
    lines = list(csv.DictReader(io.StringIO(exported.content.decode("utf-8-sig"))))
    assert list(lines[0]) == TITLES
    first = next(r for r in lines if r["台账编号"] == closed["id"])
    assert (first["问题类别"], first["牵头单位"], first["满意度评分"]) == ("水电气暖", "220102职能组a", "5")
    assert (first["上交时间"], first["当前状态"]) == ("2026-09-02 10:00:00", "已销号")
    assert len(lines) == 5

    workbook = await client.get("/v1/problems/export", params={"format": "xlsx", "status": "withdrawn"})
    assert workbook.status_code == 200
    sheet = load_workbook(io.BytesIO(workbook.content), read_only=True).active
    cells = list(sheet.iter_rows(values_only=True))
    assert list(cells[0]) == TITLES and len(cells) == 2
    assert cells[1][TITLES.index("撤回原因")] == "企业自行解决"

    not_found = await client.get("/v1/problems/export", params={"format": "pdf"})
    assert not_found.status_code == 422
    headerless = await client.post("/v1/imports", content=b"a,b\n1,2\n", headers={"Content-Type": "text/csv"})
    assert headerless.status_code == 422 and headerless.json()["code"] == "invalid_ledger"
    unknown = await client.post("/v1/imports", content=b"x")
    assert unknown.status_code == 422 and unknown.json()["code"] == "invalid_ledger"


async def test_only_admins_import_and_exports_are_scoped(client: httpx.AsyncClient, city: City) -> None:
    from tests.factories import auth, make_key, submit

    dispatcher = await make_key(client, "dispatcher", district_id=D2)
    denied = await client.post(
        "/v1/imports", content=as_csv([]), headers={**auth(dispatcher), "Content-Type": "text/csv"}
    )
    assert denied.status_code == 403
    await submit(client, city.enterprise(D1))
    mine = await submit(client, city.enterprise(D2))
    exported = await client.get("/v1/problems/export", headers=auth(dispatcher))
    lines = list(csv.DictReader(io.StringIO(exported.content.decode("utf-8-sig"))))
    assert [r["台账编号"] for r in lines] == [mine["id"]]
