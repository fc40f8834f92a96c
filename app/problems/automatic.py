"""Automatic actions (SPEC §3): what falls due on a problem when nobody acts, decided without I/O.

- `remind` (催办) once per deadline, from `reminder_lead_days` working days before it;
- `problem.overdue` once per deadline, and with it `escalate` at a tier whose rule escalates
  automatically, or `supervise` (督办) at the city tier;
- `close` (销号) once the feedback window after a resolution has passed without feedback;
- a `remind` on a deferred problem's review date.

Each action happens *as of the instant it fell due* (or the problem's latest event, if that is
later): two processes that decide on the same state decide the same facts, and an imported
history is routed as of its dates. An action's event id is derived from the problem, the action
and the instant or date it is due for, so appending it twice is a no-op (see `event_id`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from app.problems import domain
from app.problems.domain import SYSTEM_ACTOR, Command, Context, Fact, ProblemState, Status
from app.routing.policy import RoutingPolicy
from app.routing.tree import Tier

ACTIONS = ("remind", "review", "overdue", "close")
# A cascade (an import far in the past: overdue → escalated → overdue again → …) ends long before.
MAX_STEPS = 20
_NAMESPACE = uuid.UUID("3f0d8c52-6a0e-4d0b-9a57-8f1c7e2b5d40")


@dataclass(frozen=True, slots=True)
class Action:
    """One automatic action: its commands are decided together, one after the other (an overdue
    problem is marked and, by rule, escalated or supervised in the same append)."""

    name: str  # one of ACTIONS
    due_for: str  # the deadline, review date or resolution it is due for (ISO)
    at: datetime  # when it fell due
    commands: tuple[Command, ...]


def event_id(problem_id: str, action: Action, index: int) -> uuid.UUID:
    """The id of the `index`-th event of `action`: the same in every process, every time."""
    suffix = f"/{index}" if index else ""
    return uuid.uuid5(_NAMESPACE, f"{problem_id}/{action.name}/{action.due_for}{suffix}")


def due(state: ProblemState, now: datetime, policy: RoutingPolicy) -> list[Action]:
    """The automatic actions due on `state` at `now`, in the order they fell due."""
    if state.status is Status.resolved and state.resolved_at is not None:
        closes = policy.feedback_closes_at(state.resolved_at)
        if closes > now:
            return []
        days = policy.rules.feedback_window_days
        reason = f"no feedback within {days} working days of the resolution"
        return [
            Action("close", state.resolved_at.isoformat(), closes, (domain.Close(reason, automatic=True),))
        ]
    if not state.is_active:
        return []
    actions: list[Action] = []
    if state.status is Status.deferred and state.review_on and state.review_reminded_on != state.review_on:
        at = policy.calendar.start_of_day(state.review_on)
        if at <= now:
            reason = f"the deferral's review date {state.review_on.isoformat()} has come"
            command = domain.Remind(reason, kind="review")
            actions.append(Action("review", state.review_on.isoformat(), at, (command,)))
    if state.deadline is not None:
        actions += _deadline_actions(state, state.deadline, now, policy)
    return sorted(actions, key=lambda a: a.at)


def _deadline_actions(
    state: ProblemState, deadline: datetime, now: datetime, policy: RoutingPolicy
) -> list[Action]:
    key = deadline.isoformat()
    local = deadline.astimezone(policy.calendar.tz).isoformat()
    overdue_at = deadline + timedelta(seconds=1)
    if overdue_at > now:
        if state.reminded_for == deadline:
            return []
        at = policy.reminder_at(deadline)
        if at > now:
            return []
        reason = f"the deadline {local} is near"
        return [Action("remind", key, at, (domain.Remind(reason),))]
    if state.overdue_noted_for == deadline:
        return []
    reason = f"overdue at the {state.tier.value} tier: the deadline {local} passed"
    commands: list[Command] = [domain.MarkOverdue(reason)]
    if state.tier is Tier.city:
        commands.append(domain.Supervise(reason, automatic=True))
    elif policy.auto_escalates(state.tier):
        commands.append(domain.Escalate(f"{reason}; escalated automatically", automatic=True))
    return [Action("overdue", key, overdue_at, tuple(commands))]


def plan(state: ProblemState, now: datetime, policy: RoutingPolicy) -> list[tuple[Action, list[Fact]]]:
    """Decide the earliest action due at `now`, then the earliest due on the state it left, and
    so on until nothing more is due. Raises `AppError` if a command is refused (say, there is no
    room to escalate to): then nothing of the plan should be appended."""
    steps: list[tuple[Action, list[Fact]]] = []
    for _ in range(MAX_STEPS):
        actions = due(state, now, policy)
        if not actions:
            break
        action = actions[0]
        when = max(action.at, state.updated_at)
        facts: list[Fact] = []
        for command in action.commands:
            decided = domain.decide(state, command, Context(when, SYSTEM_ACTOR, policy))
            for fact in decided:
                state = domain.evolve(state, fact)
            facts += decided
        steps.append((action, facts))
    return steps
