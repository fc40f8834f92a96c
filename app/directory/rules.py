"""The routing rule set: persisted as events on the `routing-rules` stream (one event per
version, so the history of who changed what is the stream itself), with the `routing_rules` read
model written in the same append, and cached per process for the command path.

Until a rule set is stored, version 0 applies: the defaults of SPEC §2 and no routes.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from app.core.clock import Clock
from app.core.db import Database
from app.core.errors import AppError, register
from app.core.requestmeta import RequestMeta, event_metadata
from app.core.security import Caller
from app.directory.service import Directory
from app.directory.tables import routing_rules
from app.directory.watch import StreamWatch
from app.events import ConcurrencyConflict, EventStore, NewEvent, registry
from app.routing.rules import RuleSet, rule_errors

register(
    "invalid_rules",
    422,
    "Invalid routing rules",
    "The rule set names districts, categories or units that do not exist or do not fit: a route's "
    "lead and cooperating units must be active function groups of its district (see `errors`).",
)

RULES_STREAM = "routing-rules"
RULES_CHANGED = registry.register(
    "routing.rules_changed",
    "The routing rule set was replaced: its new version, the rules, and what changed.",
)


class RulesRepository:
    """What `ProblemService` consults per command (`current()`), and the rules API's store."""

    def __init__(
        self, db: Database, store: EventStore, directory: Directory, watch: StreamWatch, clock: Clock
    ) -> None:
        self.db = db
        self.store = store
        self.directory = directory
        self.watch = watch
        self.clock = clock
        self._rules = RuleSet()
        watch.watch(RULES_STREAM, self._reload)

    async def current(self) -> RuleSet:
        """The rule set in force (cached; see `app.directory.watch`)."""
        await self.watch.refresh()
        return self._rules

    async def refresh(self) -> None:
        """Bring this process's routing caches (rules, calendar overrides) up to date."""
        await self.watch.refresh()

    async def _reload(self) -> int:
        row = await self.latest()
        if row is not None:
            self._keep(RuleSet.from_data({**row.rules, "version": row.version}))
        return self._rules.version

    def _keep(self, rules: RuleSet) -> None:
        if rules.version >= self._rules.version:  # a slow reload never undoes a newer write
            self._rules = rules

    # -- reading ---------------------------------------------------------------------------

    async def latest(self) -> Any | None:
        """The stored row of the current version (None: nothing stored, the defaults apply)."""
        return await self.version(None)

    async def version(self, version: int | None) -> Any | None:
        stmt = sa.select(routing_rules).order_by(routing_rules.c.version.desc()).limit(1)
        if version is not None:
            stmt = stmt.where(routing_rules.c.version == version)
        async with self.db.read() as conn:
            return (await conn.execute(stmt)).first()

    async def history(self, *, limit: int, before: int | None = None) -> list[Any]:
        """Versions newest first (without the rules themselves)."""
        stmt = (
            sa.select(*(c for c in routing_rules.c if c.name != "rules"))
            .order_by(routing_rules.c.version.desc())
            .limit(limit)
        )
        if before is not None:
            stmt = stmt.where(routing_rules.c.version < before)
        async with self.db.read() as conn:
            return list((await conn.execute(stmt)).all())

    # -- changing --------------------------------------------------------------------------

    async def replace(
        self,
        caller: Caller,
        data: dict[str, Any],
        *,
        if_match: int | None = None,
        note: str | None = None,
        meta: RequestMeta | None = None,
    ) -> Any | None:
        """Store `data` (`RuleSet.to_data()` without the version) as the next version; returns
        the row of the version now current. A rule set equal to the current one changes nothing.
        `if_match` pins the version the change was made on (else 412)."""
        for _attempt in range(5):
            row = await self.latest()
            current = RuleSet.from_data({**row.rules, "version": row.version}) if row else RuleSet()
            if if_match is not None and if_match != current.version:
                raise AppError(
                    "precondition_failed",
                    f"the rules are at version {current.version}, not {if_match}",
                    current_version=current.version,
                )
            rules = RuleSet.from_data({**data, "version": current.version + 1})
            await self._validate(rules)
            changes = rules.diff(current)
            if not any(changes.values()):
                return row
            stored = {k: v for k, v in rules.to_data().items() if k != "version"}
            event = NewEvent(
                RULES_CHANGED,
                {"version": rules.version, "rules": stored, "changes": changes, "note": note},
                metadata=event_metadata(caller, meta),
            )
            insert = sa.insert(routing_rules).values(
                version=rules.version,
                rules=stored,
                changes=changes,
                note=note,
                changed_at=self.clock.now(),
                changed_by=caller.key_id,
                changed_by_name=caller.name,
            )
            try:
                await self.store.append(RULES_STREAM, current.version, [event], also=[insert])
            except ConcurrencyConflict:
                if if_match is not None:
                    raise AppError(
                        "precondition_failed", "the rules changed while this change was being made"
                    ) from None
                continue
            self._keep(rules)
            self.watch.seen(RULES_STREAM, rules.version)
            return await self.latest()
        raise AppError("contention", "the rules kept changing; try again")

    async def _validate(self, rules: RuleSet) -> None:
        named = {r.lead_unit_id for r in rules.routes}
        named.update(u for r in rules.routes for u in r.cooperating_unit_ids)
        units = await self.directory.units_with_rooms({r.district_id for r in rules.routes}, named)
        errors = rule_errors(rules, units, await self.directory.category_codes())
        if errors:
            raise AppError(
                "invalid_rules",
                "; ".join(message for _, message in errors[:5]) + (" …" if len(errors) > 5 else ""),
                errors=[{"loc": loc, "msg": message, "type": "invalid_rules"} for loc, message in errors],
            )
