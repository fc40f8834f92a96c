"""A pure, in-memory routing world for decider tests: real policy, calendar and units."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from app.core.security import Role
from app.problems import domain
from app.problems.domain import Actor, Context, ProblemState
from app.routing.calendar import WorkCalendar
from app.routing.policy import RoutingPolicy
from app.routing.rules import Route, RuleSet
from app.routing.tree import UnitKind, UnitRef

TZ = ZoneInfo("Asia/Shanghai")
CALENDAR = WorkCalendar(TZ)
T0 = datetime(2026, 11, 16, 1, 0, tzinfo=UTC)  # Monday 09:00 in the city

UNITS = {
    u.id: u
    for u in [
        UnitRef("cc", "市总调度室", UnitKind.city_command_room, None, None, "cc"),
        UnitRef("cc-d1", "市直部门", UnitKind.city_department, None, "cc", "cc/cc-d1"),
        UnitRef("cc-d2", "市直部门二", UnitKind.city_department, None, "cc", "cc/cc-d2"),
        UnitRef("r1", "区调度室", UnitKind.district_dispatch_room, "D1", "cc", "cc/r1"),
        UnitRef("fg1", "职能组一", UnitKind.district_function_group, "D1", "r1", "cc/r1/fg1"),
        UnitRef("fg2", "职能组二", UnitKind.district_function_group, "D1", "r1", "cc/r1/fg2"),
        UnitRef("t1", "服务队", UnitKind.service_team, "D1", "r1", "cc/r1/t1"),
        UnitRef("g1", "服务组", UnitKind.service_group, "D1", "t1", "cc/r1/t1/g1"),
        UnitRef("r2", "另一区调度室", UnitKind.district_dispatch_room, "D2", "cc", "cc/r2"),
        UnitRef("fg9", "另一区职能组", UnitKind.district_function_group, "D2", "r2", "cc/r2/fg9"),
    ]
}
RULES = RuleSet(
    version=3,
    routes=(Route("D1", "utilities", "fg1", ("fg2",)),),
    city_categories=frozenset({"demolition"}),
)
POLICY = RoutingPolicy(CALENDAR, RULES, UNITS)

ADMIN = Actor("admin", Role.admin)
COMMANDER = Actor("cmd", Role.commander)
DISPATCHER = Actor("disp", Role.dispatcher, district_id="D1")
OTHER_DISPATCHER = Actor("disp2", Role.dispatcher, district_id="D2")
GROUP = Actor("g1", Role.handler, unit_id="g1", district_id="D1", subtree=frozenset({"g1"}))
TEAM = Actor("t1", Role.handler, unit_id="t1", district_id="D1", subtree=frozenset({"t1", "g1"}))
FG1 = Actor("fg1", Role.handler, unit_id="fg1", district_id="D1", subtree=frozenset({"fg1"}))
FG2 = Actor("fg2", Role.handler, unit_id="fg2", district_id="D1", subtree=frozenset({"fg2"}))
DEPT = Actor("cc-d1", Role.handler, unit_id="cc-d1", subtree=frozenset({"cc-d1"}))
PORTAL = Actor("portal", Role.portal, source="portal-a")
OTHER_PORTAL = Actor("portal-b", Role.portal, source="portal-b")
VIEWER = Actor("viewer", Role.viewer)


def ctx(actor: Actor, at: datetime) -> Context:
    return Context(at, actor, POLICY)


def submitted(
    category: str = "utilities", at: datetime = T0, urgency: str = "normal"
) -> tuple[ProblemState, list[domain.Fact]]:
    """A problem submitted by PORTAL for enterprise E1 (district D1, group g1), and its facts."""
    facts = domain.submit(
        domain.Submit(
            problem_id="p1",
            enterprise=domain.EnterpriseInfo("E1", "企业", "D1", "g1"),
            category=category,
            title="t",
            description="d",
            urgency=domain.Urgency(urgency),
            source="portal-a",
        ),
        ctx(PORTAL, at),
    )
    state = domain.fold("p1", facts)
    assert state is not None
    return state, facts


def new_problem(category: str = "utilities", at: datetime = T0, urgency: str = "normal") -> ProblemState:
    return submitted(category, at, urgency)[0]


class Story:
    """Apply commands one after another, checking that folding the facts reproduces the state."""

    def __init__(self, state: ProblemState | None = None, at: datetime = T0) -> None:
        self.state = state or new_problem(at=at)
        self.at = at
        self.facts: list[domain.Fact] = []

    def do(
        self, actor: Actor, command: domain.Command, *, after: timedelta = timedelta(hours=1)
    ) -> ProblemState:
        self.at += after
        facts = domain.decide(self.state, command, ctx(actor, self.at))
        for fact in facts:
            self.state = domain.evolve(self.state, fact)
        self.facts += facts
        return self.state
