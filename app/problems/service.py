"""Problem commands: load the stream → decide → append the facts together with the problem view.

Optimistic concurrency throughout: a command decided on a stale state loses the append race
and, unless the client pinned the version with `If-Match`, is decided again on the fresh state.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
import sqlalchemy as sa

from app.core.clock import Clock
from app.core.db import Database
from app.core.errors import AppError, register
from app.core.pagination import decode_cursor, encode_cursor
from app.core.requestmeta import RequestMeta, event_metadata
from app.core.security import SYSTEM, Caller, Role
from app.directory.rules import RulesRepository
from app.directory.service import Directory, SubmissionRefs
from app.events import ConcurrencyConflict, EventStore, NewEvent, RecordedEvent, registry
from app.problems import automatic, domain
from app.problems.domain import Actor, Command, Context, Fact, ProblemState
from app.problems.projection import view_writes
from app.problems.schemas import SubmitIn
from app.projections.problem_view import ProblemFilter, list_query, problem_view, scope_filter
from app.routing.calendar import WorkCalendar
from app.routing.policy import RoutingPolicy
from app.routing.tree import Tier

register(
    "unknown_enterprise",
    422,
    "Unknown enterprise",
    "The enterprise is not registered (or not in the caller's district).",
)
register(
    "import_permission_required",
    403,
    "Import permission required",
    "Only keys with the import permission may give occurred_at.",
)
register(
    "occurred_at_in_future",
    422,
    "occurred_at in the future",
    "occurred_at may not lie more than 5 minutes ahead of the server clock.",
)

for _type, _description in domain.EVENT_DESCRIPTIONS.items():
    registry.register(_type, _description)

FUTURE_TOLERANCE = timedelta(minutes=5)
MAX_ATTEMPTS = 12
_IDEMPOTENCY_NAMESPACE = uuid.UUID("0e4b6f8a-1c2d-4e5f-8a9b-7c6d5e4f3a21")
SUBMITTERS = (Role.portal, Role.handler, Role.dispatcher, Role.commander, Role.admin)


def stream_id(problem_id: str) -> str:
    return f"problem-{problem_id}"


def facts_of(events: Sequence[RecordedEvent]) -> list[Fact]:
    return [Fact(e.type, e.data, e.occurred_at) for e in events]


# Fields added after the first release count in the hash only when given, so a request repeated
# across the upgrade still matches the hash stored with its first submission.
_LATER_FIELDS = ("location", "media_url", "contact")


def request_hash(body: SubmitIn) -> str:
    fields = body.model_dump(mode="json", exclude={f for f in _LATER_FIELDS if getattr(body, f) is None})
    canonical = orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()


class ProblemService:
    def __init__(
        self,
        db: Database,
        store: EventStore,
        directory: Directory,
        rules: RulesRepository,
        calendar: WorkCalendar,
        clock: Clock,
    ) -> None:
        self.db = db
        self.store = store
        self.directory = directory
        self.rules = rules
        self.calendar = calendar
        self.clock = clock

    # -- building blocks -------------------------------------------------------------------

    async def actor(self, caller: Caller) -> Actor:
        subtree: frozenset[str] = frozenset()
        if caller.role is Role.handler and caller.unit_id:
            subtree = await self.directory.subtree(caller.unit_id)
        return Actor(
            id=caller.key_id,
            role=caller.role,
            unit_id=caller.unit_id,
            district_id=caller.district_id,
            source=caller.source,
            subtree=subtree,
        )

    async def policy(self, district_id: str, unit_ids: Sequence[str] = ()) -> RoutingPolicy:
        rules = await self.rules.current()
        units = await self.directory.units_for_routing(district_id, unit_ids)
        return RoutingPolicy(self.calendar, rules, units)

    def deadline_from(self, value: datetime | date | None) -> datetime | None:
        """A deadline given as a date means the end of that day in the city's time zone."""
        if value is None:
            return None
        if isinstance(value, datetime):
            return value.astimezone(UTC)
        return self.calendar.end_of_day(value)

    def _when(self, caller: Caller, occurred_at: datetime | None, state: ProblemState | None) -> datetime:
        now = self.clock.now()
        if occurred_at is None:
            # Clocks of several servers differ by milliseconds; a live command never lands
            # before the stream's latest event.
            return max(now, state.updated_at) if state else now
        if not caller.can_import:
            raise AppError("import_permission_required", "occurred_at needs the import permission")
        if occurred_at > now + FUTURE_TOLERANCE:
            raise AppError("occurred_at_in_future", "occurred_at lies more than 5 minutes in the future")
        return occurred_at.astimezone(UTC)

    async def load(self, problem_id: str) -> tuple[ProblemState | None, list[RecordedEvent]]:
        events = await self.store.read_stream(stream_id(problem_id))
        return domain.fold(problem_id, facts_of(events)), events

    def _events(
        self, facts: Sequence[Fact], caller: Caller, meta: RequestMeta | None, **extra: Any
    ) -> list[NewEvent]:
        metadata = event_metadata(caller, meta, **extra)
        return [NewEvent(f.type, f.data, metadata=metadata, occurred_at=f.occurred_at) for f in facts]

    # -- reading ---------------------------------------------------------------------------

    async def get(self, caller: Caller, problem_id: str) -> ProblemState:
        state, _ = await self.load(problem_id)
        if state is None or not domain.can_see(state, await self.actor(caller)):
            raise AppError("not_found", f"problem {problem_id} does not exist")
        return state

    async def get_row(self, caller: Caller, problem_id: str) -> Any:
        await self.rules.refresh()  # the aging shown counts with the current calendar
        subtree = (await self.actor(caller)).subtree
        stmt = sa.select(problem_view).where(problem_view.c.id == problem_id)
        scope = scope_filter(caller, subtree)
        if scope is not None:
            stmt = stmt.where(scope)
        async with self.db.read() as conn:
            row = (await conn.execute(stmt)).first()
        if row is None:
            raise AppError("not_found", f"problem {problem_id} does not exist")
        return row

    async def history(self, caller: Caller, problem_id: str) -> list[RecordedEvent]:
        state, events = await self.load(problem_id)
        if state is None or not domain.can_see(state, await self.actor(caller)):
            raise AppError("not_found", f"problem {problem_id} does not exist")
        return events

    async def list(
        self,
        caller: Caller,
        flt: ProblemFilter,
        *,
        limit: int,
        cursor: str | None,
        now: datetime | None = None,
    ) -> tuple[list[Any], str | None]:
        await self.rules.refresh()  # the aging shown counts with the current calendar
        actor = await self.actor(caller)
        key = decode_cursor(cursor, 2)
        after = None
        if key is not None:
            try:
                after = (datetime.fromisoformat(str(key[0])), str(key[1]))
            except ValueError as exc:
                raise AppError("invalid_cursor", "the cursor is not one this service issued") from exc
        stmt = list_query(
            flt,
            scope_filter(caller, actor.subtree),
            now or self.clock.now(),
            after=after,
            limit=limit + 1,
        )
        async with self.db.read() as conn:
            rows = list((await conn.execute(stmt)).all())
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = (
            encode_cursor([rows[-1].submitted_at.isoformat(), rows[-1].id]) if more and rows else None
        )
        return rows, next_cursor

    # -- submitting ------------------------------------------------------------------------

    async def submit(
        self,
        caller: Caller,
        body: SubmitIn,
        meta: RequestMeta | None = None,
        *,
        idempotency_key: str | None = None,
        problem_id: str | None = None,
        refs: SubmissionRefs | None = None,
    ) -> tuple[ProblemState, bool]:
        """Record a new problem; returns (state, created). With an Idempotency-Key the same key
        and body return the first result instead of a second problem. `problem_id` (ledger
        imports) chooses the id; the same id with the same body is a replay, like a key. `refs`:
        what `Directory.for_submission` returns for this body and caller, when the caller read
        it already (`Directory.for_keyed_submission`, with the caller's key)."""
        if caller.role not in SUBMITTERS:
            raise AppError(
                "forbidden",
                f"a {caller.role} key may not submit problems" if caller.role else "forbidden",
            )
        digest = request_hash(body)
        if problem_id is not None or idempotency_key is not None:
            problem_id = problem_id or str(
                uuid.uuid5(_IDEMPOTENCY_NAMESPACE, f"{caller.key_id}\n{idempotency_key}")
            )
            replay = await self._replay(problem_id, digest)
            if replay is not None:
                return replay, False
        else:
            problem_id = str(uuid.uuid4())

        reporter = body.reporter_unit_id or (caller.unit_id if caller.role is Role.handler else None)
        if refs is None:
            refs = await self.directory.for_submission(body.enterprise_id.upper(), body.category, reporter)
        enterprise = refs.enterprise
        if enterprise is None or (
            caller.role in (Role.dispatcher, Role.handler) and enterprise.district_id != caller.district_id
        ):
            raise AppError("unknown_enterprise", f"enterprise {body.enterprise_id} is not registered")
        if not refs.category_active:
            raise AppError("unknown_category", f"category {body.category} does not exist or is inactive")
        if caller.role is Role.portal:
            if body.source and body.source != caller.source:
                raise AppError("forbidden", "a portal submits under its own source")
            source = caller.source
        else:
            source = body.source
        actor = await self.actor(caller)
        if caller.role is Role.handler and reporter not in actor.subtree:
            # A handler reports for its own unit (or one below it), never in another unit's name.
            raise AppError("forbidden", "a handler key reports as its own unit or a unit below it")
        if reporter is not None:
            unit = refs.units.get(reporter)
            if unit is None or unit.district_id != enterprise.district_id or unit.tier is not Tier.local:
                raise AppError(
                    "unknown_unit",
                    f"reporter unit {reporter} is not a local unit of district {enterprise.district_id}",
                )

        when = self._when(caller, body.occurred_at, None)
        policy = RoutingPolicy(self.calendar, await self.rules.current(), refs.units)
        command = domain.Submit(
            problem_id=problem_id,
            enterprise=domain.EnterpriseInfo(
                enterprise.id, enterprise.name, enterprise.district_id, enterprise.service_unit_id
            ),
            category=body.category,
            title=body.title,
            description=body.description,
            urgency=body.urgency,
            source=source,
            reported_by=body.reported_by,
            reporter_unit_id=reporter,
            location=body.location.model_dump(exclude_none=True) if body.location else None,
            media_url=body.media_url,
            contact=body.contact.model_dump(exclude_none=True) if body.contact else None,
        )
        facts = domain.submit(command, Context(when, actor, policy))
        state = domain.fold(problem_id, facts)
        assert state is not None
        extra: dict[str, Any] = {"request_hash": digest}
        if idempotency_key is not None:
            extra["idempotency_key"] = idempotency_key
        if body.occurred_at is not None:
            extra["imported"] = True
        events = self._events(facts, caller, meta, **extra)
        try:
            await self.store.append(
                stream_id(problem_id), 0, events, also=view_writes(self.db.backend, None, state)
            )
        except ConcurrencyConflict:
            # The same Idempotency-Key, a moment earlier, in a concurrent request.
            replay = await self._replay(problem_id, digest)
            if replay is None:
                raise
            return replay, False
        return state, True

    async def _replay(self, problem_id: str, digest: str) -> ProblemState | None:
        state, events = await self.load(problem_id)
        if state is None:
            return None
        if events[0].metadata.get("request_hash") != digest:
            raise AppError(
                "idempotency_key_reused",
                "this Idempotency-Key was used with a different request body",
            )
        return state

    # -- commands --------------------------------------------------------------------------

    async def execute(
        self,
        caller: Caller,
        problem_id: str,
        build: Callable[[ProblemState], Command],
        *,
        occurred_at: datetime | None = None,
        if_match: int | None = None,
        meta: RequestMeta | None = None,
        units: Sequence[str] = (),
    ) -> ProblemState:
        """Decide and append `build(state)` on the problem; retries on a concurrent append
        unless `if_match` pins the version (then 412)."""
        actor = await self.actor(caller)
        for attempt in range(MAX_ATTEMPTS):
            state, _ = await self.load(problem_id)
            if state is None or not domain.can_see(state, actor):
                raise AppError("not_found", f"problem {problem_id} does not exist")
            if if_match is not None and if_match != state.version:
                raise AppError(
                    "precondition_failed",
                    f"the problem is at version {state.version}, not {if_match}",
                    current_version=state.version,
                )
            when = self._when(caller, occurred_at, state)
            command = build(state)
            wanted = list(units)
            proposal_rules = await self.rules.current()
            route = proposal_rules.route(state.district_id, state.category)
            if route is not None:
                wanted += [route.lead_unit_id, *route.cooperating_unit_ids]
            policy = await self.policy(state.district_id, wanted)
            facts = domain.decide(state, command, Context(when, actor, policy))
            new_state = state
            for fact in facts:
                new_state = domain.evolve(new_state, fact)
            extra = {"imported": True} if occurred_at is not None else {}
            events = self._events(facts, caller, meta, **extra)
            try:
                await self.store.append(
                    stream_id(problem_id),
                    state.version,
                    events,
                    also=view_writes(self.db.backend, state, new_state),
                )
            except ConcurrencyConflict:
                if if_match is not None:
                    raise AppError(
                        "precondition_failed",
                        "the problem changed while the command was being applied",
                    ) from None
                await asyncio.sleep(random.uniform(0, 0.002 * (attempt + 1)))
                continue
            return new_state
        raise AppError("contention", f"problem {problem_id} kept changing; try again")

    # -- automatic actions -----------------------------------------------------------------

    async def automatic(
        self, problem_id: str, now: datetime, *, import_settle: timedelta = timedelta(0)
    ) -> Sequence[Fact]:
        """Append the automatic actions due on the problem at `now` (see `app.problems.automatic`)
        as the system, in one append; returns the facts this call appended.

        Safe to run from several processes at once: the facts depend only on the state they are
        decided on, and their event ids on the action and what it is due for, so a second
        process deciding on the same state appends nothing (the store sees a replay), and one
        deciding after the first sees nothing due. A problem whose latest event was imported
        less than `import_settle` ago is left alone: its history may still be arriving."""
        for attempt in range(MAX_ATTEMPTS):
            state, events = await self.load(problem_id)
            if state is None:
                return []
            latest = events[-1]
            if latest.metadata.get("imported") and now - latest.recorded_at < import_settle:
                return []
            steps = automatic.plan(state, now, await self.policy(state.district_id))
            if not steps:
                return []
            new_state = state
            for _, facts in steps:
                for fact in facts:
                    new_state = domain.evolve(new_state, fact)
            new_events = [
                NewEvent(
                    fact.type,
                    fact.data,
                    event_id=automatic.event_id(problem_id, action, index),
                    metadata=event_metadata(SYSTEM, None, automatic=action.name),
                    occurred_at=fact.occurred_at,
                )
                for action, facts in steps
                for index, fact in enumerate(facts)
            ]
            try:
                recorded = await self.store.append(
                    stream_id(problem_id),
                    state.version,
                    new_events,
                    also=view_writes(self.db.backend, state, new_state),
                )
            except ConcurrencyConflict:
                await asyncio.sleep(random.uniform(0, 0.002 * (attempt + 1)))
                continue
            if recorded[0].replayed:  # another process appended exactly these a moment ago
                return []
            return [fact for _, facts in steps for fact in facts]
        raise AppError("contention", f"problem {problem_id} kept changing; try again")
