"""The problem aggregate (企业问题) as a pure decider.

`decide(state, command, context) -> facts` validates a command against the current state, the
caller's rights and the routing policy, and says what happened; `evolve(state, fact) -> state`
applies one fact. Folding the facts of a stream with `evolve` gives the current state. Nothing
here knows about HTTP or SQL: the routing policy, the clock reading and the actor arrive as
arguments.

Lifecycle (SPEC §3): submitted problems start at the `local` tier, held by the enterprise's
service group. What cannot be solved there is escalated to the district dispatch room (区调度室),
which assigns a lead unit (牵头单位) with cooperating units (配合单位) and a deadline (限时办结);
what exceeds the district goes on to the city command room (市总调度室).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import MISSING, dataclass, field, fields
from datetime import date, datetime
from enum import StrEnum
from typing import Any, Protocol

from app.core.errors import AppError, register
from app.core.security import Role
from app.routing.policy import RouteProposal
from app.routing.tree import LEAD_KINDS, Tier, UnitRef, next_tier

register(
    "invalid_transition",
    409,
    "Transition not allowed",
    "The command is not allowed in the problem's current status or tier; "
    "see `current_status` and `allowed_statuses`.",
)
register(
    "already_at_top_tier",
    409,
    "Already at the top tier",
    "The problem is at the city command room; it cannot be escalated further.",
)
register(
    "routing_unavailable",
    409,
    "No room to route to",
    "The routing tree has no dispatch room for the target tier and district.",
)
register(
    "lead_unit_required",
    422,
    "Lead unit required",
    "No lead unit was given and no routing rule proposes one for this district and category.",
)
register(
    "invalid_lead_unit",
    422,
    "Invalid lead unit",
    "Lead and cooperating units must be active units of the problem's tier (and district).",
)
register(
    "invalid_deadline",
    422,
    "Invalid deadline",
    "The deadline must lie after the command's time (and, for an extension, after the current deadline).",
)
register("deadline_passed", 409, "Deadline passed", "An extension must be requested before the deadline.")
register(
    "extension_pending",
    409,
    "Extension pending",
    "An extension request is already waiting for a decision.",
)
register("no_extension_pending", 409, "No extension pending", "There is no extension request to decide.")
register(
    "return_pending",
    409,
    "Return pending",
    "A return request is already waiting for the room's ruling.",
)
register("no_return_pending", 409, "No return pending", "There is no return request to rule on.")
register(
    "return_window_closed",
    409,
    "Return window closed",
    "A problem may be returned only within the configured window after its assignment.",
)
register("invalid_review_date", 422, "Invalid review date", "The review date must lie after today.")
register(
    "not_permitted",
    403,
    "Not permitted",
    "The caller's role or unit may not perform this command on this problem.",
)
register("problem_exists", 409, "Problem exists", "A problem with this id exists.")
register(
    "occurred_at_out_of_order",
    422,
    "occurred_at out of order",
    "occurred_at lies before the problem's latest event.",
)


class Status(StrEnum):
    open = "open"  # waiting at a room for dispatch
    assigned = "assigned"  # a lead unit holds it
    in_progress = "in_progress"  # the lead unit accepted it (签收)
    deferred = "deferred"  # explained, with a staged plan and a review date
    resolved = "resolved"  # 办结, awaiting the enterprise's feedback
    closed = "closed"  # 销号
    withdrawn = "withdrawn"


ACTIVE = frozenset({Status.open, Status.assigned, Status.in_progress, Status.deferred})
SOLVED = frozenset({Status.resolved, Status.closed})
HELD = frozenset({Status.assigned, Status.in_progress})


class Urgency(StrEnum):
    normal = "normal"
    urgent = "urgent"


# -- events ------------------------------------------------------------------------------------

SUBMITTED = "problem.submitted"
ACCEPTED = "problem.accepted"
ESCALATED = "problem.escalated"
ASSIGNED = "problem.assigned"
RETURN_REQUESTED = "problem.return_requested"
RETURNED = "problem.returned"
RETURN_REFUSED = "problem.return_refused"
PROGRESS_REPORTED = "problem.progress_reported"
EXTENSION_REQUESTED = "problem.extension_requested"
EXTENSION_DECIDED = "problem.extension_decided"
DEFERRED = "problem.deferred"
RESUMED = "problem.resumed"
RESOLVED = "problem.resolved"
FEEDBACK_RECEIVED = "problem.feedback_received"
REOPENED = "problem.reopened"
SUPERVISED = "problem.supervised"
REMINDED = "problem.reminded"
OVERDUE = "problem.overdue"
WITHDRAWN = "problem.withdrawn"
CLOSED = "problem.closed"

EVENT_DESCRIPTIONS: dict[str, str] = {
    SUBMITTED: "A problem was recorded; it starts at the local tier with the enterprise's service group.",
    ACCEPTED: "The lead unit accepted the problem (签收).",
    ESCALATED: "The problem went up a tier and waits at that tier's room.",
    ASSIGNED: "A room handed the problem to a lead unit (and cooperating units) with a deadline.",
    RETURN_REQUESTED: "The lead unit asked to return the problem as outside its jurisdiction (退回).",
    RETURNED: "The room accepted a return; the problem waits at the room again.",
    RETURN_REFUSED: "The room refused a return; the lead unit keeps the problem.",
    PROGRESS_REPORTED: "A progress note.",
    EXTENSION_REQUESTED: "The lead unit asked for a later deadline (延期).",
    EXTENSION_DECIDED: "The room approved or refused an extension.",
    DEFERRED: "The problem cannot be solved soon: explanation, staged plan, review date "
    "(not overdue meanwhile).",
    RESUMED: "Work on a deferred problem resumed; the deadline moved by the time paused.",
    RESOLVED: "The problem was solved (办结); awaiting the enterprise's feedback.",
    FEEDBACK_RECEIVED: "The enterprise's satisfaction (1–5) was recorded (回访).",
    REOPENED: "A solved problem was reopened.",
    SUPERVISED: "A supervision notice from a higher tier (督办).",
    REMINDED: "A reminder before a deadline or review date (催办).",
    OVERDUE: "The deadline passed while the problem was unsolved.",
    WITHDRAWN: "The problem was withdrawn.",
    CLOSED: "The problem was closed out (销号).",
}


@dataclass(frozen=True, slots=True)
class Fact:
    """An event of the problem stream, as the domain sees it."""

    type: str
    data: dict[str, Any]
    occurred_at: datetime


class FactLike(Protocol):
    """What a fold reads of an event: a `Fact`, or a stored event as it is (folds of whole
    streams need no copy of each event)."""

    @property
    def type(self) -> str: ...

    @property
    def data(self) -> dict[str, Any]: ...

    @property
    def occurred_at(self) -> datetime: ...


# -- state -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlanStep:
    step: str
    due_on: date


@dataclass(frozen=True)
class ProblemState:
    id: str
    version: int
    enterprise_id: str
    enterprise_name: str
    district_id: str
    category: str
    title: str
    description: str
    urgency: Urgency
    source: str | None
    reported_by: str | None
    reporter_unit_id: str
    submitted_by: str | None
    tier: Tier
    status: Status
    room_unit_id: str | None
    lead_unit_id: str | None
    cooperating_unit_ids: tuple[str, ...]
    deadline: datetime | None
    submitted_at: datetime
    tier_entered_at: datetime
    holder_since: datetime
    updated_at: datetime
    accepted_at: datetime | None = None
    resolved_at: datetime | None = None
    closed_at: datetime | None = None
    withdrawn_at: datetime | None = None
    solved_tier: Tier | None = None
    solved_by_unit_id: str | None = None
    resolution: str | None = None
    escalations: int = 0
    returns: int = 0
    supervisions: int = 0
    reminders: int = 0
    reopens: int = 0
    extension_request: dict[str, Any] | None = None
    return_request: dict[str, Any] | None = None
    review_on: date | None = None
    deferred_at: datetime | None = None
    deferred_remaining: int | None = None
    paused_seconds: int = 0
    feedback_score: int | None = None
    satisfied: bool | None = None
    rule_version: int | None = None
    unrouted: bool = False
    returned_too_often: bool = False
    status_note: str | None = None
    overdue_noted_for: datetime | None = None
    reminded_for: datetime | None = None
    review_reminded_on: date | None = None
    last_event: str = SUBMITTED
    location: dict[str, Any] | None = None
    media_url: str | None = None

    @property
    def holder_unit_id(self) -> str | None:
        """The unit that holds the problem now: the room while open, else the lead unit."""
        return self.room_unit_id if self.status is Status.open else self.lead_unit_id

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE

    @property
    def involved_units(self) -> frozenset[str]:
        """Units with a stake in the problem: reporter, holder, lead, cooperators."""
        units = {self.reporter_unit_id, *self.cooperating_unit_ids}
        for unit in (self.lead_unit_id, self.room_unit_id if self.status is Status.open else None):
            if unit:
                units.add(unit)
        return frozenset(units)

    def is_overdue(self, now: datetime) -> bool:
        return self.is_active and self.deadline is not None and now > self.deadline

    @property
    def flags(self) -> tuple[str, ...]:
        """Why the commander should look at it: `unrouted` (open at a room with no routing rule
        for its category), `returned_too_often` (more returns than the rules allow)."""
        return tuple(
            name
            for name, on in (("unrouted", self.unrouted), ("returned_too_often", self.returned_too_often))
            if on
        )


_STATE_FIELDS = frozenset(f.name for f in fields(ProblemState))
# Every field in declaration order, with its default (None where it has none: `_create` requires those).
_BLANK = {f.name: None if f.default is MISSING else f.default for f in fields(ProblemState)}
_REQUIRED = frozenset(f.name for f in fields(ProblemState) if f.default is MISSING)


def _check(values: dict[str, Any]) -> None:
    if not _STATE_FIELDS.issuperset(values):
        raise TypeError(f"ProblemState has no field {sorted(values.keys() - _STATE_FIELDS)[0]!r}")


def _create(**values: Any) -> ProblemState:
    """`ProblemState(**values)` without running the frozen dataclass's `__init__`, which sets its
    fifty fields one `object.__setattr__` at a time: every fold starts here (about 10x faster)."""
    _check(values)
    if not _REQUIRED.issubset(values):
        raise TypeError(f"ProblemState needs {sorted(_REQUIRED - values.keys())[0]!r}")
    new = object.__new__(ProblemState)
    new.__dict__.update(_BLANK)
    new.__dict__.update(values)
    return new


def replace(state: ProblemState, **changes: Any) -> ProblemState:
    """`dataclasses.replace` for the state, without running `__init__` over its fifty fields: the
    fold of every command's load and of every rebuild goes through here (about 15x faster)."""
    _check(changes)
    new = object.__new__(ProblemState)
    new.__dict__.update(state.__dict__)
    new.__dict__.update(changes)
    return new


# -- commands ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EnterpriseInfo:
    id: str
    name: str
    district_id: str
    service_unit_id: str


@dataclass(frozen=True, slots=True)
class Submit:
    problem_id: str
    enterprise: EnterpriseInfo
    category: str
    title: str
    description: str
    urgency: Urgency = Urgency.normal
    source: str | None = None
    reported_by: str | None = None
    reporter_unit_id: str | None = None
    location: dict[str, Any] | None = None  # address, address_id, zipcode, lat, long
    media_url: str | None = None
    contact: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Accept:
    note: str | None = None


@dataclass(frozen=True, slots=True)
class Escalate:
    reason: str
    automatic: bool = False


@dataclass(frozen=True, slots=True)
class Assign:
    lead_unit_id: str | None = None
    cooperating_unit_ids: tuple[str, ...] | None = None
    deadline: datetime | None = None
    note: str | None = None


@dataclass(frozen=True, slots=True)
class Return:
    reason: str


@dataclass(frozen=True, slots=True)
class DecideReturn:
    accept: bool
    note: str | None = None


@dataclass(frozen=True, slots=True)
class Progress:
    note: str


@dataclass(frozen=True, slots=True)
class RequestExtension:
    deadline: datetime
    reason: str


@dataclass(frozen=True, slots=True)
class DecideExtension:
    approve: bool
    deadline: datetime | None = None
    note: str | None = None


@dataclass(frozen=True, slots=True)
class Defer:
    explanation: str
    plan: tuple[PlanStep, ...]
    review_on: date


@dataclass(frozen=True, slots=True)
class Resume:
    note: str | None = None


@dataclass(frozen=True, slots=True)
class Resolve:
    resolution: str


@dataclass(frozen=True, slots=True)
class Feedback:
    score: int
    comment: str | None = None


@dataclass(frozen=True, slots=True)
class Reopen:
    reason: str


@dataclass(frozen=True, slots=True)
class Supervise:
    note: str
    automatic: bool = False


@dataclass(frozen=True, slots=True)
class Remind:
    reason: str
    kind: str = "deadline"  # "deadline": before the deadline; "review": a deferral's review date


@dataclass(frozen=True, slots=True)
class MarkOverdue:
    reason: str = "the deadline passed"


@dataclass(frozen=True, slots=True)
class Withdraw:
    reason: str


@dataclass(frozen=True, slots=True)
class Close:
    reason: str
    automatic: bool = False


Command = (
    Accept
    | Escalate
    | Assign
    | Return
    | DecideReturn
    | Progress
    | RequestExtension
    | DecideExtension
    | Defer
    | Resume
    | Resolve
    | Feedback
    | Reopen
    | Supervise
    | Remind
    | MarkOverdue
    | Withdraw
    | Close
)


# -- context -----------------------------------------------------------------------------------


class Policy(Protocol):
    """What the decider needs from routing (implemented in `app.routing.policy`)."""

    def deadline(self, start: datetime, tier: Tier, urgency: str) -> datetime: ...
    def add_working_days(self, start: datetime, days: int) -> datetime: ...
    def working_days_left(self, now: datetime, deadline: datetime) -> int: ...
    def review_deadline(self, review_on: date, remaining_working_days: int) -> datetime: ...
    def business_date(self, instant: datetime) -> date: ...
    def escalation_target(self, category: str, tier: Tier) -> Tier | None: ...
    def room(self, tier: Tier, district_id: str) -> str | None: ...
    def unit(self, unit_id: str) -> UnitRef | None: ...
    def proposal(self, district_id: str, category: str, tier: Tier) -> RouteProposal | None: ...
    def return_window_ends(self, holder_since: datetime) -> datetime: ...
    def returns_flagged(self, returns: int) -> bool: ...
    @property
    def rule_version(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Actor:
    """The caller as the decider sees it. `subtree`: the handler's unit and the units below it."""

    id: str
    role: Role | None  # None: the system itself (automatic actions)
    unit_id: str | None = None
    district_id: str | None = None
    source: str | None = None
    subtree: frozenset[str] = field(default_factory=frozenset)

    @property
    def is_system(self) -> bool:
        return self.role is None


SYSTEM_ACTOR = Actor(id="system", role=None)


@dataclass(frozen=True, slots=True)
class Context:
    now: datetime
    actor: Actor
    policy: Policy


# -- visibility and rights ---------------------------------------------------------------------


def relations(state: ProblemState, actor: Actor) -> frozenset[str]:
    """How the actor stands to the problem; rights are granted per relation."""
    if actor.is_system:
        return frozenset({"system"})
    rel: set[str] = set()
    role = actor.role
    if role is Role.admin:
        rel.add("admin")
    elif role is Role.commander:
        rel.add("commander")
        if state.tier is Tier.city:
            rel.add("room")
    elif role is Role.dispatcher and actor.district_id == state.district_id:
        rel.add("district_room")
        if state.tier in (Tier.local, Tier.district):
            rel.add("room")
    elif role is Role.handler:
        if state.lead_unit_id and state.lead_unit_id in actor.subtree:
            rel.add("lead")
        if any(u in actor.subtree for u in state.cooperating_unit_ids):
            rel.add("cooperator")
        if state.reporter_unit_id in actor.subtree:
            rel.add("reporter")
        if state.status is Status.open and state.room_unit_id in actor.subtree:
            rel.add("holder")
    elif role is Role.portal and actor.source is not None and actor.source == state.source:
        rel.add("submitter")
    elif role is Role.viewer and actor.district_id in (None, state.district_id):
        rel.add("viewer")
    return frozenset(rel)


def can_see(state: ProblemState, actor: Actor) -> bool:
    return bool(relations(state, actor))


_ANY_ROOM = frozenset({"room", "commander", "admin"})
_ESCALATE_LOCAL = frozenset({"lead", "room", "admin", "system"})
_ESCALATE_ABOVE = frozenset({"room", "commander", "admin", "system"})

RIGHTS: dict[type, frozenset[str]] = {
    Accept: frozenset({"lead", "admin"}),
    Assign: _ANY_ROOM,
    Return: frozenset({"lead", "admin"}),
    DecideReturn: _ANY_ROOM,
    Progress: frozenset({"lead", "cooperator", "room", "district_room", "commander", "admin"}),
    RequestExtension: frozenset({"lead", "admin"}),
    DecideExtension: _ANY_ROOM,
    Defer: frozenset({"lead", "room", "commander", "admin"}),
    Resume: frozenset({"lead", "room", "commander", "admin", "system"}),
    Resolve: frozenset({"lead", "room", "commander", "admin"}),
    Feedback: frozenset({"submitter", "reporter", "district_room", "commander", "admin"}),
    Reopen: frozenset({"submitter", "reporter", "district_room", "commander", "admin"}),
    Supervise: frozenset({"room", "commander", "admin", "system"}),
    Remind: frozenset({"system"}),
    MarkOverdue: frozenset({"system"}),
    Withdraw: frozenset({"submitter", "reporter", "district_room", "commander", "admin"}),
    Close: frozenset({"admin", "system"}),
}


def _rights(state: ProblemState, command: Command) -> frozenset[str]:
    if isinstance(command, Escalate):
        return _ESCALATE_LOCAL if state.tier is Tier.local else _ESCALATE_ABOVE
    if isinstance(command, Supervise) and state.tier is Tier.city:
        return frozenset({"commander", "admin", "system"})
    return RIGHTS[type(command)]


def command_name(command: Command) -> str:
    names = {
        Accept: "accept",
        Escalate: "escalate",
        Assign: "assign",
        Return: "return",
        DecideReturn: "decide-return",
        Progress: "progress",
        RequestExtension: "request-extension",
        DecideExtension: "decide-extension",
        Defer: "defer",
        Resume: "resume",
        Resolve: "resolve",
        Feedback: "feedback",
        Reopen: "reopen",
        Supervise: "supervise",
        Remind: "remind",
        MarkOverdue: "mark-overdue",
        Withdraw: "withdraw",
        Close: "close",
    }
    return names[type(command)]


# -- decide ------------------------------------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _by(ctx: Context, deadline: datetime) -> str:
    """'due by' in the words of a status note (the city's date)."""
    return f"限 {ctx.policy.business_date(deadline).isoformat()} 前办结"


CLOSED_NOTE = "已销号"
_ROOM_NAMES = {Tier.district: "区调度室", Tier.city: "市总调度室"}


def _require_status(state: ProblemState, command: Command, allowed: Iterable[Status]) -> None:
    allowed = tuple(allowed)
    if state.status not in allowed:
        raise AppError(
            "invalid_transition",
            f"{command_name(command)} is not allowed while the problem is {state.status.value}",
            current_status=state.status.value,
            tier=state.tier.value,
            command=command_name(command),
            allowed_statuses=[s.value for s in allowed],
        )


def submit(command: Submit, ctx: Context) -> list[Fact]:
    """A new problem: tier local, held by the enterprise's service group."""
    ent = command.enterprise
    policy = ctx.policy
    lead = ent.service_unit_id
    deadline = policy.deadline(ctx.now, Tier.local, command.urgency.value)
    # Optional fields appear only when given, so older events and new ones read alike.
    optional = {
        k: v
        for k, v in (
            ("location", command.location),
            ("media_url", command.media_url),
            ("contact", command.contact),
        )
        if v
    }
    return [
        Fact(
            SUBMITTED,
            {
                "problem_id": command.problem_id,
                "enterprise_id": ent.id,
                "enterprise_name": ent.name,
                "district_id": ent.district_id,
                "category": command.category,
                "title": command.title,
                "description": command.description,
                "urgency": command.urgency.value,
                "source": command.source,
                "reported_by": command.reported_by,
                "reporter_unit_id": command.reporter_unit_id or lead,
                "submitted_by": None if ctx.actor.is_system else ctx.actor.id,
                "lead_unit_id": lead,
                "tier": Tier.local.value,
                "deadline": _iso(deadline),
                **optional,
                "rule_version": policy.rule_version,
                "status_note": f"已受理，{_by(ctx, deadline)}",
            },
            ctx.now,
        )
    ]


def decide(state: ProblemState, command: Command, ctx: Context) -> list[Fact]:
    """The facts `command` produces on `state`, or an `AppError` saying why not."""
    rel = relations(state, ctx.actor)
    if not rel & _rights(state, command):
        raise AppError(
            "not_permitted",
            f"{command_name(command)} is not permitted to this key on this problem",
            command=command_name(command),
        )
    if ctx.now < state.updated_at:
        raise AppError(
            "occurred_at_out_of_order",
            f"the problem's latest event is at {state.updated_at.isoformat()}",
        )
    handler = _DECIDERS[type(command)]
    facts: list[Fact] = handler(state, command, ctx)
    return facts


def _fact(type_: str, ctx: Context, **data: Any) -> Fact:
    return Fact(type_, data, ctx.now)


def _accept(state: ProblemState, cmd: Accept, ctx: Context) -> list[Fact]:
    _require_status(state, cmd, [Status.assigned])
    return [_fact(ACCEPTED, ctx, unit_id=state.lead_unit_id, note=cmd.note)]


def _escalate(state: ProblemState, cmd: Escalate, ctx: Context) -> list[Fact]:
    if state.tier is Tier.city:
        raise AppError(
            "already_at_top_tier",
            "the problem is at the city command room already",
            tier=state.tier.value,
        )
    _require_status(state, cmd, ACTIVE)
    target = ctx.policy.escalation_target(state.category, state.tier) or next_tier(state.tier)
    assert target is not None
    room = ctx.policy.room(target, state.district_id)
    if room is None:
        raise AppError(
            "routing_unavailable",
            f"there is no {target.value} room for district {state.district_id}",
        )
    deadline = ctx.policy.deadline(ctx.now, target, state.urgency.value)
    return [
        _fact(
            ESCALATED,
            ctx,
            from_tier=state.tier.value,
            to_tier=target.value,
            room_unit_id=room,
            reason=cmd.reason,
            deadline=_iso(deadline),
            automatic=cmd.automatic,
            rule_version=ctx.policy.rule_version,
            unrouted=_unrouted(state, target, ctx),
            status_note=f"已提交{_ROOM_NAMES[target]}协调，{_by(ctx, deadline)}",
        )
    ]


def _unrouted(state: ProblemState, tier: Tier, ctx: Context) -> bool:
    """A district room has no rule for the problem's category: it stays open, flagged."""
    return tier is Tier.district and ctx.policy.proposal(state.district_id, state.category, tier) is None


def _check_units(state: ProblemState, ctx: Context, unit_ids: Sequence[str]) -> None:
    for unit_id in unit_ids:
        unit = ctx.policy.unit(unit_id)
        if unit is None:
            raise AppError("invalid_lead_unit", f"unit {unit_id} does not exist", unit_id=unit_id)
        if not unit.active:
            raise AppError("invalid_lead_unit", f"unit {unit_id} is inactive", unit_id=unit_id)
        if unit.kind not in LEAD_KINDS[state.tier]:
            kinds = " or ".join(sorted(k.value for k in LEAD_KINDS[state.tier]))
            raise AppError(
                "invalid_lead_unit",
                f"at the {state.tier.value} tier the units must be a {kinds}; "
                f"{unit_id} is a {unit.kind.value}",
                unit_id=unit_id,
            )
        if state.tier is not Tier.city and unit.district_id != state.district_id:
            raise AppError(
                "invalid_lead_unit",
                f"unit {unit_id} belongs to district {unit.district_id}, not {state.district_id}",
                unit_id=unit_id,
            )


def _assign(state: ProblemState, cmd: Assign, ctx: Context) -> list[Fact]:
    if state.tier is Tier.local:
        raise AppError(
            "invalid_transition",
            "assign is a room's command; at the local tier the service group holds the problem",
            current_status=state.status.value,
            tier=state.tier.value,
            command="assign",
            allowed_statuses=[],
        )
    _require_status(state, cmd, [Status.open, Status.assigned, Status.in_progress])
    proposal = ctx.policy.proposal(state.district_id, state.category, state.tier)
    lead = cmd.lead_unit_id or (proposal.lead_unit_id if proposal else None)
    if lead is None:
        raise AppError(
            "lead_unit_required",
            f"no rule proposes a lead unit for {state.category} in {state.district_id}; give lead_unit_id",
        )
    if cmd.cooperating_unit_ids is not None:
        coops = tuple(dict.fromkeys(cmd.cooperating_unit_ids))
    elif proposal and not cmd.lead_unit_id:
        coops = proposal.cooperating_unit_ids
    else:
        coops = ()
    coops = tuple(u for u in coops if u != lead)
    _check_units(state, ctx, [lead, *coops])
    if cmd.deadline is not None:
        if cmd.deadline <= ctx.now:
            raise AppError("invalid_deadline", "the deadline must lie in the future")
        deadline = cmd.deadline
    else:
        deadline = state.deadline or ctx.policy.deadline(
            state.tier_entered_at, state.tier, state.urgency.value
        )
    from_proposal = proposal is not None and lead == proposal.lead_unit_id
    return [
        _fact(
            ASSIGNED,
            ctx,
            tier=state.tier.value,
            lead_unit_id=lead,
            cooperating_unit_ids=list(coops),
            deadline=_iso(deadline),
            note=cmd.note,
            rule_version=ctx.policy.rule_version,
            proposed=from_proposal,
            previous_lead_unit_id=state.lead_unit_id,
            status_note=f"已交牵头单位办理，{_by(ctx, deadline)}",
        )
    ]


def _return(state: ProblemState, cmd: Return, ctx: Context) -> list[Fact]:
    if state.tier is Tier.local:
        raise AppError(
            "invalid_transition",
            "at the local tier a problem is escalated, not returned",
            current_status=state.status.value,
            tier=state.tier.value,
            command="return",
            allowed_statuses=[],
        )
    _require_status(state, cmd, HELD)
    if state.return_request is not None:
        raise AppError("return_pending", "a return request is already waiting for the room")
    if ctx.now > ctx.policy.return_window_ends(state.holder_since):
        raise AppError(
            "return_window_closed",
            "the window for returning this assignment has closed; ask the room to re-assign",
        )
    return [_fact(RETURN_REQUESTED, ctx, unit_id=state.lead_unit_id, reason=cmd.reason)]


def _decide_return(state: ProblemState, cmd: DecideReturn, ctx: Context) -> list[Fact]:
    if state.return_request is None:
        raise AppError("no_return_pending", "there is no return request to rule on")
    if cmd.accept:
        return [
            _fact(
                RETURNED,
                ctx,
                unit_id=state.lead_unit_id,
                reason=state.return_request["reason"],
                room_unit_id=state.room_unit_id,
                note=cmd.note,
                unrouted=_unrouted(state, state.tier, ctx),
                flagged=ctx.policy.returns_flagged(state.returns + 1),
            )
        ]
    return [_fact(RETURN_REFUSED, ctx, unit_id=state.lead_unit_id, note=cmd.note)]


def _progress(state: ProblemState, cmd: Progress, ctx: Context) -> list[Fact]:
    _require_status(state, cmd, ACTIVE)
    return [_fact(PROGRESS_REPORTED, ctx, note=cmd.note, unit_id=ctx.actor.unit_id)]


def _request_extension(state: ProblemState, cmd: RequestExtension, ctx: Context) -> list[Fact]:
    _require_status(state, cmd, HELD)
    if state.extension_request is not None:
        raise AppError("extension_pending", "an extension request is already waiting for the room")
    if state.deadline is not None and ctx.now > state.deadline:
        raise AppError("deadline_passed", "the deadline has passed; extensions are requested before it")
    if cmd.deadline <= (state.deadline or ctx.now):
        raise AppError("invalid_deadline", "the requested deadline must lie after the current one")
    return [
        _fact(
            EXTENSION_REQUESTED,
            ctx,
            requested_deadline=_iso(cmd.deadline),
            reason=cmd.reason,
            unit_id=state.lead_unit_id,
            current_deadline=_iso(state.deadline),
        )
    ]


def _decide_extension(state: ProblemState, cmd: DecideExtension, ctx: Context) -> list[Fact]:
    if state.extension_request is None:
        raise AppError("no_extension_pending", "there is no extension request to decide")
    _require_status(state, cmd, ACTIVE)
    if not cmd.approve:
        previous = _iso(state.deadline)
        return [
            _fact(
                EXTENSION_DECIDED,
                ctx,
                approved=False,
                deadline=None,
                note=cmd.note,
                previous_deadline=previous,
            )
        ]
    deadline = cmd.deadline or datetime.fromisoformat(state.extension_request["requested_deadline"])
    if deadline <= ctx.now:
        raise AppError("invalid_deadline", "the approved deadline must lie in the future")
    reason = state.extension_request["reason"]
    return [
        _fact(
            EXTENSION_DECIDED,
            ctx,
            approved=True,
            deadline=_iso(deadline),
            note=cmd.note,
            previous_deadline=_iso(state.deadline),
            status_note=f"经批准延期（{reason}），{_by(ctx, deadline)}",
        )
    ]


def _defer(state: ProblemState, cmd: Defer, ctx: Context) -> list[Fact]:
    _require_status(state, cmd, HELD)
    if state.return_request is not None:
        # The unit has just said the problem is not its own; the room rules on that first.
        raise AppError("return_pending", "a return request is waiting for the room's ruling")
    today = ctx.policy.business_date(ctx.now)
    if cmd.review_on <= today:
        raise AppError("invalid_review_date", "the review date must lie after today")
    remaining = ctx.policy.working_days_left(ctx.now, state.deadline) if state.deadline else 0
    deadline = ctx.policy.review_deadline(cmd.review_on, max(remaining, 1))
    return [
        _fact(
            DEFERRED,
            ctx,
            explanation=cmd.explanation,
            plan=[{"step": s.step, "due_on": s.due_on.isoformat()} for s in cmd.plan],
            review_on=cmd.review_on.isoformat(),
            remaining_working_days=max(remaining, 1),
            deadline=_iso(deadline),
            status_before=state.status.value,
            previous_deadline=_iso(state.deadline),
            status_note=f"暂缓办理：{cmd.explanation}（已制定阶段计划，{cmd.review_on.isoformat()} 复核）",
        )
    ]


def _resume(state: ProblemState, cmd: Resume, ctx: Context) -> list[Fact]:
    _require_status(state, cmd, [Status.deferred])
    assert state.deferred_at is not None
    # The clock was paused: the unit gets back the working days it had left when it deferred.
    deadline = ctx.policy.add_working_days(ctx.now, state.deferred_remaining or 1)
    paused = int((ctx.now - state.deferred_at).total_seconds())
    return [
        _fact(
            RESUMED,
            ctx,
            note=cmd.note,
            deadline=_iso(deadline),
            paused_seconds=paused,
            status_note=f"恢复办理，{_by(ctx, deadline)}",
        )
    ]


def _resolve(state: ProblemState, cmd: Resolve, ctx: Context) -> list[Fact]:
    _require_status(state, cmd, ACTIVE)
    unit = state.lead_unit_id if state.status is not Status.open else state.room_unit_id
    on_time = state.deadline is None or ctx.now <= state.deadline
    return [
        _fact(
            RESOLVED,
            ctx,
            resolution=cmd.resolution,
            unit_id=unit,
            tier=state.tier.value,
            on_time=on_time,
            deadline=_iso(state.deadline),
            status_note=f"已办结：{cmd.resolution}",
        )
    ]


def _feedback(state: ProblemState, cmd: Feedback, ctx: Context) -> list[Fact]:
    _require_status(state, cmd, [Status.resolved])
    satisfied = cmd.score >= 4
    facts = [_fact(FEEDBACK_RECEIVED, ctx, score=cmd.score, comment=cmd.comment, satisfied=satisfied)]
    if satisfied:
        facts.append(_fact(CLOSED, ctx, reason="satisfied", status_note=CLOSED_NOTE))
    else:
        facts.append(_reopen_fact(state, ctx, "the enterprise is not satisfied"))
    return facts


def _reopen_fact(state: ProblemState, ctx: Context, reason: str) -> Fact:
    deadline = ctx.policy.deadline(ctx.now, state.tier, state.urgency.value)
    note = f"重新办理，{_by(ctx, deadline)}"
    return _fact(REOPENED, ctx, reason=reason, deadline=_iso(deadline), status_note=note)


def _reopen(state: ProblemState, cmd: Reopen, ctx: Context) -> list[Fact]:
    _require_status(state, cmd, SOLVED)
    return [_reopen_fact(state, ctx, cmd.reason)]


def _supervise(state: ProblemState, cmd: Supervise, ctx: Context) -> list[Fact]:
    _require_status(state, cmd, ACTIVE)
    actor = ctx.actor
    return [
        _fact(
            SUPERVISED,
            ctx,
            note=cmd.note,
            tier=state.tier.value,
            by_role=actor.role.value if actor.role else "system",
            by_unit=actor.unit_id,
            automatic=cmd.automatic,
        )
    ]


def _remind(state: ProblemState, cmd: Remind, ctx: Context) -> list[Fact]:
    _require_status(state, cmd, [Status.deferred] if cmd.kind == "review" else ACTIVE)
    return [
        _fact(
            REMINDED,
            ctx,
            reason=cmd.reason,
            kind=cmd.kind,
            deadline=_iso(state.deadline),
            review_on=state.review_on.isoformat() if cmd.kind == "review" and state.review_on else None,
            holder_unit_id=state.holder_unit_id,
        )
    ]


def _mark_overdue(state: ProblemState, cmd: MarkOverdue, ctx: Context) -> list[Fact]:
    _require_status(state, cmd, ACTIVE)
    if not state.is_overdue(ctx.now) or state.overdue_noted_for == state.deadline:
        raise AppError(
            "invalid_transition",
            "the problem is not newly overdue",
            current_status=state.status.value,
            tier=state.tier.value,
            command="mark-overdue",
            allowed_statuses=[],
        )
    return [
        _fact(
            OVERDUE,
            ctx,
            deadline=_iso(state.deadline),
            tier=state.tier.value,
            holder_unit_id=state.holder_unit_id,
            reason=cmd.reason,
        )
    ]


def _withdraw(state: ProblemState, cmd: Withdraw, ctx: Context) -> list[Fact]:
    _require_status(state, cmd, ACTIVE)
    return [_fact(WITHDRAWN, ctx, reason=cmd.reason, status_note=f"已撤回：{cmd.reason}")]


def _close(state: ProblemState, cmd: Close, ctx: Context) -> list[Fact]:
    _require_status(state, cmd, [Status.resolved])
    return [_fact(CLOSED, ctx, reason=cmd.reason, automatic=cmd.automatic, status_note=CLOSED_NOTE)]


_DECIDERS: dict[type, Any] = {
    Accept: _accept,
    Escalate: _escalate,
    Assign: _assign,
    Return: _return,
    DecideReturn: _decide_return,
    Progress: _progress,
    RequestExtension: _request_extension,
    DecideExtension: _decide_extension,
    Defer: _defer,
    Resume: _resume,
    Resolve: _resolve,
    Feedback: _feedback,
    Reopen: _reopen,
    Supervise: _supervise,
    Remind: _remind,
    MarkOverdue: _mark_overdue,
    Withdraw: _withdraw,
    Close: _close,
}


# -- evolve ------------------------------------------------------------------------------------


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


# Enum members by value: a dictionary lookup instead of the enum's call machinery (~1 µs), which
# still answers (and raises) for anything else.
_TIERS: dict[Any, Tier] = {t.value: t for t in Tier}
_URGENCIES: dict[Any, Urgency] = {u.value: u for u in Urgency}


def _tier(value: Any) -> Tier:
    return _TIERS.get(value) or Tier(value)


def initial(problem_id: str, fact: FactLike) -> ProblemState:
    if fact.type != SUBMITTED:
        raise ValueError(f"a problem stream starts with {SUBMITTED}, not {fact.type}")
    d = fact.data
    at = fact.occurred_at
    return _create(
        id=problem_id,
        version=1,
        enterprise_id=d["enterprise_id"],
        enterprise_name=d["enterprise_name"],
        district_id=d["district_id"],
        category=d["category"],
        title=d["title"],
        description=d["description"],
        urgency=_URGENCIES.get(urgency := d.get("urgency", "normal")) or Urgency(urgency),
        source=d.get("source"),
        reported_by=d.get("reported_by"),
        reporter_unit_id=d["reporter_unit_id"],
        submitted_by=d.get("submitted_by"),
        tier=_tier(d.get("tier", "local")),
        status=Status.assigned,
        room_unit_id=None,
        lead_unit_id=d["lead_unit_id"],
        cooperating_unit_ids=(),
        deadline=_dt(d.get("deadline")),
        submitted_at=at,
        tier_entered_at=at,
        holder_since=at,
        updated_at=at,
        location=d.get("location"),
        media_url=d.get("media_url"),
        rule_version=d.get("rule_version"),
        status_note=d.get("status_note"),
    )


def evolve(state: ProblemState, fact: FactLike) -> ProblemState:
    d = fact.data
    at = fact.occurred_at
    new = object.__new__(ProblemState)
    values = new.__dict__
    values.update(state.__dict__)
    values["version"] = state.version + 1
    values["updated_at"] = max(at, state.updated_at)
    values["last_event"] = fact.type
    values["status_note"] = d.get("status_note", state.status_note)
    step = _STEPS.get(fact.type)
    if step is not None:  # unknown types (from a newer version) change nothing else we know about
        changes = step(state, d, at)
        _check(changes)
        values.update(changes)
    return new


# What each type of fact changes besides the version, time, last event and status note: a
# function of the state before it, the fact's data and its time.
Step = Callable[[ProblemState, dict[str, Any], datetime], dict[str, Any]]
_NOTHING: dict[str, Any] = {}


def _accepted(s: ProblemState, d: dict[str, Any], at: datetime) -> dict[str, Any]:
    return {"status": Status.in_progress, "accepted_at": at}


def _escalated(s: ProblemState, d: dict[str, Any], at: datetime) -> dict[str, Any]:
    return {
        "tier": _tier(d["to_tier"]),
        "status": Status.open,
        "room_unit_id": d["room_unit_id"],
        "lead_unit_id": None,
        "cooperating_unit_ids": (),
        "deadline": _dt(d["deadline"]),
        "tier_entered_at": at,
        "holder_since": at,
        "accepted_at": None,
        "escalations": s.escalations + 1,
        "extension_request": None,
        "return_request": None,
        "review_on": None,
        "deferred_at": None,
        "deferred_remaining": None,
        "unrouted": d.get("unrouted", False),
        "rule_version": d.get("rule_version", s.rule_version),
    }


def _assigned(s: ProblemState, d: dict[str, Any], at: datetime) -> dict[str, Any]:
    return {
        "status": Status.assigned,
        "lead_unit_id": d["lead_unit_id"],
        "cooperating_unit_ids": tuple(d["cooperating_unit_ids"]),
        "deadline": _dt(d["deadline"]),
        "holder_since": at,
        "accepted_at": None,
        "extension_request": None,
        "return_request": None,
        "rule_version": d.get("rule_version", s.rule_version),
        "unrouted": False,
    }


def _return_requested(s: ProblemState, d: dict[str, Any], at: datetime) -> dict[str, Any]:
    request = {"reason": d["reason"], "unit_id": d["unit_id"], "requested_at": at.isoformat()}
    return {"return_request": request}


def _returned(s: ProblemState, d: dict[str, Any], at: datetime) -> dict[str, Any]:
    return {
        "status": Status.open,
        "lead_unit_id": None,
        "cooperating_unit_ids": (),
        "holder_since": at,
        "accepted_at": None,
        "return_request": None,
        "extension_request": None,
        "review_on": None,
        "deferred_at": None,
        "deferred_remaining": None,
        "returns": s.returns + 1,
        "unrouted": d.get("unrouted", False),
        "returned_too_often": s.returned_too_often or d.get("flagged", False),
    }


def _return_refused(s: ProblemState, d: dict[str, Any], at: datetime) -> dict[str, Any]:
    return {"return_request": None}


def _progress_reported(s: ProblemState, d: dict[str, Any], at: datetime) -> dict[str, Any]:
    return _NOTHING


def _extension_requested(s: ProblemState, d: dict[str, Any], at: datetime) -> dict[str, Any]:
    return {
        "extension_request": {
            "requested_deadline": d["requested_deadline"],
            "reason": d["reason"],
            "requested_at": at.isoformat(),
        }
    }


def _extension_decided(s: ProblemState, d: dict[str, Any], at: datetime) -> dict[str, Any]:
    deadline = _dt(d.get("deadline")) if d["approved"] else s.deadline
    return {"extension_request": None, "deadline": deadline}


def _deferred(s: ProblemState, d: dict[str, Any], at: datetime) -> dict[str, Any]:
    return {
        "status": Status.deferred,
        "review_on": date.fromisoformat(d["review_on"]),
        "deferred_at": at,
        "deferred_remaining": d["remaining_working_days"],
        "deadline": _dt(d["deadline"]),
        "extension_request": None,
    }


def _resumed(s: ProblemState, d: dict[str, Any], at: datetime) -> dict[str, Any]:
    return {
        "status": Status.in_progress,
        "review_on": None,
        "deferred_at": None,
        "deferred_remaining": None,
        "deadline": _dt(d["deadline"]),
        "paused_seconds": s.paused_seconds + int(d.get("paused_seconds", 0)),
    }


def _resolved(s: ProblemState, d: dict[str, Any], at: datetime) -> dict[str, Any]:
    return {
        "status": Status.resolved,
        "resolved_at": at,
        "solved_tier": _tier(d["tier"]),
        "solved_by_unit_id": d.get("unit_id"),
        "resolution": d["resolution"],
        "extension_request": None,
        "return_request": None,
        "review_on": None,
        "deferred_at": None,
        "deferred_remaining": None,
    }


def _feedback_received(s: ProblemState, d: dict[str, Any], at: datetime) -> dict[str, Any]:
    return {"feedback_score": d["score"], "satisfied": d["satisfied"]}


def _reopened(s: ProblemState, d: dict[str, Any], at: datetime) -> dict[str, Any]:
    return {
        "status": Status.in_progress if s.lead_unit_id else Status.open,
        "resolved_at": None,
        "closed_at": None,
        "solved_tier": None,
        "solved_by_unit_id": None,
        "resolution": None,
        "deadline": _dt(d.get("deadline")),
        "reopens": s.reopens + 1,
        "holder_since": at,
    }


def _supervised(s: ProblemState, d: dict[str, Any], at: datetime) -> dict[str, Any]:
    return {"supervisions": s.supervisions + 1}


def _reminded(s: ProblemState, d: dict[str, Any], at: datetime) -> dict[str, Any]:
    if d.get("kind") == "review":
        return {"reminders": s.reminders + 1, "review_reminded_on": date.fromisoformat(d["review_on"])}
    return {"reminders": s.reminders + 1, "reminded_for": _dt(d.get("deadline"))}


def _overdue(s: ProblemState, d: dict[str, Any], at: datetime) -> dict[str, Any]:
    return {"overdue_noted_for": _dt(d.get("deadline"))}


def _withdrawn(s: ProblemState, d: dict[str, Any], at: datetime) -> dict[str, Any]:
    return {
        "status": Status.withdrawn,
        "withdrawn_at": at,
        "extension_request": None,
        "return_request": None,
        "review_on": None,
        "deferred_at": None,
        "deferred_remaining": None,
    }


def _closed(s: ProblemState, d: dict[str, Any], at: datetime) -> dict[str, Any]:
    return {"status": Status.closed, "closed_at": at}


# A dictionary rather than a `match` on the type: one lookup instead of up to twenty comparisons
# for every fact folded.
_STEPS: dict[str, Step] = {
    ACCEPTED: _accepted,
    ESCALATED: _escalated,
    ASSIGNED: _assigned,
    RETURN_REQUESTED: _return_requested,
    RETURNED: _returned,
    RETURN_REFUSED: _return_refused,
    PROGRESS_REPORTED: _progress_reported,
    EXTENSION_REQUESTED: _extension_requested,
    EXTENSION_DECIDED: _extension_decided,
    DEFERRED: _deferred,
    RESUMED: _resumed,
    RESOLVED: _resolved,
    FEEDBACK_RECEIVED: _feedback_received,
    REOPENED: _reopened,
    SUPERVISED: _supervised,
    REMINDED: _reminded,
    OVERDUE: _overdue,
    WITHDRAWN: _withdrawn,
    CLOSED: _closed,
}


def fold(problem_id: str, facts: Iterable[FactLike]) -> ProblemState | None:
    state: ProblemState | None = None
    for fact in facts:
        state = initial(problem_id, fact) if state is None else evolve(state, fact)
    return state
