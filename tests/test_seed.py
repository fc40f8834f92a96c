"""`dispatchroom seed`: a synthetic history written in bulk is what the services would have
written: every event numbered once, the read models equal to a rebuild from the log, the
followers past it, and the same seed twice refused."""

from __future__ import annotations

import pytest

from app.core.clock import SystemClock
from app.core.settings import Settings
from app.projections.problem_view import problem_view
from tests.instances import another_instance
from tests.projections.test_rebuild import dump
from tests.server import dispatchroom


@pytest.mark.postgres_only
async def test_a_seeded_history_equals_a_rebuild_and_is_numbered_once(
    db_url: str, settings: Settings
) -> None:
    env = {"DATABASE_URL": db_url}
    args = ("seed", "--problems", "60", "--processes", "1", "--enterprises-per-district", "5")
    done = dispatchroom(*args, env=env, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Seeded 60 problems" in done.stdout

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

    again = dispatchroom(*args, env=env, timeout=300)
    assert again.returncode == 2 and "this database already" in again.stdout.replace("\n", " ")
