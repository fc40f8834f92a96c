"""The scheduler at scale (PostgreSQL).

1. Finding what is due among 1,000,000 problems: the work-list queries against a problem view of
   a million rows, 90 % of them long closed and some thousands due. Rows go straight into the
   view (no event streams), so this measures finding, not appending; it prints each work list's
   plan and the time to page through all of them.
2. Doing it: problems submitted through the real services two months ago, with automatic
   escalation on, then one tick (each problem: marked overdue and escalated twice, then
   supervised at the city: six events in one append).
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from app.core.clock import ManualClock
from app.core.settings import Settings
from app.demo import DEMO_CALLER, demo_enterprises, demo_rules, demo_units
from app.main import Services
from app.migrate import upgrade
from app.problems.scheduler import work_lists
from app.problems.schemas import SubmitIn
from app.routing.policy import RoutingPolicy
from bench.common import scratch_database

PROBLEMS = int(os.environ.get("BENCH_PROBLEMS", "1000000"))
PROCESSED = int(os.environ.get("BENCH_PROCESSED", "1000"))
NOW = datetime(2026, 11, 20, 1, 0, tzinfo=UTC)  # Friday 09:00 in the city

# One INSERT … SELECT: 90 % closed long ago, the rest active with deadlines over ±60 days
# (those past their deadline marked overdue already, but for one in 97), some resolved in the
# last two weeks, some deferred.
FILL = """
INSERT INTO problem_view (
    id, enterprise_id, enterprise_name, district_id, category, title, description, urgency,
    reporter_unit_id, tier, status, holder_unit_id, cooperating_unit_ids, deadline, review_on,
    submitted_at, tier_entered_at, holder_since, updated_at, resolved_at, escalations, returns,
    supervisions, reminders, reopens, unrouted, returned_too_often, needs_attention, paused_seconds,
    last_event, version, pending_overdue, pending_reminder, pending_review, pending_close)
SELECT lpad(i::text, 36, '0'), 'E', 'e', '220102', 'utilities', 't', 'd', 'normal',
       'g1', 'district', s.status, 'fg1', '[]', s.deadline, s.review_on,
       p.now - interval '200 days', p.now - interval '100 days', p.now - interval '100 days',
       p.now - interval '1 day', s.resolved_at, 1, 0, 0, 0, 0, false, false, i % 5000 = 0, 0,
       'problem.assigned', 3,
       CASE WHEN s.status IN ('open', 'assigned', 'in_progress', 'deferred') AND NOT s.marked
            THEN s.deadline END,
       CASE WHEN s.status IN ('open', 'assigned', 'in_progress', 'deferred') AND NOT s.marked
            THEN s.deadline END,
       CASE WHEN s.status = 'deferred' AND (s.review_on > p.today OR i % 3 = 0) THEN s.review_on END,
       CASE WHEN s.status = 'resolved' THEN s.resolved_at END
FROM (SELECT CAST(:now AS timestamptz) AS now, CAST(:today AS date) AS today, CAST(:n AS int) AS n) p,
     generate_series(1::bigint, p.n) AS i,
LATERAL (SELECT
    CASE WHEN i % 10 <> 0 THEN 'closed'
         WHEN i % 100 = 10 THEN 'resolved'
         WHEN i % 100 = 20 THEN 'deferred'
         ELSE 'assigned' END AS status,
    p.now + make_interval(mins => ((i * 7919) % 172800 - 86400)::int) AS deadline,
    (i * 7919) % 172800 < 86400 AND i % 97 <> 0 AS marked,
    (p.today + ((i % 30)::int - 1))::date AS review_on,
    p.now - make_interval(mins => ((i * 104729) % 20160)::int) AS resolved_at
) s
"""


async def main() -> None:
    async with scratch_database("dr_bench_due") as (url, _dsn):
        await upgrade(url)
        services = Services(Settings(database_url=url, environment="test"), ManualClock(NOW))
        db = services.db
        today = services.calendar.business_date(NOW)
        started = time.perf_counter()
        async with db.transaction() as conn:
            await conn.execute(sa.text(FILL), {"n": PROBLEMS, "now": NOW, "today": today})
        async with db.autocommit() as conn:
            await conn.exec_driver_sql("VACUUM ANALYZE problem_view")
        print(f"{PROBLEMS} problems written in {time.perf_counter() - started:.0f} s")
        policy = RoutingPolicy(services.calendar, await services.rules.current(), {})

        def explain(conn: object, cursor: object, statement: str, params: object, *_: object) -> object:
            return "EXPLAIN (ANALYZE, COSTS OFF, SUMMARY ON) " + statement, params

        async with db.read() as conn:
            sa.event.listen(conn.sync_connection, "before_cursor_execute", explain, retval=True)
            for name, listing in work_lists(NOW, policy).items():
                plan = await conn.execute(listing.limit(services.scheduler.batch))
                print(f"\n### {name}\n" + "\n".join(row[0] for row in plan))
        started = time.perf_counter()
        due = [pid async for pid in services.scheduler.due_problems(NOW)]
        elapsed = time.perf_counter() - started
        print(f"\nall work lists paged through: {len(due)} problems in {elapsed * 1000:.1f} ms")
        for horizon in (timedelta(0), timedelta(days=30)):
            started = time.perf_counter()
            count = len([pid async for pid in services.scheduler.due_problems(NOW + horizon)])
            print(
                f"due at now + {horizon.days:2d} days: {count:7d} in {(time.perf_counter() - started):.2f} s"
            )
        await db.dispose()

    async with scratch_database("dr_bench_tick") as (url, _dsn):
        await upgrade(url)
        clock = ManualClock(NOW - timedelta(days=60))
        services = Services(Settings(database_url=url, environment="test"), clock)
        await services.bootstrap()
        await load_city(services)
        started = time.perf_counter()
        tick = await services.scheduler.run_due(NOW)
        elapsed = time.perf_counter() - started
        appended = sum(tick.events.values())
        print(
            f"\none tick over {PROCESSED} problems two months overdue: {appended} events in {elapsed:.1f} s "
            f"({PROCESSED / elapsed:.0f} problems/s, {appended / elapsed:.0f} events/s)"
        )
        await services.db.dispose()


async def load_city(services: Services) -> None:
    for unit in demo_units():
        await services.directory.create_unit(DEMO_CALLER, unit)
    enterprises = demo_enterprises()
    for enterprise in enterprises:
        await services.directory.register_enterprise(DEMO_CALLER, enterprise)
    rules = {**demo_rules(), "auto_escalate": {"local": True, "district": True}}
    await services.rules.replace(DEMO_CALLER, rules)
    for i in range(PROCESSED):
        body = SubmitIn(
            enterprise_id=enterprises[i % len(enterprises)].id,
            category="utilities",
            title="t",
            description="d",
        )
        await services.problems.submit(DEMO_CALLER, body)
