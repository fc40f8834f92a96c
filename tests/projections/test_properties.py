"""Property: for random histories (random commands at random, often equal, business times, through
the real command service), every projection equals a naive recomputation that replays the events:

* the problem view and `problem_units` equal the fold of each stream;
* `problem_history` is a contiguous run of intervals, and the one in force at any instant holds
  what the stream folded up to that instant says;
* solve rates (every grouping) and aging (both bases), now and as of random instants, equal
  figures computed here from the folded states, straight from the definitions
  (`docs/statistics.md`), without the temporal model and without SQL.

The database keeps what earlier examples wrote, so each check covers every problem stored.
"""

from __future__ import annotations

import contextlib
import itertools
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import httpx
import sqlalchemy as sa
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from app.core.errors import AppError
from app.core.security import Caller, Role
from app.events import RecordedEvent
from app.main import Services
from app.problems import domain
from app.problems.domain import ProblemState, Status
from app.problems.projection import HISTORY_TYPES, history_rows, view_row
from app.problems.schemas import SubmitIn
from app.problems.service import facts_of
from app.projections.history import problem_history
from app.projections.problem_view import problem_units, problem_view
from app.projections.stats import Cohort, GroupBy
from app.projections.tallies import KEY, problem_tallies, tally
from app.routing.tree import Tier
from tests.conftest import T0
from tests.factories import D1, D2, City

CALLER = Caller(key_id="property", name="property test", role=Role.admin)
START = datetime(2026, 9, 28, 0, 0, tzinfo=UTC)
BUCKETS = ((0, 3, "0-3"), (4, 7, "4-7"), (8, 15, "8-15"), (16, 30, "16-30"), (31, 10**6, "31+"))

steps = st.lists(
    st.tuples(
        st.sampled_from([0, 0, 5, 60, 240, 1440, 2880, 4320, 10080]),  # minutes after the previous
        st.integers(0, 999),  # which of the commands the state allows, and its parameters
    ),
    max_size=10,
)
problems = st.lists(
    st.tuples(st.integers(0, 45 * 24 * 60 // 30).map(lambda n: n * 30), st.integers(0, 7), steps),
    min_size=1,
    max_size=4,
)
instants = st.lists(
    st.integers(0, 50 * 24 * 60 // 10).map(lambda n: START + timedelta(minutes=10 * n)), max_size=3
)


def choices(state: ProblemState) -> list[str]:
    """Commands that make sense in the state (the decider may still refuse some: a closed return
    window, a passed deadline); withdrawing is rare so that histories go deep."""
    held = ["accept"] if state.status is Status.assigned else []
    held += ["assign", "assign_joint"] if state.tier is not Tier.local else []
    held += ["decide_return"] if state.return_request else ["return"]
    held += ["decide_extension"] if state.extension_request else ["extend"]
    held += ["escalate", "resolve", "resolve", "defer", "progress"]
    return {
        Status.open: ["assign", "assign_joint", "escalate", "resolve", "progress"],
        Status.assigned: held,
        Status.in_progress: held,
        Status.deferred: ["resume", "resolve", "progress"],
        Status.resolved: ["feedback", "feedback", "reopen", "close"],
        Status.closed: ["reopen", "progress"],
        Status.withdrawn: ["progress"],
    }[state.status]


def builder(k: int, state: ProblemState, city: City, when: datetime) -> domain.Command:
    options = choices(state)
    name = "withdraw" if k % 40 == 39 and state.is_active else options[k % len(options)]
    k //= len(options)
    district = state.district_id
    leads = {
        Tier.local: list(city.groups[district]),
        Tier.district: list(city.function_groups[district]),
        Tier.city: list(city.departments),
    }[state.tier]
    match name:
        case "accept":
            return domain.Accept()
        case "escalate":
            return domain.Escalate(reason="上交")
        case "assign" | "assign_joint":
            lead = leads[k % len(leads)]
            coops = tuple(u for u in leads if u != lead)[:1] if name == "assign_joint" else ()
            return domain.Assign(lead_unit_id=lead, cooperating_unit_ids=coops)
        case "return":
            return domain.Return(reason="不属本单位")
        case "decide_return":
            return domain.DecideReturn(accept=k % 2 == 0)
        case "resolve":
            return domain.Resolve(resolution="办结")
        case "feedback":
            return domain.Feedback(score=1 + k % 5)
        case "reopen":
            return domain.Reopen(reason="重新办理")
        case "withdraw":
            return domain.Withdraw(reason="撤回")
        case "progress":
            return domain.Progress(note="进展")
        case "extend":
            return domain.RequestExtension(
                deadline=(state.deadline or when) + timedelta(days=1 + k % 9), reason="延期"
            )
        case "decide_extension":
            return domain.DecideExtension(approve=k % 3 != 0)
        case "defer":
            review = (when + timedelta(hours=8)).date() + timedelta(days=1 + k % 9)
            return domain.Defer(explanation="暂缓", plan=(domain.PlanStep("计划", review),), review_on=review)
        case "resume":
            return domain.Resume()
        case _:
            return domain.Close(reason="结案")


async def play(services: Services, city: City, history: list[tuple[int, int, list[Any]]]) -> None:
    units = [*city.function_groups[D1], *city.function_groups[D2], *city.departments, *city.groups[D1]]
    units += list(city.groups[D2])
    for offset, enterprise, script in history:
        when = START + timedelta(minutes=offset)
        district = D1 if enterprise < 4 else D2
        body = SubmitIn(
            enterprise_id=city.enterprise(district, enterprise % 4),
            category="utilities" if enterprise % 2 else "land",
            title="问题",
            description="描述",
            occurred_at=when,
        )
        state, _ = await services.problems.submit(CALLER, body)
        for minutes, k in script:
            when = min(when + timedelta(minutes=minutes), T0)

            def build(s: ProblemState, k: int = k, when: datetime = when) -> domain.Command:
                return builder(k, s, city, when)

            with contextlib.suppress(AppError):  # refused: the history simply goes on without it
                await services.problems.execute(CALLER, state.id, build, occurred_at=when, units=units)


# -- the naive side ------------------------------------------------------------------------------


def fold_until(
    problem_id: str, events: Sequence[RecordedEvent], instant: datetime | None
) -> ProblemState | None:
    chosen = [e for e in events if instant is None or e.occurred_at <= instant]
    return domain.fold(problem_id, facts_of(chosen))


def response(events: Sequence[RecordedEvent], instant: datetime) -> tuple[datetime | None, datetime | None]:
    """(start of the latest assignment to a lead unit, its first answer), up to `instant`."""
    assigned = answered = None
    for e in events:
        if e.occurred_at > instant:
            break
        if e.type in (domain.SUBMITTED, domain.ASSIGNED):
            assigned, answered = e.occurred_at, None
        elif e.type in (domain.ESCALATED, domain.RETURNED):
            assigned = answered = None
        elif e.type in (domain.ACCEPTED, domain.DEFERRED, domain.RESOLVED) and assigned and not answered:
            answered = e.occurred_at
    return assigned, answered


def naive_rate(n: int, d: int) -> float | None:
    return None if d == 0 else float((Decimal(n) / Decimal(d)).quantize(Decimal("0.001"), ROUND_HALF_UP))


def naive_solve_rates(
    streams: dict[str, list[RecordedEvent]],
    services: Services,
    group_by: str,
    instant: datetime | None,
    window: int,
) -> dict[str | None, Counter[str]]:
    at = instant or T0
    calendar = services.calendar
    out: dict[str | None, Counter[str]] = {}
    for stream_id, events in streams.items():
        pid = stream_id.removeprefix("problem-")
        s = fold_until(pid, events, instant)
        if s is None or s.status is Status.withdrawn:
            continue
        solved = s.status in domain.SOLVED
        key = {
            "tier": (s.solved_tier if solved else s.tier),
            "unit": s.solved_by_unit_id if solved else s.holder_unit_id,
            "district": s.district_id,
            "category": s.category,
        }[group_by]
        c = out.setdefault(str(key) if key is not None else None, Counter())
        c["received"] += 1
        c["solved"] += solved
        c["solved_on_the_spot"] += solved and s.solved_tier is Tier.local and s.escalations == 0
        c["on_time"] += solved and (
            s.deadline is None or (s.resolved_at is not None and s.resolved_at <= s.deadline)
        )
        c["feedback_count"] += s.feedback_score is not None
        c["satisfied"] += s.satisfied is True
        assigned, answered = response(events, at)
        if assigned is not None:
            window_end = calendar.deadline(assigned, window)
            c["response_due"] += answered is not None or window_end < at
            c["responded"] += answered is not None and answered <= window_end
        c["open"] += s.is_active
        c["overdue"] += s.is_overdue(at)
        c["returned"] += s.returns > 0
        c["joint"] += len(s.cooperating_unit_ids) > 0
    return out


def naive_aging(
    streams: dict[str, list[RecordedEvent]], services: Services, basis: str, instant: datetime | None
) -> Counter[str]:
    at = instant or T0
    out: Counter[str] = Counter()
    for stream_id, events in streams.items():
        s = fold_until(stream_id.removeprefix("problem-"), events, instant)
        if s is None or not s.is_active:
            continue
        age = (
            services.calendar.calendar_days_elapsed(s.submitted_at, at)
            if basis == "calendar"
            else services.calendar.working_days_elapsed(s.submitted_at, at)
        )
        out[next(label for low, high, label in BUCKETS if low <= age <= high)] += 1
        out["open"] += 1
        out["overdue"] += s.is_overdue(at)
    return out


TRACKED: dict[str, Callable[[ProblemState], Any]] = {
    "tier": lambda s: s.tier.value,
    "status": lambda s: s.status.value,
    "holder_unit_id": lambda s: s.holder_unit_id,
    "lead_unit_id": lambda s: s.lead_unit_id,
    "cooperators": lambda s: len(s.cooperating_unit_ids),
    "deadline": lambda s: s.deadline,
    "resolved_at": lambda s: s.resolved_at,
    "solved_tier": lambda s: s.solved_tier.value if s.solved_tier else None,
    "solved_by_unit_id": lambda s: s.solved_by_unit_id,
    "escalations": lambda s: s.escalations,
    "returns": lambda s: s.returns,
    "reopens": lambda s: s.reopens,
    "feedback_score": lambda s: s.feedback_score,
    "satisfied": lambda s: s.satisfied,
}


# -- the property --------------------------------------------------------------------------------


@settings(
    max_examples=15,
    deadline=None,
    # The database keeps every example's problems, so a smaller example is no simpler: no shrinking.
    phases=(Phase.explicit, Phase.reuse, Phase.generate),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(history=problems, moments=instants, group_by=st.sampled_from(["tier", "unit", "district", "category"]))
async def test_every_projection_equals_a_replay(
    client: httpx.AsyncClient,
    services: Services,
    city: City,
    history: list[tuple[int, int, list[Any]]],
    moments: list[datetime],
    group_by: str,
) -> None:
    await play(services, city, history)
    await services.projections.catch_up()
    streams = dict((await services.store.read_streams(await stream_ids(services))).items())
    async with services.db.read() as conn:
        view = {r.id: r._asdict() for r in (await conn.execute(sa.select(problem_view))).all()}
        units = {(r.problem_id, r.unit_id) for r in (await conn.execute(sa.select(problem_units))).all()}
        intervals = (
            await conn.execute(
                sa.select(problem_history).order_by(problem_history.c.problem_id, "valid_from")
            )
        ).all()

    # The problem view and its units.
    expected_units = set()
    for sid, events in streams.items():
        pid = sid.removeprefix("problem-")
        state = fold_until(pid, events, None)
        assert state is not None
        assert view[pid] == view_row(state)
        expected_units |= {(pid, u) for u in state.involved_units}
    assert units == expected_units and len(view) == len(streams)

    # The temporal model: contiguous intervals, each holding the replayed state of its instant.
    by_problem: dict[str, list[Any]] = {}
    for row in intervals:
        by_problem.setdefault(row.problem_id, []).append(row)
    assert set(by_problem) == set(view)
    for pid, rows in by_problem.items():
        events = streams[f"problem-{pid}"]
        assert rows[0].valid_from == events[0].occurred_at and rows[-1].valid_to is None
        for earlier, later in itertools.pairwise(rows):
            assert earlier.valid_to == later.valid_from
        # Rebuilds read only the types the intervals depend on: the same rows without the others.
        read = [e for e in events if e.type in HISTORY_TYPES]
        assert history_rows(pid, read, services.calendar) == history_rows(pid, events, services.calendar)
        for row in rows:
            probes = [row.valid_from] + ([row.valid_to - timedelta(microseconds=1)] if row.valid_to else [])
            for probe in probes:
                state = fold_until(pid, events, probe)
                assert state is not None
                differ = {
                    k: (getattr(row, k), f(state)) for k, f in TRACKED.items() if getattr(row, k) != f(state)
                }
                assert not differ, (pid, probe, differ, [(e.type, e.occurred_at) for e in events])

    # Statistics, now and as of random instants.
    window = (await services.rules.current()).response_window_days
    for instant in [None, *moments]:
        if instant is not None and instant > T0:
            continue
        params = {"group_by": group_by} | ({"as_of": instant.isoformat()} if instant else {})
        body = (await client.get("/v1/stats/solve-rates", params=params)).json()
        naive = naive_solve_rates(streams, services, group_by, instant, window)
        got = {g["key"]: g for g in body["groups"]}
        assert set(got) == set(naive), (instant, group_by)
        for key, counts in naive.items():
            for name in ("received", "solved", "solved_on_the_spot", "on_time", "feedback_count"):
                assert got[key][name] == counts[name], (instant, key, name)
            for name in ("satisfied", "response_due", "responded", "open", "overdue", "returned", "joint"):
                assert got[key][name] == counts[name], (instant, key, name)
            assert got[key]["solve_rate"] == naive_rate(counts["solved"], counts["received"])
            assert got[key]["response_rate"] == naive_rate(counts["responded"], counts["response_due"])
        for basis in ("calendar", "working"):
            aging = (await client.get("/v1/stats/aging", params={**params, "basis": basis})).json()["total"]
            ages = naive_aging(streams, services, basis, instant)
            assert aging["buckets"] == {label: ages[label] for _, _, label in BUCKETS}, (instant, basis)
            assert (aging["open"], aging["overdue"]) == (ages["open"], ages["overdue"])

    # The monthly tallies: kept batch by batch, they equal a sum over the current intervals; and
    # current figures read through them equal the temporal model's for any cohort and district.
    async with services.db.read() as conn:
        stored = {
            tuple(r[: len(KEY)]): list(r[len(KEY) :])
            for r in (await conn.execute(sa.select(problem_tallies))).all()
        }
    assert stored == tally([r._mapping for r in intervals if r.valid_to is None], services.calendar.tz)
    stats = services.stats
    window = (await services.rules.current()).response_window_days
    cutoff = stats.response_cutoff(T0, window)
    bounds = sorted(moments[:2])
    cohorts = [
        Cohort(),
        Cohort(START + timedelta(days=5, hours=7), START + timedelta(days=40)),  # October and edges
        Cohort(*bounds) if len(bounds) == 2 else Cohort(bounds[0] if bounds else START),
    ]
    for cohort, district in itertools.product(cohorts, [None, D1]):
        scope = problem_history.c.district_id == district if district else None
        for grouping in GroupBy:
            tallied = await stats._from_tallies(scope, grouping, cohort, T0, window, cutoff)
            direct = await stats._from_history(scope, grouping, cohort, None, T0, window, cutoff)
            if tallied is not None:
                assert tallied == direct, (cohort, district, grouping)
            # As of a past instant: the tallies less what began since, plus what ended since.
            for instant in [m for m in moments if m <= T0][:2]:
                cut = stats.response_cutoff(instant, window)
                derived = await stats._derived(scope, grouping, cohort, instant, window, cut)
                replayed = await stats._from_history(scope, grouping, cohort, instant, instant, window, cut)
                assert derived is None or derived == replayed, (instant, cohort, district, grouping)


async def stream_ids(services: Services) -> list[str]:
    events = await services.store.scan_streams("problem-", limit=1_000_000)
    return sorted({e.stream_id for e in events})
