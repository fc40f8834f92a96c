"""`dispatchroom seed`: a synthetic history written in bulk is what the services would have
written: every event numbered once, the read models equal to a rebuild from the log, the
followers past it, the indexes it builds after the load exactly those of the migrated schema,
and the same seed twice refused."""

from __future__ import annotations

from typing import Any

import pytest

from app.core.clock import SystemClock
from app.core.db import Database
from app.core.settings import Settings
from app.demo.seed import BULK_TABLES
from app.projections.problem_view import problem_view
from tests.instances import another_instance
from tests.projections.test_rebuild import dump
from tests.server import dispatchroom


async def catalog(url: str) -> list[tuple[Any, ...]]:
    """The indexes and constraints of the bulk-loaded tables, as PostgreSQL defines them."""
    db = Database(url)
    try:
        async with db.read() as conn:
            driver: Any = (await conn.get_raw_connection()).driver_connection
            names = [t.name for t in BULK_TABLES]
            indexes = await driver.fetch(
                "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE tablename = ANY($1)", names
            )
            constraints = await driver.fetch(
                "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint"
                " WHERE conrelid::regclass::text = ANY($1)",
                names,
            )
    finally:
        await db.dispose()
    return sorted(tuple(r) for r in [*indexes, *constraints])


@pytest.mark.postgres_only
async def test_a_seeded_history_equals_a_rebuild_and_is_numbered_once(
    db_url: str, settings: Settings
) -> None:
    env = {"DATABASE_URL": db_url}
    migrated = await catalog(db_url)
    assert len(migrated) > 20
    args = ("seed", "--problems", "60", "--processes", "1", "--enterprises-per-district", "5")
    done = dispatchroom(*args, env=env, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Seeded 60 problems" in done.stdout
    assert "dropped until the end" in done.stdout, "a database without problems is loaded without indexes"
    assert await catalog(db_url) == migrated, "the indexes built after the load are the migrated ones"

    async with another_instance(settings, SystemClock(), background=False) as (services, _):
        seeded = await dump(services.db)
        assert len(seeded["problem_view"]) == 60 and len(seeded["problem_history"]) >= 60
        status_at = [c.name for c in problem_view.columns].index("status")
        statuses = {row[status_at] for row in seeded["problem_view"]}
        assert len(statuses) >= 3, statuses  # histories of different lengths: open, held, solved
        feed = await services.store.read_all(0, 100_000)
        assert [e.position for e in feed] == list(range(1, len(feed) + 1))
        assert await services.store.unsequenced() <= 1  # this instance's own start-up (the admin key)
        problem_events = [e for e in feed if e.stream_id.startswith("problem-")]
        assert {e.type for e in problem_events} >= {
            "problem.submitted",
            "problem.escalated",
            "problem.assigned",
        }
        status = {s.name: s for s in await services.projections.status()}
        last_seeded = max(e.position or 0 for e in problem_events)
        assert status["problem_history"].checkpoint >= last_seeded, (
            "the follower starts after the seeded history"
        )
        for name in ("problem_view", "problem_history"):
            await services.projections.rebuild(name)
        assert await dump(services.db) == seeded, "the seeded read models equal a rebuild from the log"

        async with services.db.autocommit() as conn:  # as a seed interrupted during its load leaves it
            for statement in (
                "DROP INDEX ix_problem_history_current",
                "ALTER TABLE events DROP CONSTRAINT uq_events_event_id",
                "ALTER TABLE event_positions DROP CONSTRAINT fk_event_positions_event_row_events",
            ):
                await conn.exec_driver_sql(statement)

    again = dispatchroom(*args, env=env, timeout=300)
    assert again.returncode == 2 and "this database already" in again.stdout.replace("\n", " ")
    assert "dropped until the end" not in again.stdout, "a database with problems keeps its indexes"
    assert await catalog(db_url) == migrated, "the next seed builds what an interrupted one left out"
