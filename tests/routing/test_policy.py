"""The routing policy: when automatic actions fall due (and the range queries that find them
agree), and what makes a rule set valid."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import pytest

from app.routing.policy import RoutingPolicy
from app.routing.rules import Route, RuleSet, rule_errors
from tests.problems.world import CALENDAR, RULES, TZ, UNITS

DAYS = [date(2026, 9, 20) + timedelta(days=i) for i in range(140)]  # National Day, the year's end


@pytest.mark.parametrize("lead", [0, 1, 3])
def test_the_reminder_instant_and_the_reminder_range_agree(lead: int) -> None:
    policy = RoutingPolicy(CALENDAR, replace(RULES, reminder_lead_days=lead), UNITS)
    for today in DAYS[:100]:
        now = datetime(today.year, today.month, today.day, 12, tzinfo=TZ)
        bound = policy.reminder_bound(now)
        for deadline_day in DAYS:
            deadline = CALENDAR.end_of_day(deadline_day)
            if deadline < now:
                continue
            due = policy.reminder_at(deadline) <= now
            assert due == (deadline < bound), (today, deadline_day)
            assert due == (CALENDAR.working_days_left(now, deadline) <= lead), (today, deadline_day)


@pytest.mark.parametrize("window", [0, 1, 5])
def test_the_feedback_window_and_its_range_agree(window: int) -> None:
    policy = RoutingPolicy(CALENDAR, replace(RULES, feedback_window_days=window), UNITS)
    for today in DAYS[40:]:
        now = datetime(today.year, today.month, today.day, 12, tzinfo=TZ)
        bound = policy.feedback_bound(now)
        for resolved_day in DAYS[:100]:
            resolved_at = datetime(resolved_day.year, resolved_day.month, resolved_day.day, 15, tzinfo=TZ)
            if resolved_at > now:
                continue
            due = policy.feedback_closes_at(resolved_at) <= now
            assert due == (resolved_at < bound), (today, resolved_day)


def test_the_feedback_window_counts_working_days() -> None:
    policy = RoutingPolicy(CALENDAR, RULES, UNITS)
    # Resolved on Wednesday 30 Sep 2026: 1–7 October are holidays, Saturday 10 Oct is a make-up day.
    closes = policy.feedback_closes_at(datetime(2026, 9, 30, 15, tzinfo=TZ))
    # The five working days: Thursday 8, Friday 9, Saturday 10, Monday 12, Tuesday 13 October.
    assert closes.astimezone(TZ).isoformat() == "2026-10-14T00:00:00+08:00"
    assert closes.tzinfo is UTC


def test_returns_are_flagged_past_the_maximum() -> None:
    policy = RoutingPolicy(CALENDAR, RULES, UNITS)
    assert [policy.returns_flagged(n) for n in (1, 2, 3)] == [False, False, True]


def test_a_valid_rule_set_has_no_errors() -> None:
    assert rule_errors(RULES, UNITS, {"utilities", "demolition"}) == []


def test_rule_errors_say_where_and_what() -> None:
    rules = RuleSet(
        routes=(
            Route("D1", "utilities", "fg1", ("fg9", "g1")),  # another district's group; a service group
            Route("D1", "utilities", "fg2"),  # a second rule for the same pair
            Route("D9", "nope", "ghost"),  # no such district, category or unit
        ),
        city_categories=frozenset({"demolition", "unheard_of"}),
    )
    found = rule_errors(rules, UNITS, {"utilities", "demolition"})
    errors = {tuple(loc): message for loc, message in found}
    assert errors == {
        ("body", "routes", 0, "cooperating_unit_ids", 0): "unit fg9 belongs to district D2, not D1",
        (
            "body",
            "routes",
            0,
            "cooperating_unit_ids",
            1,
        ): "unit g1 is a service_group, not a district_function_group",
        ("body", "routes", 1): "a second rule for D1/utilities",
        ("body", "routes", 2, "district_id"): "district D9 has no dispatch room",
        ("body", "routes", 2, "category"): "category nope does not exist",
        ("body", "routes", 2, "lead_unit_id"): "unit ghost does not exist",
        ("body", "city_categories"): "category unheard_of does not exist",
    }
    inactive = {**UNITS, "fg1": replace(UNITS["fg1"], active=False)}
    assert rule_errors(RULES, inactive, {"utilities"})[0][1] == "unit fg1 is inactive"


def test_a_diff_names_what_changed() -> None:
    after = replace(
        RULES,
        routes=(Route("D1", "utilities", "fg2"), Route("D2", "*", "fg9")),
        max_returns=4,
        deadlines={**RULES.deadlines},
    )
    assert after.diff(RULES) == {
        "settings": ["max_returns"],
        "routes_added": ["D2/*"],
        "routes_removed": [],
        "routes_changed": ["D1/utilities"],
    }
    assert RULES.diff(RULES) == {
        "settings": [],
        "routes_added": [],
        "routes_removed": [],
        "routes_changed": [],
    }


def test_a_wildcard_route_covers_the_districts_other_categories() -> None:
    rules = RuleSet(routes=(Route("D1", "utilities", "fg1"), Route("D1", "*", "fg2")))
    assert rules.route("D1", "utilities").lead_unit_id == "fg1"  # type: ignore[union-attr]
    assert rules.route("D1", "land").lead_unit_id == "fg2"  # type: ignore[union-attr]
    assert rules.route("D2", "land") is None
