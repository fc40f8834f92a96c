"""Existing Open311 clients from PyPI against a real server process, in JSON and XML, on SQLite
and PostgreSQL: `georeport` 0.3.1 (reads) and `open311` 1.1 (posts; asks for `services.xml`
and the singular `service/{code}` path)."""

from __future__ import annotations

from pathlib import Path

import httpx
from georeport import GeoReport

from tests.open311.legacy_client import load
from tests.server import server

ADMIN = "dr_dev_admin_key"
JURISDICTION = "changchun.gov.cn"


def test_georeport_and_open311_clients(db_url: str, tmp_path: Path) -> None:
    env = {"DATABASE_URL": db_url, "ADMIN_API_KEY": ADMIN, "SERVER_LOG": str(tmp_path / "server.log")}
    with server(env, "--demo") as base:
        admin = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {ADMIN}"})
        created = admin.post("/v1/api-keys", json={"name": "政务服务网", "role": "portal", "source": "zwfw"})
        portal = created.json()["key"]
        enterprise = admin.get("/v1/enterprises", params={"district_id": "220102", "limit": 1}).json()
        enterprise_id = enterprise["items"][0]["id"]
        root = f"{base}/open311/v2"

        # open311 1.1: XML by default, the singular service/{code} path, api_key in the query.
        Open311 = load(tmp_path)
        legacy = Open311(endpoint=root, api_key=portal, jurisdiction=JURISDICTION)
        services = legacy.service_list()
        assert "utilities" in [s["service_code"] for s in services]
        definition = legacy.service_definition("utilities")["service_definition"]
        first = definition["attributes"]["attribute"][0]
        assert (first["code"], first["required"]) == ("enterprise_id", "true")
        posted = legacy.post_service_request(
            service_code="utilities",
            address_string="长春市南关区人民大街 1000 号",
            lat="43.8868",
            long="125.3245",
            first_name="伟",
            last_name="张",
            phone="0431-88888888",
            description="新建厂房需要双回路供电。申请已提交三个月。",
            **{"attribute[enterprise_id]": enterprise_id, "attribute[urgency]": "urgent"},
        )
        xml_id = posted["service_requests"]["request"]["service_request_id"]
        one = legacy.get_service_request(xml_id)["service_requests"]["request"]
        assert (one["status"], one["service_code"], one["address"]) == (
            "open",
            "utilities",
            "长春市南关区人民大街 1000 号",
        )
        assert one["description"] is None  # public read: withheld
        listed = legacy.service_requests(status="open", service_code="utilities")
        listed = listed if isinstance(listed, list) else [listed]
        assert xml_id in [r["service_request_id"] for r in listed]

        legacy_json = Open311(endpoint=root, api_key=portal, jurisdiction=JURISDICTION, format="json")
        [json_post] = legacy_json.post_service_request(
            service_code="land",
            address_id="ADDR-220102-0001",
            description="新增用地指标申请",
            **{"attribute[enterprise_id]": enterprise_id},
        )
        json_id = json_post["service_request_id"]
        [fetched] = legacy_json.get_service_request(json_id)
        assert fetched["address_id"] == "ADDR-220102-0001" and fetched["service_name"] == "土地"

        # The problem moves on through /v1; the clients see it.
        admin.post(
            f"/v1/problems/{xml_id}/resolve", json={"resolution": "已完成双回路接入"}
        ).raise_for_status()

        # georeport 0.3.1 in JSON and in XML, reading; with the portal's key as jurisdiction-free reads.
        for fmt in ("json", "xml"):
            client = GeoReport(root, jurisdiction=JURISDICTION, output_format=fmt)
            codes = [s["service_code"] for s in client.get_service_list()]
            assert {"land", "utilities"} <= set(codes)
            definition = client.get_service_definition("utilities")
            attributes = definition["attributes"]
            attributes = attributes if fmt == "json" else attributes["attribute"]
            assert attributes[0]["code"] == "enterprise_id"
            resolved = client.get_service_request(xml_id)
            assert resolved["status"] == "closed"
            assert resolved["status_notes"] == "已办结"
            assert resolved["expected_datetime"].endswith("+08:00")
            both = client.get_service_requests(service_request_id=f"{xml_id},{json_id}")
            both = both if isinstance(both, list) else [both]
            assert sorted(r["service_request_id"] for r in both) == sorted([xml_id, json_id])
            closed = client.get_service_requests(status="closed", service_code="utilities")
            closed = closed if isinstance(closed, list) else [closed]
            assert xml_id in [r["service_request_id"] for r in closed]
            assert json_id not in [r["service_request_id"] for r in closed]
