"""Demo data: one city (长春市), three districts with their rooms, function groups, service
teams and groups, the city departments, routing rules, a few dozen enterprises with valid credit
codes, and problems in every state with a history spread over the past weeks.

Everything is written through the real services (as an admin with the import permission, using
`occurred_at`), so the demo exercises the same paths as production traffic.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib import resources
from typing import Any

import sqlalchemy as sa

from app.core.security import Caller, Role
from app.directory.credit_code import ALPHABET, make_code
from app.directory.schemas import EnterpriseIn, UnitIn
from app.directory.service import Directory
from app.events import EventStore
from app.problems import domain
from app.problems.schemas import SubmitIn
from app.problems.service import ProblemService
from app.projections.problem_view import problem_view
from app.routing.tree import Tier, UnitKind

DEMO_CALLER = Caller(key_id="demo", name="demo data", role=Role.admin)
DEMO_DISTRICTS = 3

_STREETS = ["人民大街", "自由大路", "亚泰大街", "卫星路", "硅谷大街"]
_INDUSTRIES = [
    "汽车零部件",
    "生物医药",
    "光电信息",
    "现代农业",
    "新材料",
    "装备制造",
    "食品加工",
    "软件科技",
    "物流",
    "建筑工程",
    "新能源",
    "文化旅游",
]
_PREFIXES = ["长春", "吉林省", "长春市", "吉林"]
_BRANDS = [
    "富维",
    "华翔",
    "瑞航",
    "金达",
    "恒通",
    "博远",
    "星光",
    "联合",
    "宏图",
    "长城",
    "鼎盛",
    "启明",
    "天成",
    "鑫源",
    "新锐",
    "盛世",
]
_TITLES: dict[str, list[str]] = {
    "land": ["新增用地指标申请", "厂区不动产权证办理", "工业用地出让进度"],
    "planning_permit": ["二期厂房规划许可", "施工许可证办理滞后", "竣工联合验收"],
    "environmental_assessment": ["扩产项目环评审批", "危废处置安全评价"],
    "financing": ["流动资金贷款授信", "知识产权质押融资", "上市辅导对接"],
    "utilities": ["新厂房双回路供电接入", "天然气管网接入", "冬季供暖管线改造", "5G 网络覆盖"],
    "demolition": ["项目地块拆迁遗留问题", "管线迁改协调"],
    "labour_talent": ["技术工人招聘困难", "高层次人才落户", "员工社保转移"],
    "policy": ["技改扶持资金兑现", "研发费用补贴申报", "稳岗补贴拨付"],
    "market_access": ["医疗器械生产许可", "产品进入政府采购目录", "出口资质办理"],
    "other": ["厂区周边道路修缮", "公交线路延伸至园区"],
}


# Which district function group leads each category (and which cooperate); the other categories
# go to the approvals group. City-jurisdiction categories come from the demo city's data.
_LEADS: dict[str, tuple[str, tuple[str, ...]]] = {
    "land": ("land-planning", ()),
    "planning_permit": ("land-planning", ("approvals",)),
    "financing": ("finance", ()),
    "utilities": ("utilities", ("approvals",)),
    "labour_talent": ("talent", ()),
    "policy": ("policy", ()),
    "market_access": ("market", ("approvals",)),
    "*": ("approvals", ()),
}


@dataclass
class DemoSummary:
    units: int
    enterprises: int
    problems: int


def _city() -> dict[str, Any]:
    text = resources.files("app.demo").joinpath("demo_city.json").read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def demo_units(districts: int = DEMO_DISTRICTS) -> list[UnitIn]:
    """The routing tree of the demo city (its first `districts` districts)."""
    city = _city()
    room = city["city"]["command_room"]
    units = [UnitIn(id=room["id"], name=room["name"], kind=UnitKind.city_command_room)]
    for dept in city["city_departments"]:
        units.append(
            UnitIn(
                id=dept["id"],
                name=dept["name"],
                kind=UnitKind.city_department,
                parent_id=room["id"],
            )
        )
    for district in city["districts"][:districts]:
        d_id, d_name = district["district_id"], district["name"]
        room_id = f"{d_id}-room"
        units.append(
            UnitIn(
                id=room_id,
                name=city["district_room_name"].format(district=d_name),
                kind=UnitKind.district_dispatch_room,
                parent_id=room["id"],
                district_id=d_id,
            )
        )
        for group in city["district_function_groups"]:
            units.append(
                UnitIn(
                    id=f"{d_id}-{group['suffix']}",
                    name=f"{d_name}{group['name']}",
                    kind=UnitKind.district_function_group,
                    parent_id=room_id,
                )
            )
        for t in range(1, city["service_teams_per_district"] + 1):
            team_id = f"{d_id}-t{t}"
            units.append(
                UnitIn(
                    id=team_id,
                    name=city["service_team_name"].format(district=d_name, n=t),
                    kind=UnitKind.service_team,
                    parent_id=room_id,
                )
            )
            for g in range(1, city["service_groups_per_team"] + 1):
                units.append(
                    UnitIn(
                        id=f"{team_id}-g{g}",
                        name=city["service_group_name"].format(district=d_name, team=t, n=g),
                        kind=UnitKind.service_group,
                        parent_id=team_id,
                    )
                )
    return units


def demo_enterprises(
    per_district: int = 12, seed: int = 7, districts: int = DEMO_DISTRICTS
) -> list[EnterpriseIn]:
    city = _city()
    rng = random.Random(seed)
    result = []
    for district in city["districts"][:districts]:
        d_id, d_name = district["district_id"], district["name"]
        for i in range(per_district):
            organisation = "".join(rng.choice(ALPHABET[:10] + "MA") for _ in range(9))
            code = make_code("9", "1", d_id, organisation)
            team = 1 + i % city["service_teams_per_district"]
            group = 1 + (i // city["service_teams_per_district"]) % city["service_groups_per_team"]
            name = f"{rng.choice(_PREFIXES)}{rng.choice(_BRANDS)}{rng.choice(_INDUSTRIES)}有限公司"
            result.append(
                EnterpriseIn(
                    id=code,
                    name=name,
                    district_id=d_id,
                    service_unit_id=f"{d_id}-t{team}-g{group}",
                    address=f"{city['city']['name']}{d_name}{rng.choice(_STREETS)}{rng.randint(1, 3000)}号",
                )
            )
    return result


def demo_rules(district_ids: list[str] | None = None) -> dict[str, Any]:
    """The demo city's routing rules (`PUT /v1/routing/rules` body), for the given districts
    (default: the demo's)."""
    city = _city()
    districts = district_ids or [d["district_id"] for d in city["districts"][:DEMO_DISTRICTS]]
    return {
        "routes": [
            {
                "district_id": district,
                "category": category,
                "lead_unit_id": f"{district}-{lead}",
                "cooperating_unit_ids": [f"{district}-{c}" for c in cooperating],
            }
            for district in districts
            for category, (lead, cooperating) in _LEADS.items()
        ],
        "city_categories": city["city_jurisdiction_categories"],
    }


async def is_empty(store: EventStore) -> bool:
    async with store.db.read() as conn:
        count = (await conn.execute(sa.select(sa.func.count()).select_from(problem_view))).scalar()
        units = (await conn.execute(sa.text("SELECT count(*) FROM units"))).scalar()
    return not count and not units


async def load_demo(
    directory: Directory,
    problems: ProblemService,
    *,
    now: datetime,
    problems_count: int = 42,
    seed: int = 7,
) -> DemoSummary:
    """Load the demo city; `now` anchors the histories (the newest events are hours old)."""
    units = demo_units()
    for unit in units:
        await directory.create_unit(DEMO_CALLER, unit)
    await problems.rules.replace(DEMO_CALLER, demo_rules(), note="演示城市的交办规则")
    enterprises = demo_enterprises()
    for enterprise in enterprises:
        await directory.register_enterprise(DEMO_CALLER, enterprise)
    rng = random.Random(seed)
    city = _city()
    function_groups = [g["suffix"] for g in city["district_function_groups"]]
    departments = [d["id"] for d in city["city_departments"]]
    city_categories = set(city["city_jurisdiction_categories"])
    for i in range(problems_count):
        await _demo_problem(problems, rng, i, enterprises, function_groups, departments, city_categories, now)
    return DemoSummary(units=len(units), enterprises=len(enterprises), problems=problems_count)


async def _demo_problem(
    problems: ProblemService,
    rng: random.Random,
    index: int,
    enterprises: list[EnterpriseIn],
    function_groups: list[str],
    departments: list[str],
    city_categories: set[str],
    now: datetime,
) -> None:
    enterprise = enterprises[index % len(enterprises)]
    category = rng.choice(sorted(_TITLES))
    at = now - timedelta(days=rng.randint(2, 50), hours=rng.randint(0, 8))

    def step(days: float) -> datetime:
        nonlocal at
        at = min(at + timedelta(days=days, minutes=rng.randint(5, 300)), now - timedelta(minutes=30))
        return at

    state, _ = await problems.submit(
        DEMO_CALLER,
        SubmitIn(
            enterprise_id=enterprise.id,
            category=category,
            title=rng.choice(_TITLES[category]),
            description=f"{enterprise.name}反映：{rng.choice(_TITLES[category])}，需要协调解决。",
            urgency="urgent" if index % 9 == 0 else "normal",
            reported_by=f"服务专员{index % 17 + 1:02d}",
            source="demo",
            occurred_at=at,
        ),
    )
    pid = state.id

    async def run(
        command: domain.Command, days: float, units: list[str] | None = None
    ) -> domain.ProblemState:
        when = step(days)
        return await problems.execute(
            DEMO_CALLER, pid, lambda _s: command, occurred_at=when, units=units or []
        )

    scenario = index % 10
    await run(domain.Accept(), 0.2)
    if scenario == 0:  # solved on the spot
        await run(domain.Resolve("服务组现场协调解决"), 1)
        await run(domain.Feedback(5, "满意"), 1)
        return
    if scenario == 1:  # local, still in progress
        await run(domain.Progress("已与企业对接，正在梳理材料"), 1)
        return
    district = enterprise.district_id
    state = await run(domain.Escalate("服务组无法解决，提请区调度室协调"), rng.uniform(0.5, 3))
    if category in city_categories or scenario in (7, 8):
        if state.tier is not Tier.city:
            await run(domain.Escalate("超出区级权限，提请市总调度室"), rng.uniform(0.5, 2))
        if scenario == 8:
            return  # open at the city command room
        lead = rng.choice(departments)
        await run(domain.Assign(lead_unit_id=lead), rng.uniform(0.2, 2), [lead])
        await run(domain.Accept(), 0.5)
        if scenario == 7:
            await run(domain.Resolve("市直部门协调办结"), rng.uniform(2, 10))
            await run(domain.Feedback(4), 1)
        return
    lead = f"{district}-{rng.choice(function_groups)}"
    coop = f"{district}-{rng.choice([g for g in function_groups if not lead.endswith(g)])}"
    await run(
        domain.Assign(lead_unit_id=lead, cooperating_unit_ids=(coop,)),
        rng.uniform(0.2, 2),
        [lead, coop],
    )
    if scenario == 2:
        return  # assigned, waiting to be accepted
    await run(domain.Accept(), 0.5)
    if scenario == 3:
        await run(domain.Progress("牵头单位已召开协调会"), 2)
        return
    if scenario == 4:
        await run(domain.Resolve("已协调办结，企业问题解决"), rng.uniform(2, 8))
        return  # resolved, awaiting feedback
    if scenario == 5:
        await run(domain.Resolve("已协调办结"), rng.uniform(2, 8))
        await run(domain.Feedback(2, "仍未完全解决"), 1)
        return  # reopened
    if scenario == 6:
        review = problems.calendar.business_date(now) + timedelta(days=rng.randint(10, 40))
        await run(
            domain.Defer("需待年度指标下达后办理", (domain.PlanStep("申报指标", review),), review),
            1,
        )
        return
    await run(domain.Resolve("已办结"), rng.uniform(1, 6))
    await run(domain.Feedback(5), 0.5)
