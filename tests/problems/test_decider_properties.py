"""Property-based tests of the decider: random command sequences from random actors never
reach an invalid state, and folding the emitted facts reproduces the state."""

from __future__ import annotations

from datetime import date, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from app.core.errors import AppError
from app.problems import domain
from app.problems.domain import ACTIVE, HELD, SOLVED, SYSTEM_ACTOR, Status
from app.routing.tree import LEAD_KINDS, Tier
from tests.problems.world import (
    ADMIN,
    COMMANDER,
    DEPT,
    DISPATCHER,
    FG1,
    FG2,
    GROUP,
    PORTAL,
    T0,
    UNITS,
    VIEWER,
    ctx,
    submitted,
)

# Weighted so that histories go deep (admins, rooms and leads act most; withdrawing is rare).
ACTORS = [ADMIN] * 3 + [DISPATCHER, COMMANDER, FG1] * 2 + [GROUP, FG2, DEPT, PORTAL, VIEWER, SYSTEM_ACTOR]
LEADS = ["fg1", "fg2", "fg1", "cc-d1", "cc-d2", "fg9", "g1", None]

_weighted = [
    (4, st.builds(domain.Accept)),
    (3, st.builds(domain.Escalate, reason=st.just("r"))),
    (
        12,
        st.builds(
            domain.Assign,
            lead_unit_id=st.sampled_from(LEADS),
            cooperating_unit_ids=st.one_of(
                st.none(), st.lists(st.sampled_from(["fg1", "fg2", "cc-d2"]), max_size=2).map(tuple)
            ),
        ),
    ),
    (5, st.builds(domain.Return, reason=st.just("r"))),
    (5, st.builds(domain.DecideReturn, accept=st.booleans())),
    (1, st.builds(domain.Progress, note=st.just("n"))),
    (
        3,
        st.builds(
            domain.RequestExtension,
            reason=st.just("r"),
            deadline=st.integers(1, 40).map(lambda d: T0 + timedelta(days=d)),
        ),
    ),
    (5, st.builds(domain.DecideExtension, approve=st.booleans())),
    (
        2,
        st.builds(
            domain.Defer,
            explanation=st.just("e"),
            plan=st.just(()),
            review_on=st.integers(-2, 60).map(lambda d: date(2026, 11, 20) + timedelta(days=d)),
        ),
    ),
    (2, st.builds(domain.Resume)),
    (2, st.builds(domain.Resolve, resolution=st.just("done"))),
    (2, st.builds(domain.Feedback, score=st.integers(1, 5))),
    (1, st.builds(domain.Reopen, reason=st.just("r"))),
    (1, st.builds(domain.Supervise, note=st.just("n"))),
    (1, st.builds(domain.Remind, reason=st.just("r"))),
    (1, st.builds(domain.MarkOverdue)),
    (1, st.builds(domain.Withdraw, reason=st.just("r"))),
    (1, st.builds(domain.Close, reason=st.just("r"))),
]
commands = st.one_of(*[strategy for weight, strategy in _weighted for _ in range(weight)])
steps = st.lists(
    st.tuples(st.sampled_from(ACTORS), commands, st.integers(0, 72 * 60)),  # minutes between steps
    min_size=15,
    max_size=60,
)


def check_invariants(state: domain.ProblemState) -> None:
    assert state.status in Status and state.tier in Tier
    if state.status is Status.open:
        assert state.tier is not Tier.local, "only rooms hold open problems"
        assert state.lead_unit_id is None and state.room_unit_id is not None
        assert state.holder_unit_id == state.room_unit_id
    if state.status in HELD:
        assert state.lead_unit_id is not None and state.holder_unit_id == state.lead_unit_id
        lead = UNITS.get(state.lead_unit_id)
        if state.tier is not Tier.local:
            assert lead is not None and lead.kind in LEAD_KINDS[state.tier], "lead of the wrong tier"
    if state.status is Status.deferred:
        assert state.review_on is not None and state.deferred_at is not None
    else:
        assert state.review_on is None
    if state.status in SOLVED:
        assert state.resolved_at is not None and state.solved_tier is not None
    else:
        assert state.resolved_at is None or state.status is Status.withdrawn
    if state.status is Status.closed:
        assert state.closed_at is not None
    if state.status not in ACTIVE:
        assert state.extension_request is None and state.return_request is None
    assert (
        state.escalations == {Tier.local: 0, Tier.district: 1, Tier.city: state.escalations}[state.tier]
        or state.tier is Tier.city
    )
    assert state.lead_unit_id not in state.cooperating_unit_ids
    assert state.updated_at >= state.submitted_at


@settings(max_examples=500, deadline=None)
@given(steps=steps, category=st.sampled_from(["utilities", "demolition", "financing"]))
def test_random_histories_stay_valid_and_fold_back(steps: list, category: str) -> None:
    state, facts = submitted(category)
    at = T0
    for actor, command, minutes in steps:
        at += timedelta(minutes=minutes)
        try:
            new = domain.decide(state, command, ctx(actor, at))
        except AppError as error:
            assert error.status in (403, 409, 422), error.code  # noqa: PT017 - refusals only
            continue
        assert new, "an accepted command says what happened"
        for fact in new:
            state = domain.evolve(state, fact)
        facts += new
        check_invariants(state)
    assert state.version == len(facts)
    assert domain.fold("p1", facts) == state
