"""Automatic actions, decided without I/O: what falls due when, as of which instant, once."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.core.errors import AppError
from app.problems import automatic, domain
from app.problems.domain import Status
from app.routing.policy import RoutingPolicy
from app.routing.tree import Tier
from tests.problems.test_decider_properties import check_invariants, steps
from tests.problems.world import (
    CALENDAR,
    DISPATCHER,
    FG1,
    GROUP,
    POLICY,
    RULES,
    T0,
    TZ,
    UNITS,
    Story,
    ctx,
    new_problem,
    submitted,
)

AUTO = RoutingPolicy(CALENDAR, replace(RULES, auto_escalate={Tier.local: True, Tier.district: True}), UNITS)


def city_time(year: int, month: int, day: int, hour: int = 0) -> datetime:
    return datetime(year, month, day, hour, tzinfo=TZ)


def run(state: domain.ProblemState, now: datetime, policy: RoutingPolicy = POLICY) -> list[domain.Fact]:
    return [fact for _, facts in automatic.plan(state, now, policy) for fact in facts]


def fold(state: domain.ProblemState, facts: list[domain.Fact]) -> domain.ProblemState:
    for fact in facts:
        state = domain.evolve(state, fact)
    return state


def test_a_reminder_once_when_the_lead_time_begins() -> None:
    state = new_problem()  # Monday 16 Nov; due at the end of Thursday 19 Nov
    assert run(state, city_time(2026, 11, 17, 23)) == [], "two working days left: too early"
    facts = run(state, city_time(2026, 11, 18, 9))
    assert [f.type for f in facts] == [domain.REMINDED]
    assert facts[0].occurred_at == city_time(2026, 11, 18), "as of the start of the day it fell due"
    assert facts[0].data["kind"] == "deadline" and "2026-11-19T23:59:59+08:00" in facts[0].data["reason"]
    reminded = fold(state, facts)
    assert reminded.reminded_for == state.deadline and reminded.reminders == 1
    assert run(reminded, city_time(2026, 11, 19, 9)) == [], "once per deadline"


def test_overdue_is_marked_once_and_escalates_only_where_the_rule_says_so() -> None:
    state = new_problem()
    friday = city_time(2026, 11, 20, 9)
    facts = run(state, friday)
    assert [f.type for f in facts] == [domain.OVERDUE], "auto-escalation is off by default"
    assert facts[0].occurred_at == city_time(2026, 11, 20), "as of the second after the deadline"
    assert run(fold(state, facts), friday + timedelta(days=3)) == []

    escalated = run(state, friday, AUTO)
    assert [f.type for f in escalated] == [domain.OVERDUE, domain.ESCALATED]
    data = escalated[1].data
    assert (data["from_tier"], data["to_tier"], data["room_unit_id"], data["automatic"]) == (
        "local",
        "district",
        "r1",
        True,
    )
    assert data["reason"].startswith("overdue at the local tier")
    # The district's 10 working days count from the day it fell due (Friday 20 Nov).
    assert data["deadline"] == CALENDAR.deadline(city_time(2026, 11, 20), 10).isoformat()


def test_a_city_jurisdiction_category_goes_straight_to_the_city_room() -> None:
    facts = run(new_problem(category="demolition"), city_time(2026, 11, 20, 9), AUTO)
    assert facts[1].data["to_tier"] == "city" and facts[1].data["room_unit_id"] == "cc"


def test_a_problem_long_past_its_deadlines_is_routed_as_of_their_dates() -> None:
    state = new_problem()
    facts = run(state, city_time(2027, 1, 15, 9), AUTO)
    assert [f.type for f in facts] == [
        domain.OVERDUE,
        domain.ESCALATED,
        domain.OVERDUE,
        domain.ESCALATED,
        domain.OVERDUE,
        domain.SUPERVISED,
    ]
    assert [f.occurred_at.astimezone(TZ).isoformat() for f in facts[::2]] == [
        "2026-11-20T00:00:00+08:00",  # after the local deadline (Thursday 19 Nov)
        "2026-12-05T00:00:00+08:00",  # after the district's 10 working days (Friday 4 Dec)
        # after the city's 20: 2027 has no official data yet, so Friday 1 January counts
        "2027-01-02T00:00:00+08:00",
    ]
    final = fold(state, facts)
    assert (final.tier, final.status, final.escalations, final.supervisions) == (Tier.city, Status.open, 2, 1)
    assert facts[-1].data["automatic"] is True and facts[-1].data["by_role"] == "system"
    assert run(final, city_time(2027, 1, 15, 9), AUTO) == []


def test_history_that_shows_the_escalation_is_not_escalated_again() -> None:
    local_only = RoutingPolicy(CALENDAR, replace(RULES, auto_escalate={Tier.local: True}), UNITS)
    submitted_at = T0 - timedelta(days=40)
    # An imported history: escalated by hand a day after submission, then nothing for weeks.
    story = Story(new_problem(at=submitted_at), at=submitted_at)
    story.do(GROUP, domain.Escalate("需区级协调"), after=timedelta(days=1))
    facts = run(story.state, T0, local_only)
    assert [(f.type, f.data["tier"]) for f in facts] == [(domain.OVERDUE, "district")]
    # Without the escalation in its history, it is escalated as of its local deadline.
    unescalated = run(new_problem(at=submitted_at), T0, local_only)
    assert [f.type for f in unescalated][:2] == [domain.OVERDUE, domain.ESCALATED]
    assert unescalated[1].occurred_at == new_problem(at=submitted_at).deadline + timedelta(seconds=1)  # type: ignore[operator]


def test_the_feedback_window_closes_a_resolved_problem() -> None:
    story = Story()
    story.do(GROUP, domain.Resolve("现场解决"))  # Monday 16 Nov, 10:00
    assert run(story.state, city_time(2026, 11, 23, 23)) == [], "five working days: through Monday 23 Nov"
    facts = run(story.state, city_time(2026, 11, 24, 9))
    assert [f.type for f in facts] == [domain.CLOSED]
    assert facts[0].occurred_at == city_time(2026, 11, 24)
    assert facts[0].data == {
        "reason": "no feedback within 5 working days of the resolution",
        "automatic": True,
        "status_note": "已销号",
    }


def test_a_deferral_gets_a_reminder_on_its_review_date_and_is_not_overdue_before() -> None:
    story = Story()
    story.do(GROUP, domain.Escalate("x"))
    story.do(DISPATCHER, domain.Assign())
    story.do(FG1, domain.Accept())
    review = date(2026, 12, 21)
    story.do(FG1, domain.Defer("待指标下达", (domain.PlanStep("申报", date(2026, 12, 10)),), review))
    assert run(story.state, city_time(2026, 12, 20, 23)) == []
    facts = run(story.state, city_time(2026, 12, 21, 9))
    assert [(f.type, f.data["kind"], f.data["review_on"]) for f in facts] == [
        (domain.REMINDED, "review", "2026-12-21")
    ]
    assert fold(story.state, facts).review_reminded_on == review
    assert run(fold(story.state, facts), city_time(2026, 12, 21, 18)) == []


def test_the_same_state_gives_the_same_events() -> None:
    state = new_problem()
    first = automatic.plan(state, city_time(2026, 12, 30, 9), AUTO)
    second = automatic.plan(state, city_time(2026, 12, 30, 20), AUTO)
    assert first == second, "decided as of the instants they fell due, not of the clock"
    ids = [automatic.event_id("p1", a, i) for a, facts in first for i, _ in enumerate(facts)]
    assert len(set(ids)) == len(ids) == 4
    assert ids == [automatic.event_id("p1", a, i) for a, facts in second for i, _ in enumerate(facts)]


def test_a_refused_action_refuses_the_whole_plan() -> None:
    # No district room in the units the policy knows: the escalation cannot happen, and the
    # overdue mark decided with it must not be appended alone (the next tick tries again).
    no_rooms = RoutingPolicy(CALENDAR, AUTO.rules, {k: u for k, u in UNITS.items() if k != "r1"})
    with pytest.raises(AppError) as info:
        automatic.plan(new_problem(), city_time(2026, 11, 20, 9), no_rooms)
    assert info.value.code == "routing_unavailable"


@settings(max_examples=300, deadline=None)
@given(
    steps=steps,
    category=st.sampled_from(["utilities", "demolition", "financing"]),
    pauses=st.lists(st.integers(0, 30 * 24), min_size=1, max_size=5),
)
def test_after_a_plan_nothing_more_is_due(steps: list, category: str, pauses: list[int]) -> None:
    state, _ = submitted(category)
    at = T0
    for i, (actor, command, minutes) in enumerate(steps):
        at += timedelta(minutes=minutes)
        if i % 7 == 0:  # now and then, the scheduler runs (after a pause of up to 30 days)
            at += timedelta(hours=pauses[i % len(pauses)])
            state = fold(state, run(state, at, AUTO))
            check_invariants(state)
            assert automatic.due(state, at, AUTO) == []
            assert not state.is_overdue(at) or state.overdue_noted_for == state.deadline
        try:
            state = fold(state, domain.decide(state, command, ctx(actor, at)))
        except AppError:
            continue
        check_invariants(state)
