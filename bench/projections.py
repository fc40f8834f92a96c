"""Projections at a size this machine generates in minutes (`BENCH_PROBLEMS`, default 100,000
problems, about 6 events each), on PostgreSQL:

1. synthetic histories over two years, decided by the real decider on the demo city's routing
   tree and COPYed into the event log (positions assigned in bulk);
2. rebuilds of `problem_view` (inline) and `problem_history` (follower) from that log: events/s;
3. statistics, aging, problem pages, rankings and the dispatch report: p50/p95 of repeated calls
   through the service layer (what a route runs, without HTTP);
4. the append hot path with the problem view written inline, with the temporal model's two
   writes added (what an inline `problem_history` would cost), and the follower's throughput.

The issue's targets are stated for 1,000,000 problems; the scale work (issue 8) runs this at that
size. Every line says the size it ran at.
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
import sqlalchemy as sa

from app.core.clock import ManualClock
from app.core.security import Caller, Role
from app.core.settings import Settings
from app.demo import load_demo
from app.directory.tables import units
from app.events import NewEvent, registry
from app.main import Services
from app.migrate import upgrade
from app.problems import domain
from app.problems.asof import list_as_of
from app.problems.domain import Actor, Context, ProblemState
from app.problems.projection import view_writes
from app.problems.service import facts_of
from app.projections.history import problem_history
from app.projections.periods import parse_period
from app.projections.problem_view import ProblemFilter, to_api
from app.projections.rankings import Score
from app.projections.stats import Basis, Cohort, GroupBy
from app.routing.policy import RoutingPolicy
from app.routing.rules import RuleSet
from app.routing.tree import Tier, UnitKind
from bench.common import measure, scratch_database

PROBLEMS = int(os.environ.get("BENCH_PROBLEMS", "100000"))
REPEAT = int(os.environ.get("BENCH_REPEAT", "30"))
CLIENTS = int(os.environ.get("BENCH_CLIENTS", "8"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "5"))
NOW = datetime(2026, 11, 16, 1, 0, tzinfo=UTC)  # Monday 09:00 in the city
FIRST = datetime(2024, 11, 16, 1, 0, tzinfo=UTC)
ADMIN = Caller(key_id="bench", name="bench", role=Role.admin)
ACTOR = Actor(id="bench", role=Role.admin)


def lifecycle(rng: random.Random, fgs: list[str], depts: list[str]) -> list[tuple[float, Any]]:
    """(hours after the previous step, command) of one synthetic problem."""
    r = rng.random()
    steps: list[tuple[float, Any]] = []
    if r < 0.12:  # solved on the spot
        steps += [(2, domain.Accept()), (rng.uniform(4, 60), domain.Resolve(resolution="现场解决"))]
        steps += [(rng.uniform(10, 80), domain.Feedback(score=rng.choice([3, 4, 5, 5, 5])))]
    elif r < 0.80:  # handed to a district function group
        lead = rng.choice(fgs)
        coops = (rng.choice([f for f in fgs if f != lead]),) if rng.random() < 0.3 else ()
        steps += [(rng.uniform(1, 48), domain.Escalate(reason="需区级协调"))]
        steps += [(rng.uniform(1, 24), domain.Assign(lead_unit_id=lead, cooperating_unit_ids=coops))]
        steps += [(rng.uniform(1, 48), domain.Accept())]
        if rng.random() < 0.8:
            steps += [(rng.uniform(24, 500), domain.Resolve(resolution="办结"))]
            steps += [(rng.uniform(10, 100), domain.Feedback(score=rng.choice([2, 4, 4, 5, 5, 5])))]
    elif r < 0.95:  # on to the city
        steps += [(rng.uniform(1, 48), domain.Escalate(reason="需区级协调"))]
        steps += [(rng.uniform(1, 48), domain.Escalate(reason="超出区级权限"))]
        steps += [(rng.uniform(1, 48), domain.Assign(lead_unit_id=rng.choice(depts)))]
        steps += [(rng.uniform(1, 72), domain.Accept())]
        if rng.random() < 0.6:
            steps += [(rng.uniform(48, 900), domain.Resolve(resolution="办结"))]
    else:
        steps += [(rng.uniform(1, 200), domain.Withdraw(reason="撤回"))]
    return steps


def synthesize(
    n: int, policy: RoutingPolicy, enterprises: list[Any], seed: int = 11
) -> list[tuple[Any, ...]]:
    """COPY records of `n` problems' events, decided by the real decider."""
    rng = random.Random(seed)
    by_district: dict[str, list[str]] = {}
    for unit in policy.units.values():
        if unit.kind is UnitKind.district_function_group and unit.district_id:
            by_district.setdefault(unit.district_id, []).append(unit.id)
    depts = [u.id for u in policy.units.values() if u.kind is UnitKind.city_department]
    categories = [
        "land",
        "planning_permit",
        "financing",
        "utilities",
        "labour_talent",
        "policy",
        "market_access",
    ]
    span = (NOW - FIRST).total_seconds() - 3 * 86400
    records: list[tuple[Any, ...]] = []
    meta = orjson.dumps({"actor": "bench", "role": "admin", "imported": True}).decode()
    for i in range(n):
        ent = enterprises[i % len(enterprises)]
        at = FIRST + timedelta(seconds=rng.uniform(0, span))
        pid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        facts = domain.submit(
            domain.Submit(
                problem_id=pid,
                enterprise=domain.EnterpriseInfo(ent.id, ent.name, ent.district_id, ent.service_unit_id),
                category=rng.choice(categories),
                title="问题",
                description="企业反映的问题",
            ),
            Context(at, ACTOR, policy),
        )
        state = domain.fold(pid, facts)
        assert state is not None
        for hours, command in lifecycle(rng, by_district[ent.district_id], depts):
            at = min(at + timedelta(hours=hours), NOW)
            new = domain.decide(state, command, Context(at, ACTOR, policy))
            for fact in new:
                state = domain.evolve(state, fact)
            facts += new
        for version, fact in enumerate(facts, start=1):
            records.append(
                (
                    uuid.UUID(int=rng.getrandbits(128), version=4),
                    f"problem-{pid}",
                    version,
                    fact.type,
                    registry.current_version(fact.type),
                    orjson.dumps(fact.data).decode(),
                    meta,
                    fact.occurred_at,
                    NOW,
                )
            )
    return records


async def timed(name: str, size: str, op: Callable[[], Awaitable[Any]]) -> None:
    await op()  # warm
    samples = []
    for _ in range(REPEAT):
        t = time.perf_counter()
        await op()
        samples.append(time.perf_counter() - t)
    samples.sort()
    p95 = samples[min(len(samples) - 1, int(0.95 * len(samples)))] * 1000
    print(f"{name:58s} p50 {statistics.median(samples) * 1000:7.1f} ms   p95 {p95:7.1f} ms   ({size})")


async def main() -> None:
    async with scratch_database("dr_bench_proj") as (url, dsn):
        await upgrade(url)
        settings = Settings(database_url=url, environment="test", background=False, db_pool_size=CLIENTS)
        svc = Services(settings, ManualClock(NOW))
        await svc.bootstrap()
        await load_demo(svc.directory, svc.problems, now=NOW, problems_count=0)
        async with svc.db.read() as conn:
            ids = list((await conn.execute(sa.select(units.c.id))).scalars())
            enterprises = list((await conn.execute(sa.text("SELECT * FROM enterprises ORDER BY id"))).all())
        policy = RoutingPolicy(svc.calendar, RuleSet(), await svc.directory.units_by_id(ids))

        t = time.perf_counter()
        records = synthesize(PROBLEMS, policy, enterprises)
        size = f"{PROBLEMS:,} problems, {len(records):,} events"
        print(f"# {size}; generated in {time.perf_counter() - t:.0f} s")
        while await svc.store.sequence():  # the directory's events first
            pass
        raw = await asyncpg.connect(dsn)
        t = time.perf_counter()
        columns = ["event_id", "stream_id", "stream_version", "type", "schema_version", "data", "metadata"]
        columns += ["occurred_at", "recorded_at"]
        for i in range(0, len(records), 50_000):
            await raw.copy_records_to_table("events", records=records[i : i + 50_000], columns=columns)
        await raw.execute(  # the COPYed events (no transaction id) numbered after them, in bulk
            "INSERT INTO event_positions (position, event_row, type) "
            "SELECT (SELECT last_position FROM event_sequencer) + row_number() OVER (ORDER BY id), id, type "
            "FROM events WHERE tx_id IS NULL;"
            "UPDATE event_sequencer SET last_position = (SELECT max(position) FROM event_positions)"
        )
        print(f"# loaded into the log in {time.perf_counter() - t:.0f} s")
        del records

        for name in ("problem_view", "problem_history"):
            report = await svc.projections.rebuild(name)
            print(
                f"rebuild {name:42s} {report.events_per_second:9,.0f} events/s   "
                f"{report.events:,} events, {report.rows:,} rows in {report.build_seconds:.1f} s "
                f"(swap {report.swap_seconds * 1000:.0f} ms)   ({size})"
            )
        await raw.execute("VACUUM ANALYZE")

        stats, rankings, reports = svc.stats, svc.rankings, svc.reports
        district = "220102"
        dispatcher = Caller(key_id="d", name="d", role=Role.dispatcher, district_id=district)
        month = parse_period("2026-10")
        october = datetime(2026, 10, 1, 0, 0, tzinfo=UTC)
        print()
        await timed(
            "solve-rates by district (all time, now)",
            size,
            lambda: stats.solve_rates(ADMIN, GroupBy.district, Cohort(), None),
        )
        await timed(
            "solve-rates by unit (all time, now)",
            size,
            lambda: stats.solve_rates(ADMIN, GroupBy.unit, Cohort(), None),
        )
        await timed(
            "solve-rates by tier as of 1 Oct 2026",
            size,
            lambda: stats.solve_rates(ADMIN, GroupBy.tier, Cohort(), october),
        )
        await timed(
            "solve-rates by unit, October's problems",
            size,
            lambda: stats.solve_rates(
                ADMIN, GroupBy.unit, Cohort(month.start(svc.calendar.tz), month.end(svc.calendar.tz)), None
            ),
        )
        await timed(
            "solve-rates by category, one district's dispatcher",
            size,
            lambda: stats.solve_rates(dispatcher, GroupBy.category, Cohort(), None),
        )
        await timed(
            "aging by tier (calendar days, now)",
            size,
            lambda: stats.aging(ADMIN, Basis.calendar, GroupBy.tier, Cohort(), None, 10),
        )
        await timed(
            "aging by unit (working days) as of 1 Oct 2026",
            size,
            lambda: stats.aging(ADMIN, Basis.working, GroupBy.unit, Cohort(), october, 10),
        )
        flt = ProblemFilter(status=("in_progress",), district_id=district)

        async def page(**kw: Any) -> None:
            rows, _ = await svc.problems.list(ADMIN, kw.get("flt", flt), limit=50, cursor=None, now=NOW)
            [to_api(r, NOW, svc.calendar, tz=settings.tz) for r in rows]

        await timed("problem page: in_progress in a district, 50", size, page)
        await timed("problem page: overdue, 50", size, lambda: page(flt=ProblemFilter(overdue=True)))
        await timed(
            "problem page as of 1 Oct 2026: in_progress in a district",
            size,
            lambda: list_as_of(svc.problems, ADMIN, flt, october, limit=50, cursor=None),
        )
        await timed(
            "rankings of October (district function groups)",
            size,
            lambda: rankings.rankings(
                ADMIN, month, tier=Tier.district, score=Score.solve_rate, target=0.8, margin=0.1, as_of=None
            ),
        )
        await timed(
            "dispatch report of October (JSON)",
            size,
            lambda: reports.report(ADMIN, month, as_of=None, score=Score.solve_rate, target=0.8, margin=0.1),
        )
        await append_costs(svc, size)
        await raw.close()
        await svc.db.dispose()


async def append_costs(svc: Services, size: str) -> None:
    """A command's append with the problem view inline, and with the temporal model's two writes
    added inline; then the history follower catching up on what was appended."""
    async with svc.db.read() as conn:
        ids = list(
            (
                await conn.execute(
                    sa.text("SELECT id FROM problem_view WHERE status = 'in_progress' LIMIT 4000")
                )
            ).scalars()
        )
    streams = await svc.store.read_streams([f"problem-{i}" for i in ids])
    states: list[ProblemState] = []
    for sid, events in streams.items():
        state = domain.fold(sid.removeprefix("problem-"), facts_of(events))
        assert state is not None
        states.append(state)
    half = len(states) // 2
    pools = [states[:half], states[half:]]
    clock = svc.clock
    assert isinstance(clock, ManualClock)

    def op(pool: list[ProblemState], history: bool) -> Callable[[int, int], Awaitable[None]]:
        async def run(c: int, i: int) -> None:
            mine = range(c, len(pool), CLIENTS)  # each client its own problems: no conflicts
            index = mine[i % len(mine)]
            before = pool[index]
            at = before.updated_at + timedelta(seconds=1)
            fact = domain.Fact(domain.PROGRESS_REPORTED, {"note": "进展", "unit_id": None}, at)
            after = domain.evolve(before, fact)
            also = view_writes(svc.db.backend, before, after)
            if history:
                row = {c.name: None for c in problem_history.columns} | {
                    "problem_id": after.id,
                    "valid_from": at,
                    "submitted_at": after.submitted_at,
                    "district_id": after.district_id,
                    "category": after.category,
                    "tier": after.tier.value,
                    "status": after.status.value,
                    "cooperators": 0,
                    "escalations": 0,
                    "returns": 0,
                    "reopens": 0,
                }
                h = problem_history.c
                also += [
                    sa.update(problem_history)
                    .where(h.problem_id == after.id, h.valid_to.is_(None))
                    .values(valid_to=at),
                    sa.insert(problem_history).values(row),
                ]
            event = NewEvent(fact.type, fact.data, occurred_at=at)
            await svc.store.append(f"problem-{after.id}", before.version, [event], also=also)
            pool[index] = after

        return run

    stop = asyncio.Event()

    async def sequencer() -> None:
        while not stop.is_set():
            if not await svc.store.sequence():
                await asyncio.sleep(0.01)

    seq = asyncio.create_task(sequencer())
    print()
    inline = await measure("append + problem view (today's command)", CLIENTS, SECONDS, op(pools[0], False))
    print(inline.line() + f"   ({size})")
    both = await measure(
        "append + problem view + inline history (2 writes)", CLIENTS, SECONDS, op(pools[1], True)
    )
    print(both.line() + f"   ({size})")
    print(f"inline history / view only  {both.per_second / inline.per_second:5.2f}")
    stop.set()
    await seq
    runner = svc.projections.runners["problem_history"]
    lag = (await runner.status()).lag_events
    t = time.perf_counter()
    await runner.catch_up(600)
    print(f"history follower catching up {lag:,} events: {lag / (time.perf_counter() - t):,.0f} events/s")


if __name__ == "__main__":
    asyncio.run(main())
