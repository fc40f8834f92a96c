"""The routing policy the problem decider consults: deadlines from the work calendar and the
rule set, rooms and units from the tree. Built per command from data already loaded.

It also says when the automatic actions of a problem fall due (reminders, the feedback window),
so that the scheduler and the decider count working days the same way."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from app.routing.calendar import WorkCalendar
from app.routing.rules import RuleSet
from app.routing.tree import Tier, UnitKind, UnitRef


@dataclass(frozen=True, slots=True)
class RouteProposal:
    lead_unit_id: str
    cooperating_unit_ids: tuple[str, ...]
    rule_version: int | None


class RoutingPolicy:
    def __init__(self, calendar: WorkCalendar, rules: RuleSet, units: Mapping[str, UnitRef]) -> None:
        self.calendar = calendar
        self.rules = rules
        self.units = units
        self._rooms: dict[tuple[Tier, str], str | None] = {}

    @property
    def rule_version(self) -> int:
        return self.rules.version

    def deadline(self, start: datetime, tier: Tier, urgency: str) -> datetime:
        return self.calendar.deadline(start, self.rules.working_days(tier, urgency))

    def add_working_days(self, start: datetime, days: int) -> datetime:
        return self.calendar.deadline(start, days)

    def working_days_left(self, now: datetime, deadline: datetime) -> int:
        return self.calendar.working_days_left(now, deadline)

    def review_deadline(self, review_on: date, remaining_working_days: int) -> datetime:
        return self.calendar.end_of_day(self.calendar.add_working_days(review_on, remaining_working_days))

    def business_date(self, instant: datetime) -> date:
        return self.calendar.business_date(instant)

    def escalation_target(self, category: str, tier: Tier) -> Tier | None:
        if tier is Tier.local and category in self.rules.city_categories:
            return Tier.city
        return None

    def room(self, tier: Tier, district_id: str) -> str | None:
        key = (tier, district_id)
        if key not in self._rooms:
            self._rooms[key] = self._find_room(tier, district_id)
        return self._rooms[key]

    def _find_room(self, tier: Tier, district_id: str) -> str | None:
        for unit in self.units.values():
            if tier is Tier.city and unit.kind is UnitKind.city_command_room:
                return unit.id
            if (
                tier is Tier.district
                and unit.kind is UnitKind.district_dispatch_room
                and unit.district_id == district_id
            ):
                return unit.id
        return None

    def unit(self, unit_id: str) -> UnitRef | None:
        return self.units.get(unit_id)

    def proposal(self, district_id: str, category: str, tier: Tier) -> RouteProposal | None:
        if tier is not Tier.district:
            return None
        route = self.rules.route(district_id, category)
        if route is None:
            return None
        return RouteProposal(route.lead_unit_id, route.cooperating_unit_ids, self.rules.version)

    def return_window_ends(self, holder_since: datetime) -> datetime:
        return self.calendar.deadline(holder_since, self.rules.return_window_days)

    def returns_flagged(self, returns: int) -> bool:
        """Whether a problem returned `returns` times is flagged for the commander."""
        return returns > self.rules.max_returns

    def auto_escalates(self, tier: Tier) -> bool:
        return bool(self.rules.auto_escalate.get(tier, False))

    # -- when automatic actions fall due ---------------------------------------------------

    def reminder_at(self, deadline: datetime) -> datetime:
        """The start of the day from which at most `reminder_lead_days` working days are left
        before the deadline's day (催办)."""
        day = self.calendar.working_day_back(
            self.calendar.business_date(deadline), self.rules.reminder_lead_days + 1
        )
        return self.calendar.start_of_day(day)

    def reminder_bound(self, now: datetime) -> datetime:
        """Deadlines before this instant are within the reminder lead time at `now` (the same
        rule as `reminder_at`, turned round for an indexed range query)."""
        today = self.calendar.business_date(now)
        return self.calendar.start_of_day(
            self.calendar.add_working_days(today, self.rules.reminder_lead_days + 1)
        )

    def feedback_closes_at(self, resolved_at: datetime) -> datetime:
        """When a resolved problem without feedback is closed: the end of the feedback window."""
        return self.calendar.deadline(resolved_at, self.rules.feedback_window_days) + timedelta(seconds=1)

    def feedback_bound(self, now: datetime) -> datetime:
        """Problems resolved before this instant have an expired feedback window at `now`."""
        today = self.calendar.business_date(now)
        window = self.rules.feedback_window_days
        if window == 0:
            return self.calendar.start_of_day(today)
        yesterday = today - timedelta(days=1)
        return self.calendar.start_of_day(self.calendar.working_day_back(yesterday, window))
