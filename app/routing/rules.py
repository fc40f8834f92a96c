"""Routing rules as data: versioned, validated, evaluated without I/O.

A rule set maps (district, category) to the district's lead and cooperating units, names the
categories of city jurisdiction (escalating from local goes straight to the city command room),
and sets deadlines per tier and urgency, automatic escalation, and the feedback, return and
reminder windows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Set
from dataclasses import dataclass, field
from typing import Any

from app.routing.tree import Tier, UnitKind, UnitRef

DEFAULT_DEADLINES: dict[Tier, int] = {Tier.local: 3, Tier.district: 10, Tier.city: 20}


@dataclass(frozen=True, slots=True)
class Route:
    district_id: str
    category: str
    lead_unit_id: str
    cooperating_unit_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class RuleSet:
    version: int = 0
    routes: tuple[Route, ...] = ()
    city_categories: frozenset[str] = frozenset()
    deadlines: Mapping[Tier, int] = field(default_factory=lambda: dict(DEFAULT_DEADLINES))
    urgent_factor: float = 0.5
    auto_escalate: Mapping[Tier, bool] = field(
        default_factory=lambda: {Tier.local: False, Tier.district: False}
    )
    feedback_window_days: int = 5
    return_window_days: int = 1
    max_returns: int = 2
    reminder_lead_days: int = 1
    response_window_days: int = 1

    def route(self, district_id: str, category: str) -> Route | None:
        for route in self.routes:
            if route.district_id == district_id and route.category == category:
                return route
        for route in self.routes:  # a rule for "*" covers every category of the district
            if route.district_id == district_id and route.category == "*":
                return route
        return None

    def working_days(self, tier: Tier, urgency: str) -> int:
        days = self.deadlines.get(tier, DEFAULT_DEADLINES[tier])
        if urgency == "urgent":
            days = math.ceil(days * self.urgent_factor)
        return max(1, days)

    def to_data(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "routes": [
                {
                    "district_id": r.district_id,
                    "category": r.category,
                    "lead_unit_id": r.lead_unit_id,
                    "cooperating_unit_ids": list(r.cooperating_unit_ids),
                }
                for r in self.routes
            ],
            "city_categories": sorted(self.city_categories),
            "deadlines": {t.value: d for t, d in self.deadlines.items()},
            "urgent_factor": self.urgent_factor,
            "auto_escalate": {t.value: v for t, v in self.auto_escalate.items()},
            "feedback_window_days": self.feedback_window_days,
            "return_window_days": self.return_window_days,
            "max_returns": self.max_returns,
            "reminder_lead_days": self.reminder_lead_days,
            "response_window_days": self.response_window_days,
        }

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> RuleSet:
        defaults = cls()
        return cls(
            version=int(data.get("version", 0)),
            routes=tuple(
                Route(
                    r["district_id"],
                    r["category"],
                    r["lead_unit_id"],
                    tuple(r.get("cooperating_unit_ids", ())),
                )
                for r in data.get("routes", ())
            ),
            city_categories=frozenset(data.get("city_categories", ())),
            deadlines={
                Tier(k): int(v)
                for k, v in data.get("deadlines", {t.value: d for t, d in DEFAULT_DEADLINES.items()}).items()
            },
            urgent_factor=float(data.get("urgent_factor", defaults.urgent_factor)),
            auto_escalate={
                Tier(k): bool(v)
                for k, v in data.get("auto_escalate", {"local": False, "district": False}).items()
            },
            feedback_window_days=int(data.get("feedback_window_days", defaults.feedback_window_days)),
            return_window_days=int(data.get("return_window_days", defaults.return_window_days)),
            max_returns=int(data.get("max_returns", defaults.max_returns)),
            reminder_lead_days=int(data.get("reminder_lead_days", defaults.reminder_lead_days)),
            response_window_days=int(data.get("response_window_days", defaults.response_window_days)),
        )

    def diff(self, before: RuleSet) -> dict[str, Any]:
        """What changed from `before` to this rule set: the settings by name, and the routes
        added, removed or changed by (district, category)."""
        old, new = before.to_data(), self.to_data()
        fields = sorted(k for k in new if k not in ("version", "routes") and new[k] != old[k])
        old_routes = {(r.district_id, r.category): r for r in before.routes}
        new_routes = {(r.district_id, r.category): r for r in self.routes}

        def keys(which: Set[tuple[str, str]]) -> list[str]:
            return [f"{d}/{c}" for d, c in sorted(which)]

        return {
            "settings": fields,
            "routes_added": keys(new_routes.keys() - old_routes.keys()),
            "routes_removed": keys(old_routes.keys() - new_routes.keys()),
            "routes_changed": keys(
                {k for k in new_routes.keys() & old_routes.keys() if new_routes[k] != old_routes[k]}
            ),
        }


def rule_errors(
    rules: RuleSet, units: Mapping[str, UnitRef], categories: Set[str]
) -> list[tuple[list[str | int], str]]:
    """What is wrong with a rule set, given the units it names and the known category codes:
    (location in the request body, message) pairs; empty when the rule set is valid.

    A route names a district that has a dispatch room, a known category (or "*"), and active
    district function groups of that district as its lead and cooperating units."""
    errors: list[tuple[list[str | int], str]] = []
    districts = {u.district_id for u in units.values() if u.kind is UnitKind.district_dispatch_room}
    seen: set[tuple[str, str]] = set()
    for i, route in enumerate(rules.routes):
        where: list[str | int] = ["body", "routes", i]
        if route.district_id not in districts:
            errors.append(([*where, "district_id"], f"district {route.district_id} has no dispatch room"))
        if route.category != "*" and route.category not in categories:
            errors.append(([*where, "category"], f"category {route.category} does not exist"))
        if (route.district_id, route.category) in seen:
            errors.append((where, f"a second rule for {route.district_id}/{route.category}"))
        seen.add((route.district_id, route.category))
        named: list[tuple[list[str | int], str]] = [([*where, "lead_unit_id"], route.lead_unit_id)]
        named += [
            ([*where, "cooperating_unit_ids", j], unit_id)
            for j, unit_id in enumerate(route.cooperating_unit_ids)
        ]
        for loc, unit_id in named:
            problem = _unit_problem(units.get(unit_id), unit_id, route.district_id)
            if problem:
                errors.append((loc, problem))
    for category in sorted(rules.city_categories - categories):
        errors.append((["body", "city_categories"], f"category {category} does not exist"))
    return errors


def _unit_problem(unit: UnitRef | None, unit_id: str, district_id: str) -> str | None:
    if unit is None:
        return f"unit {unit_id} does not exist"
    if not unit.active:
        return f"unit {unit_id} is inactive"
    if unit.kind is not UnitKind.district_function_group:
        return f"unit {unit_id} is a {unit.kind.value}, not a district_function_group"
    if unit.district_id != district_id:
        return f"unit {unit_id} belongs to district {unit.district_id}, not {district_id}"
    return None
