"""`dispatchroom seed`: a synthetic but realistic history of many problems, for benchmarks and
capacity planning (PostgreSQL).

The city is the demo city with all ten of its districts, created through the real services (units,
routing rules, enterprises: events like any other) unless the database has units already. Every
problem's history is decided by the real decider (`problems/domain.py`): its submission, then a
path drawn from the proportions of the source practice (南关区, June 2019: 5 of 175 solved on the
spot, 125 handed to district function groups, 45 to the city command room), i.e. about 3 % solved
on the spot, 70 % at the district, 25 % at the city and a few withdrawn, with solve times from a
long-tailed distribution, satisfaction scores, and the automatic actions (reminders, overdue
marks, automatic escalation, supervision, closing) that the scheduler would have appended, each
as of the instant it fell due. A step that would lie after now is not taken: recent problems are
still open, old ones closed, and the aging has long tails.

Writing is bulk: generator processes (one per CPU) each fold and COPY their chunk of problems,
with the rows of the problem view and the temporal model computed by the projections' own row
functions, in one transaction per chunk that records its transaction id in `events.tx_id`, so the
ordinary sequencer numbers the events (positions without gaps, as for any commit); followers'
checkpoints then move past the seeded history (its read models are written already; webhooks do
not announce it). Run it against a database no server is using.

Into a database without problems, the load goes without indexes: those of the tables written in
bulk (and their unique and foreign keys) are dropped before it and built once at its end from the
SQLAlchemy metadata, so the schema ends as migrated; sorting each index once is far cheaper than
maintaining a dozen random keys row by row. Only the events' key and their (tx_id, id) index stay,
which the sequencer reads. The sequencer then numbers the whole seeded history at the end, in a few
large passes into `event_positions` without its indexes (far cheaper per event than passes that
keep up with the load; `bench/seed_cost.py` measures both). Seeding into a database that has
problems keeps every index and numbers as it goes. If a bulk seed is interrupted, the next seed
first builds whatever indexes are missing.
"""

from __future__ import annotations

import asyncio
import gc
import math
import os
import random
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from multiprocessing import get_context
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from app.core.db import BULK_SETTINGS, run_ddl, upsert
from app.core.errors import AppError
from app.core.requestmeta import event_metadata
from app.core.security import SYSTEM, Caller, Role
from app.core.settings import Settings
from app.demo import DEMO_CALLER, _city, demo_enterprises, demo_rules, demo_units
from app.directory.service import unit_from_row
from app.directory.tables import enterprises, units
from app.events import registry
from app.events.tables import event_positions, event_sequencer, events
from app.main import Services
from app.problems import automatic, domain
from app.problems.domain import Actor, Context, Fact, ProblemState
from app.problems.projection import history_rows, problem_projections, view_row
from app.projections.history import problem_history as history_table
from app.projections.problem_view import problem_units, problem_view
from app.projections.rebuild import copy_records
from app.projections.runner import checkpoints
from app.routing.calendar import WorkCalendar
from app.routing.policy import RoutingPolicy
from app.routing.rules import RuleSet
from app.routing.tree import UnitKind, UnitRef
from app.webhooks.fanout import Fanout

SEED_DISTRICTS = 10
CHUNK = 2_000  # problems per generator transaction
SEQUENCE_BATCH = 20_000  # events per sequencer pass (each pass one statement, within the timeout)
YEARS = 2.0  # the span of submission times, ending now
SEED_CALLER = Caller(key_id="seed", name="种子数据", role=Role.admin)
SEED_ACTOR = Actor(id=SEED_CALLER.key_id, role=Role.admin)
SEED_META = event_metadata(SEED_CALLER, None, imported=True)
EVENT_COLUMNS = [
    "event_id",
    "stream_id",
    "stream_version",
    "type",
    "schema_version",
    "data",
    "metadata",
    "occurred_at",
    "recorded_at",
    "tx_id",
]
# The tables written in bulk, and the indexes of theirs the load needs (see the module's text).
PROBLEM_TABLES = (problem_view, problem_units, history_table)
BULK_TABLES = (events, event_positions, *PROBLEM_TABLES)
KEPT_INDEXES = frozenset({"pk_events", "ix_events_tx_id_id"})
BULK_SEQUENCE_BATCH = 1_000_000  # events per sequencer pass after a load without indexes
CATEGORY_WEIGHTS = {
    "utilities": 18,
    "planning_permit": 14,
    "financing": 14,
    "land": 10,
    "labour_talent": 10,
    "policy": 12,
    "market_access": 8,
    "environmental_assessment": 5,
    "demolition": 4,
    "other": 5,
}


@dataclass(frozen=True)
class SeedCity:
    """What a generator process needs (picklable)."""

    dsn: str
    tz: str
    rules: dict[str, Any]
    units: list[UnitRef]
    enterprises: list[tuple[str, str, str, str]]  # id, name, district, service unit
    now: datetime
    seed: int


@dataclass(frozen=True)
class SeedReport:
    problems: int
    events: int
    seconds: float


# -- the city -----------------------------------------------------------------------------------


async def ensure_city(services: Services, enterprises_per_district: int) -> None:
    """Create the ten-district demo city through the services, unless units exist already."""
    async with services.db.read() as conn:
        if (await conn.execute(sa.select(sa.func.count()).select_from(units))).scalar():
            return
    for unit in demo_units(SEED_DISTRICTS):
        await services.directory.create_unit(DEMO_CALLER, unit)
    district_ids = [d["district_id"] for d in _city()["districts"][:SEED_DISTRICTS]]
    await services.problems.rules.replace(DEMO_CALLER, demo_rules(district_ids), note="种子数据的交办规则")
    for enterprise in demo_enterprises(enterprises_per_district, seed=11, districts=SEED_DISTRICTS):
        await services.directory.register_enterprise(DEMO_CALLER, enterprise)


async def load_city(services: Services, dsn: str, seed: int) -> SeedCity:
    async with services.db.read() as conn:
        unit_rows = (await conn.execute(sa.select(units))).all()
        ent_rows = (
            await conn.execute(
                sa.select(
                    enterprises.c.id,
                    enterprises.c.name,
                    enterprises.c.district_id,
                    enterprises.c.service_unit_id,
                ).order_by(enterprises.c.id)
            )
        ).all()
    if not ent_rows:
        raise AppError("validation_failed", "the directory has units but no enterprises to seed problems for")
    rules = await services.rules.current()
    return SeedCity(
        dsn=dsn,
        tz=services.settings.city_timezone,
        rules=rules.to_data(),
        units=[unit_from_row(r) for r in unit_rows],
        enterprises=[tuple(r) for r in ent_rows],
        now=services.clock.now(),
        seed=seed,
    )


# -- one problem's life ---------------------------------------------------------------------------


def lifecycle(rng: random.Random, fgs: Sequence[str], depts: Sequence[str]) -> list[tuple[float, Any]]:
    """(hours after the previous step, command) of one problem, in the practice's proportions."""
    r = rng.random()
    solve_hours = rng.lognormvariate(math.log(120), 1.1)  # median 5 days, a long tail
    steps: list[tuple[float, Any]] = []
    if r < 0.03:  # solved on the spot by the service group
        steps += [(rng.uniform(0.5, 4), domain.Accept())]
        steps += [(rng.uniform(1, 24), domain.Resolve(resolution="现场解决"))]
    elif r < 0.73:  # the district's function groups
        lead = rng.choice(fgs)
        coops = (rng.choice([f for f in fgs if f != lead]),) if rng.random() < 0.3 else ()
        steps += [(rng.uniform(1, 48), domain.Escalate(reason="需区级协调"))]
        steps += [(rng.uniform(1, 24), domain.Assign(lead_unit_id=lead, cooperating_unit_ids=coops))]
        steps += [(rng.uniform(1, 48), domain.Accept())]
        if rng.random() < 0.9:
            steps += [(solve_hours, domain.Resolve(resolution="办结"))]
    elif r < 0.98:  # on to the city command room
        steps += [(rng.uniform(1, 48), domain.Escalate(reason="需区级协调"))]
        steps += [(rng.uniform(1, 72), domain.Escalate(reason="超出区级权限"))]
        steps += [(rng.uniform(1, 48), domain.Assign(lead_unit_id=rng.choice(depts)))]
        steps += [(rng.uniform(1, 72), domain.Accept())]
        if rng.random() < 0.8:
            steps += [(solve_hours * 2, domain.Resolve(resolution="办结"))]
    else:
        return [(rng.uniform(1, 200), domain.Withdraw(reason="企业自行解决，撤回"))]
    if steps[-1][1].__class__ is domain.Resolve and rng.random() < 0.75:
        score = rng.choices([1, 2, 3, 4, 5], weights=[2, 3, 10, 30, 55])[0]
        steps += [(rng.uniform(4, 120), domain.Feedback(score=score))]
    return steps


def _uuid(rng: random.Random) -> uuid.UUID:
    return uuid.UUID(int=rng.getrandbits(128), version=4)


Planned = list[tuple[Fact, uuid.UUID | None, str | None]]  # a fact, its event id, its automatic action


def _catch_up(state: ProblemState, until: datetime, policy: RoutingPolicy, out: Planned) -> ProblemState:
    """Append what the scheduler would have appended up to `until` (each as of its instant)."""
    try:
        steps = automatic.plan(state, until, policy)
    except AppError:
        return state
    for action, facts in steps:
        for index, fact in enumerate(facts):
            out.append((fact, automatic.event_id(state.id, action, index), action.name))
            state = domain.evolve(state, fact)
    return state


def problem_history(
    rng: random.Random, city: SeedCity, policy: RoutingPolicy, fgs: dict[str, list[str]], depts: list[str]
) -> tuple[str, Planned, ProblemState]:
    """A problem's id, its facts (with the automatic actions' event ids and names), its state."""
    ent = city.enterprises[rng.randrange(len(city.enterprises))]
    span = YEARS * 365 * 86400
    at = city.now - timedelta(seconds=span * rng.random() ** 0.8)  # more problems lately
    pid = str(_uuid(rng))
    command = domain.Submit(
        problem_id=pid,
        enterprise=domain.EnterpriseInfo(*ent),
        category=rng.choices(list(CATEGORY_WEIGHTS), weights=list(CATEGORY_WEIGHTS.values()))[0],
        title="企业反映的问题",
        description="企业在生产经营中遇到的困难，需协调解决。",
        urgency=domain.Urgency.urgent if rng.random() < 0.08 else domain.Urgency.normal,
    )
    out: Planned = []
    facts = domain.submit(command, Context(at, SEED_ACTOR, policy))
    out += [(f, None, None) for f in facts]
    state = domain.fold(pid, facts)
    assert state is not None
    for hours, step in lifecycle(rng, fgs[ent[2]], depts):
        at = at + timedelta(hours=hours)
        if at > city.now:
            break
        state = _catch_up(state, at, policy, out)
        try:
            new = domain.decide(state, step, Context(at, SEED_ACTOR, policy))
        except AppError:
            continue  # the automatic actions took another path (say, it escalated on its own)
        for fact in new:
            state = domain.evolve(state, fact)
        out += [(f, None, None) for f in new]
    state = _catch_up(state, city.now, policy, out)
    return pid, out, state


# -- a generator process ------------------------------------------------------------------------


def generate_chunk(city: SeedCity, index: int, count: int) -> tuple[int, int]:
    """Decide, fold and COPY `count` problems (chunk `index`) in one transaction; returns
    (problems, events). Runs in a generator process."""
    return asyncio.run(_write_chunk(city, index, count))


async def _write_chunk(city: SeedCity, index: int, count: int) -> tuple[int, int]:
    gc.disable()  # the fold allocates many short-lived objects and no cycles
    try:
        chunk = chunk_rows(city, index, count)
        conn = await asyncpg.connect(city.dsn)
        try:
            return count, await copy_chunk(conn, chunk)
        except asyncpg.UniqueViolationError:
            return -1, 0  # this chunk of this seed is stored already (an exception would not pickle)
        finally:
            await conn.close()
    finally:
        gc.enable()


@dataclass(frozen=True)
class ChunkRows:
    events: list[tuple[Any, ...]]  # EVENT_COLUMNS but the transaction id
    tables: dict[str, list[dict[str, Any]]]  # read-model rows by table


def chunk_rows(city: SeedCity, index: int, count: int) -> ChunkRows:
    """Decide and fold `count` problems (chunk `index` of the seed): their events and read-model rows."""
    rng = random.Random(city.seed * 1_000_003 + index)
    calendar = WorkCalendar(ZoneInfo(city.tz))
    policy = RoutingPolicy(calendar, RuleSet.from_data(city.rules), {u.id: u for u in city.units})
    fgs: dict[str, list[str]] = {}
    for u in city.units:
        if u.kind is UnitKind.district_function_group and u.district_id:
            fgs.setdefault(u.district_id, []).append(u.id)
    depts = [u.id for u in city.units if u.kind is UnitKind.city_department]
    # The problem view's rows are `view_row` of the state the generation folded (what its
    # projection computes by folding the same facts again); the temporal model's come from
    # its projection's row function, given the facts as they read back from the log.
    versions = {t: registry.current_version(t) for t in domain.EVENT_DESCRIPTIONS}
    recorded_at = datetime.now(UTC)
    metas: dict[str | None, str] = {}  # metadata as stored, by automatic action
    event_rows: list[tuple[Any, ...]] = []
    table_rows: dict[str, list[dict[str, Any]]] = {
        problem_view.name: [],
        problem_units.name: [],
        history_table.name: [],
    }
    for _ in range(count):
        pid, facts, state = problem_history(rng, city, policy, fgs, depts)
        stream = f"problem-{pid}"
        read_back = []
        for version, (fact, event_id, action) in enumerate(facts, start=1):
            text = orjson.dumps(fact.data)  # once: the event's data as stored, and as read back
            if action not in metas:
                meta = event_metadata(SYSTEM, None, automatic=action) if action else SEED_META
                metas[action] = orjson.dumps(meta).decode()
            read_back.append(Fact(fact.type, orjson.loads(text), fact.occurred_at))
            event_rows.append(
                (
                    event_id or _uuid(rng),
                    stream,
                    version,
                    fact.type,
                    versions[fact.type],
                    text.decode(),
                    metas[action],
                    fact.occurred_at,
                    recorded_at,
                )
            )
        table_rows[problem_view.name].append(view_row(state))
        table_rows[problem_units.name] += [{"problem_id": pid, "unit_id": u} for u in state.involved_units]
        table_rows[history_table.name] += history_rows(pid, read_back, calendar)
    return ChunkRows(event_rows, table_rows)


async def copy_chunk(conn: asyncpg.Connection, chunk: ChunkRows) -> int:
    """COPY a chunk in one transaction that records its id in `events.tx_id` (for the sequencer);
    returns the number of events."""
    async with conn.transaction():
        tx_id = await conn.fetchval("SELECT pg_current_xact_id()")
        records = [(*row, tx_id) for row in chunk.events]
        await conn.copy_records_to_table("events", records=records, columns=EVENT_COLUMNS)
        for table, rows in chunk.tables.items():
            columns, values = copy_records(table, rows)
            await conn.copy_records_to_table(table, records=values, columns=columns)
    return len(chunk.events)


# -- the whole run ------------------------------------------------------------------------------


async def seed(
    services: Services,
    problems: int,
    *,
    seed_value: int = 1,
    processes: int | None = None,
    enterprises_per_district: int = 300,
    progress: Callable[[int, int], None] | None = None,
    phase: Callable[[str], None] | None = None,
) -> SeedReport:
    """Write `problems` synthetic problems (see the module's description)."""
    if not services.db.is_postgres:
        raise AppError("validation_failed", "seed writes in bulk with COPY: it needs PostgreSQL")
    loop = asyncio.get_running_loop()
    started = loop.time()
    say = phase or (lambda _: None)
    say("the city: units, routing rules, enterprises")
    await ensure_city(services, enterprises_per_district)
    dsn = services.db.dsn
    city = await load_city(services, dsn, seed_value)
    for runner in services.projections.runners.values():
        await runner.ensure_checkpoint()
    await build_indexes(dsn)  # any an interrupted seed left out (none, normally)
    bulk = await no_problems_yet(services)
    if bulk:
        await services.store.sequence_all()  # the city's events, with the indexes still there
        say("indexes of the bulk-loaded tables: dropped until the end")
        await drop_indexes(dsn)
    say("problems: decided, folded and copied")
    sizes = [min(CHUNK, problems - i) for i in range(0, problems, CHUNK)]
    workers = processes or os.cpu_count() or 1
    done = events = 0
    try:
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
            pending = [loop.run_in_executor(pool, generate_chunk, city, i, n) for i, n in enumerate(sizes)]
            for future in asyncio.as_completed(pending):
                n, e = await future
                if n < 0:
                    already = "this --seed was written to this database already: choose another"
                    raise AppError("validation_failed", already)
                done += n
                events += e
                if not bulk:
                    await services.store.sequence(SEQUENCE_BATCH)  # positions keep up with the commits
                if progress:
                    progress(done, events)
    except BaseException:
        await build_indexes(dsn)  # leave the schema whole (the sequencer numbers what was loaded)
        raise
    await finish(services, dsn, bulk, say)
    return SeedReport(problems, events, loop.time() - started)


async def finish(services: Services, dsn: str, bulk: bool, say: Callable[[str], None]) -> None:
    """Number what is left, build the indexes, move the followers past the seeded history,
    VACUUM ANALYZE, then the read models derived from the seeded ones."""
    if bulk:  # the sequencer reads only the events: the problem tables' indexes meanwhile
        say("positions, and the problem tables' indexes")
        await asyncio.gather(_number(services, bulk), build_indexes(dsn, PROBLEM_TABLES, connections=1))
    else:
        say("positions")
        await _number(services, bulk)
    say("indexes")
    await build_indexes(dsn)
    async with services.db.transaction() as conn:
        head = (await conn.execute(sa.select(event_sequencer.c.last_position))).scalar() or 0
        for name in [*services.projections.runners, Fanout.name]:
            row = {"name": name, "position": head, "updated_at": services.clock.now()}
            await conn.execute(upsert("postgresql", checkpoints, row, key=["name"]))
    say("VACUUM ANALYZE (visibility map and planner statistics)")
    tables = [t.name for p in problem_projections(services.calendar) for t in p.tables]
    await run_ddl(dsn, [f"VACUUM (ANALYZE) {table}" for table in ("events", "event_positions", *tables)])
    say("derived read models (monthly tallies)")
    await finish_derived_read_models(services, dsn)


async def _number(services: Services, bulk: bool) -> None:
    """Give every seeded event its position (after a bulk load, in passes longer than the
    statement timeout allows)."""
    async with services.db.autocommit() as conn:
        if bulk:
            await conn.exec_driver_sql("SET statement_timeout = 0")
            await conn.exec_driver_sql(f"SET work_mem = '{BULK_SETTINGS['work_mem']}'")
        try:
            while await services.store.sequence(BULK_SEQUENCE_BATCH if bulk else SEQUENCE_BATCH, conn=conn):
                pass
        finally:
            await conn.exec_driver_sql("RESET statement_timeout")
            await conn.exec_driver_sql("RESET work_mem")


async def finish_derived_read_models(services: Services, dsn: str) -> None:
    """The one place where read models computed from the seeded ones (by SQL, after the indexes
    and statistics above) are brought up to date: the summary tables, then their statistics."""
    await services.projections.recompute_summaries()
    summaries = [p.summary.table.name for p in problem_projections(services.calendar) if p.summary]
    await run_ddl(dsn, [f"VACUUM (ANALYZE) {table}" for table in summaries])


# -- indexes of the bulk load -------------------------------------------------------------------


def _deferred() -> list[tuple[str, str, str, str]]:
    """(table, name, create, drop) of every index and key of the bulk-loaded tables that the load does
    without, as the metadata (and so the migrations) define them, in the order to create them."""
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    out: list[tuple[tuple[bool, int], str, str, str, str]] = []
    for table in BULK_TABLES:
        ddl: list[tuple[Any, sa.schema.ExecutableDDLElement, sa.schema.ExecutableDDLElement, bool]] = [
            (
                c.name,
                sa.schema.AddConstraint(c),
                sa.schema.DropConstraint(c),
                isinstance(c, sa.ForeignKeyConstraint),
            )
            for c in table.constraints
            if isinstance(c, sa.PrimaryKeyConstraint | sa.UniqueConstraint | sa.ForeignKeyConstraint)
        ]
        ddl += [(i.name, sa.schema.CreateIndex(i), sa.schema.DropIndex(i), False) for i in table.indexes]
        for i, (name, create, drop, foreign) in enumerate(ddl):
            if name not in KEPT_INDEXES:
                sql = str(create.compile(dialect=dialect)), str(drop.compile(dialect=dialect))
                out.append(((foreign, i), table.name, str(name), sql[0], sql[1]))
    # The tables taken in turn: builders at work at once mostly sort different tables (adding a
    # key locks its table). Foreign keys last: they check against the keys they refer to.
    return [(table, name, create, drop) for _, table, name, create, drop in sorted(out, key=lambda d: d[0])]


async def _existing_indexes(dsn: str) -> set[str]:
    """The names of the indexes and constraints the bulk-loaded tables have."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() AND tablename = ANY($1)"
            " UNION SELECT conname FROM pg_constraint WHERE conrelid = ANY($1::text[]::regclass[])",
            [t.name for t in BULK_TABLES],
        )
    finally:
        await conn.close()
    return {r[0] for r in rows}


async def no_problems_yet(services: Services) -> bool:
    """Whether the database holds no problem at all (no events, no read-model rows)."""
    found = sa.union_all(
        *(sa.select(sa.literal(1)).select_from(t).limit(1) for t in PROBLEM_TABLES),
        sa.select(sa.literal(1)).where(events.c.stream_id.startswith("problem-")).limit(1),
    )
    async with services.db.read() as conn:
        return (await conn.execute(sa.select(sa.func.count()).select_from(found.subquery()))).scalar() == 0


async def drop_indexes(dsn: str) -> None:
    existing = await _existing_indexes(dsn)
    drops = [drop for _, name, _, drop in reversed(_deferred()) if name in existing]  # foreign keys first
    await run_ddl(dsn, drops, connections=1)


async def build_indexes(dsn: str, tables: Sequence[sa.Table] = BULK_TABLES, connections: int = 2) -> None:
    """Create whichever of the deferred indexes of `tables` is missing (all of them after a bulk
    load)."""
    existing = await _existing_indexes(dsn)
    names = {t.name for t in tables}
    missing = [create for table, name, create, _ in _deferred() if table in names and name not in existing]
    await run_ddl(dsn, missing, connections)


def default_settings() -> Settings:
    """Seeding needs no background work of its own (the loop sequences as it goes)."""
    return Settings(background=False)
