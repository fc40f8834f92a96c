"""Test data: a small city built through the real services, and helpers for keys and problems."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx

from app.directory.credit_code import make_code
from app.directory.schemas import EnterpriseIn, UnitIn
from app.main import Services
from app.routing.tree import UnitKind
from tests.conftest import ADMIN_KEY

D1, D2 = "220102", "220103"


@dataclass
class City:
    command_room: str = "cc-room"
    departments: tuple[str, ...] = ("cc-dept-a", "cc-dept-b")
    rooms: dict[str, str] = field(default_factory=dict)
    function_groups: dict[str, tuple[str, ...]] = field(default_factory=dict)
    teams: dict[str, str] = field(default_factory=dict)
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)
    enterprises: dict[str, list[str]] = field(default_factory=dict)

    def enterprise(self, district: str = D1, index: int = 0) -> str:
        return self.enterprises[district][index]


def enterprise_code(district: str, n: int) -> str:
    return make_code("9", "1", district, f"{n:08d}A")


async def build_city(services: Services, *, enterprises_per_group: int = 2) -> City:
    """cc-room with two departments; two districts, each with a room, two function groups, one
    team of two service groups, and enterprises covered by each group."""
    city = City()
    d = services.directory
    from app.core.security import Caller, Role

    admin = Caller(key_id="test", name="test setup", role=Role.admin)

    async def unit(**kw: Any) -> None:
        await d.create_unit(admin, UnitIn(**kw))

    await unit(id=city.command_room, name="市总调度室", kind=UnitKind.city_command_room)
    for dept in city.departments:
        await unit(
            id=dept,
            name=f"市直部门{dept[-1]}",
            kind=UnitKind.city_department,
            parent_id=city.command_room,
        )
    n = 0
    for district in (D1, D2):
        room = f"{district}-room"
        await unit(
            id=room,
            name=f"{district}调度室",
            kind=UnitKind.district_dispatch_room,
            parent_id=city.command_room,
            district_id=district,
        )
        city.rooms[district] = room
        fgs = (f"{district}-fg-a", f"{district}-fg-b")
        for fg in fgs:
            await unit(
                id=fg,
                name=f"{district}职能组{fg[-1]}",
                kind=UnitKind.district_function_group,
                parent_id=room,
            )
        city.function_groups[district] = fgs
        team = f"{district}-t1"
        await unit(id=team, name=f"{district}服务队", kind=UnitKind.service_team, parent_id=room)
        city.teams[district] = team
        groups = (f"{team}-g1", f"{team}-g2")
        for g in groups:
            await unit(id=g, name=f"{district}服务组{g[-1]}", kind=UnitKind.service_group, parent_id=team)
        city.groups[district] = groups
        city.enterprises[district] = []
        for g in groups:
            for _ in range(enterprises_per_group):
                n += 1
                code = enterprise_code(district, n)
                await d.register_enterprise(
                    admin,
                    EnterpriseIn(
                        id=code,
                        name=f"测试企业{n}有限公司",
                        district_id=district,
                        service_unit_id=g,
                        address=f"测试路{n}号",
                    ),
                )
                city.enterprises[district].append(code)
    return city


async def make_key(client: httpx.AsyncClient, role: str, **scope: Any) -> str:
    body = {"name": f"{role} key", "role": role, **scope}
    response = await client.post("/v1/api-keys", json=body, headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert response.status_code == 201, response.text
    return str(response.json()["key"])


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def submit(
    client: httpx.AsyncClient,
    enterprise_id: str,
    *,
    key: str = ADMIN_KEY,
    category: str = "utilities",
    **extra: Any,
) -> dict[str, Any]:
    body = {
        "enterprise_id": enterprise_id,
        "category": category,
        "title": "供电接入",
        "description": "新厂房需要双回路供电",
        **extra,
    }
    response = await client.post("/v1/problems", json=body, headers=auth(key))
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


async def command(
    client: httpx.AsyncClient,
    problem_id: str,
    name: str,
    body: dict[str, Any] | None = None,
    *,
    key: str = ADMIN_KEY,
    expect: int = 200,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    response = await client.post(
        f"/v1/problems/{problem_id}/{name}",
        json=body or {},
        headers={**auth(key), **(headers or {})},
    )
    assert response.status_code == expect, f"{name}: {response.status_code} {response.text}"
    result: dict[str, Any] = response.json()
    return result
