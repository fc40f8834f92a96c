"""Where the current routing rule set comes from (persisted and versioned by the routing work;
until a rule set is stored, the defaults of SPEC §2 apply)."""

from __future__ import annotations

from app.routing.rules import RuleSet


class RulesRepository:
    def __init__(self) -> None:
        self._current = RuleSet()

    async def current(self) -> RuleSet:
        return self._current
