"""Rebuilding read models from the log: byte-identical to the incrementally built ones, the same
schema afterwards, and the service keeps answering (and writing) while it runs."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import sqlalchemy as sa

from app.core.clock import ManualClock
from app.core.db import Database
from app.events import NewEvent
from app.main import Services
from app.problems.domain import EVENT_DESCRIPTIONS
from app.problems.projection import HISTORY_TYPES, history_rows
from app.projections.history import problem_history
from app.projections.problem_view import problem_units, problem_view
from app.projections.rebuild import Rebuilder
from app.projections.tallies import problem_tallies
from tests.conftest import _asyncpg_dsn
from tests.factories import D1, City, command, submit
from tests.projections.helpers import at, caught_up, submit_at
from tests.server import dispatchroom
from tests.test_migrations import _inspect

TABLES = (problem_view, problem_units, problem_history, problem_tallies)


async def dump(db: Database) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the problem read models as the driver returns it, in key order."""
    out = {}
    async with db.read() as conn:
        for table in TABLES:
            columns = ", ".join(c.name for c in table.columns)
            order = ", ".join(c.name for c in table.primary_key.columns)
            result = await conn.exec_driver_sql(f"SELECT {columns} FROM {table.name} ORDER BY {order}")
            out[table.name] = [tuple(r) for r in result.all()]
    return out


async def varied_history(client: httpx.AsyncClient, city: City) -> None:
    """Every kind of event, imported and live, including several at one instant."""
    fg_a, fg_b = city.function_groups[D1]
    t = datetime(2026, 11, 2, 1, 0, tzinfo=UTC)
    p1 = await submit_at(client, city.enterprise(), t)
    await at(client, p1, t + timedelta(hours=1), "accept")
    await at(client, p1, t + timedelta(hours=2), "resolve", {"resolution": "现场解决"})
    await at(client, p1, t + timedelta(hours=3), "feedback", {"score": 5})
    p2 = await submit_at(client, city.enterprise(index=1), t, urgency="urgent")
    steps: list[tuple[timedelta, str, dict[str, Any]]] = [
        (timedelta(hours=1), "escalate", {"reason": "上交"}),
        (timedelta(hours=2), "assign", {"lead_unit_id": fg_a, "cooperating_unit_ids": [fg_b]}),
        (timedelta(hours=3), "return", {"reason": "不属本组"}),
        (timedelta(hours=4), "decide-return", {"accept": True}),
        (timedelta(hours=5), "assign", {"lead_unit_id": fg_b}),
        (timedelta(hours=6), "accept", {}),
        (timedelta(hours=6), "progress", {"note": "已约谈"}),
        (timedelta(days=1), "request-extension", {"deadline": "2026-11-30", "reason": "等待审批"}),
        (timedelta(days=1, hours=1), "decide-extension", {"approve": True}),
        (
            timedelta(days=2),
            "defer",
            {
                "explanation": "待指标",
                "plan": [{"step": "申报", "due_on": "2026-11-20"}],
                "review_on": "2026-11-20",
            },
        ),
        (timedelta(days=3), "resume", {}),
        (timedelta(days=3), "supervise", {"note": "请加快"}),
        (timedelta(days=4), "resolve", {"resolution": "办结"}),
        (timedelta(days=5), "feedback", {"score": 2}),
        (timedelta(days=6), "resolve", {"resolution": "再次办结"}),
        (timedelta(days=7), "close", {"reason": "企业未回访"}),
    ]
    for delay, name, body in steps:
        await at(client, p2, t + delay, name, body)
    p3 = await submit_at(client, city.enterprise("220103"), t)
    await at(client, p3, t + timedelta(hours=1), "escalate", {"reason": "上交"})
    await at(client, p3, t + timedelta(hours=1), "escalate", {"reason": "超出区级权限"})
    await at(client, p3, t + timedelta(hours=2), "assign", {"lead_unit_id": city.departments[0]})
    p4 = await submit_at(client, city.enterprise(index=2), t)
    await at(client, p4, t + timedelta(days=1), "withdraw", {"reason": "撤回"})
    live = await submit(client, city.enterprise(index=3))
    await command(client, live["id"], "accept")


async def test_a_rebuild_is_byte_identical_and_keeps_the_schema(
    client: httpx.AsyncClient, services: Services, city: City, db_url: str, clock: ManualClock
) -> None:
    await varied_history(client, city)
    await caught_up(services)
    before = await dump(services.db)
    assert len(before["problem_view"]) == 5 and len(before["problem_history"]) > 20
    version = [c.name for c in problem_view.columns].index("version")
    events = sum(row[version] for row in before["problem_view"])
    for name in ("problem_view", "problem_history"):
        report = await services.projections.rebuild(name)
        assert (report.events + report.skipped, report.streams, report.caught_up) == (events, 5, 0)
    assert await dump(services.db) == before
    diff, _ = await _inspect(db_url)
    assert diff == []
    status = {s.name: s for s in await services.projections.status()}
    assert status["problem_history"].lag_events == 0 and status["problem_view"].kind == "inline"
    # And the live paths go on writing into the new tables.
    p = await submit(client, city.enterprise())
    clock.advance(timedelta(minutes=1))
    await command(client, p["id"], "accept")
    await caught_up(services)
    after = await dump(services.db)
    assert (
        len(after["problem_view"]) == 6
        and len(after["problem_history"]) == len(before["problem_history"]) + 2
    )


async def test_the_temporal_model_is_rebuilt_from_the_types_it_reads(
    client: httpx.AsyncClient, services: Services, city: City, clock: ManualClock
) -> None:
    """A rebuild of `problem_history` scans only `HISTORY_TYPES`: notes, supervision, reminders,
    overdue marks and requests awaiting a ruling change no interval, whenever they happen (between
    other events, at the instant of one, last)."""
    await varied_history(client, city)
    fg = city.function_groups[D1][0]
    t = datetime(2026, 11, 3, 1, 0, tzinfo=UTC)
    p = await submit_at(client, city.enterprise(index=1), t)
    await at(client, p, t, "progress", {"note": "同时"})
    await at(client, p, t + timedelta(hours=1), "escalate", {"reason": "上交"})
    await at(client, p, t + timedelta(hours=2), "assign", {"lead_unit_id": fg})
    await at(client, p, t + timedelta(hours=3), "return", {"reason": "不属本组"})
    await at(client, p, t + timedelta(hours=4), "decide-return", {"accept": False})
    extension = {"deadline": "2026-11-30", "reason": "等待审批"}
    await at(client, p, t + timedelta(hours=5), "request-extension", extension)
    await at(client, p, t + timedelta(hours=5), "supervise", {"note": "请加快"})
    await at(client, p, t + timedelta(hours=6), "accept")
    await at(client, p, t + timedelta(hours=7), "supervise", {"note": "再催"})
    live = (await submit(client, city.enterprise(index=2)))["id"]
    await command(client, live, "escalate", {"reason": "上交"})
    await command(client, live, "assign", {"lead_unit_id": fg, "deadline": "2026-11-23"})
    for day in (20, 24):  # a reminder before the deadline, then the overdue mark
        clock.set(datetime(2026, 11, day, 1, 0, tzinfo=UTC))
        await services.scheduler.tick()
    await caught_up(services)
    before = await dump(services.db)
    ids = [f"problem-{row[0]}" for row in before["problem_view"]]
    streams = await services.store.read_streams(ids)
    left_out: Counter[str] = Counter()
    for stream_id, stream in streams.items():
        pid = stream_id.removeprefix("problem-")
        read = [e for e in stream if e.type in HISTORY_TYPES]
        left_out.update(e.type for e in stream if e.type not in HISTORY_TYPES)
        assert history_rows(pid, read, services.calendar) == history_rows(pid, stream, services.calendar)
    assert set(left_out) == set(EVENT_DESCRIPTIONS) - set(HISTORY_TYPES)  # each of them happened
    report = await services.projections.rebuild("problem_history")
    assert report.skipped == sum(left_out.values())
    assert report.events + report.skipped == sum(len(stream) for stream in streams.values())
    assert await dump(services.db) == before


async def test_the_service_keeps_answering_during_a_rebuild(
    client: httpx.AsyncClient, services: Services, city: City
) -> None:
    await varied_history(client, city)
    statuses: list[int] = []
    stop = asyncio.Event()
    submitted = 1  # the live problem of varied_history (+4 imported)

    async def traffic() -> None:
        nonlocal submitted
        i = 0
        while not stop.is_set():
            p = await submit(client, city.enterprise(index=i % 4))
            submitted += 1
            for response in (
                await client.post(f"/v1/problems/{p['id']}/accept", json={}),
                await client.get("/v1/problems", params={"limit": 5}),
                await client.get(f"/v1/problems/{p['id']}"),
                await client.get("/v1/stats/solve-rates"),
            ):
                statuses.append(response.status_code)
            i += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(traffic())
    rebuilder = Rebuilder(services.db, services.store, services.clock, batch=3)
    reports = [
        await rebuilder.rebuild(services.projections.get(n)) for n in ("problem_view", "problem_history")
    ]
    during = len(statuses)
    await asyncio.sleep(0.2)
    stop.set()
    await task
    assert during > 0 and set(statuses) == {200}
    assert all(r.events > 0 for r in reports)
    await caught_up(services)
    built = await dump(services.db)
    assert len(built["problem_view"]) == submitted + 4
    for name in ("problem_view", "problem_history"):
        await services.projections.rebuild(name)
    assert await dump(services.db) == built


def test_the_command_line(db_url: str, tmp_path: Path) -> None:
    env = {"DATABASE_URL": db_url}
    assert dispatchroom("demo", env=env).returncode == 0
    status = dispatchroom("projections", "status", env=env)
    assert status.returncode == 0, status.stderr
    lines = [line.split("\t") for line in status.stdout.strip().splitlines()]
    assert lines[0] == ["name", "kind", "checkpoint", "head", "lag_events", "lag_seconds", "updated_at"]
    rows = {cells[0]: cells for cells in lines[1:]}
    assert rows["problem_view"][1] == "inline" and rows["problem_view"][4] == "0"
    assert rows["problem_history"][1] == "follower" and int(rows["problem_history"][4]) > 0  # nobody followed
    rebuilt = dispatchroom("projections", "rebuild", "problem_history", env=env)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert (
        "problem_history:" in rebuilt.stdout
        and "events/s" in rebuilt.stdout
        and "42 streams" in rebuilt.stdout
    )
    after = dispatchroom("projections", "status", env=env).stdout
    assert {line.split("\t")[0]: line.split("\t")[4] for line in after.strip().splitlines()[1:]}[
        "problem_history"
    ] == "0"
    unknown = dispatchroom("projections", "rebuild", "nope", env=env)
    assert unknown.returncode == 2 and "not_found" in unknown.stdout


async def test_the_follower_lag_is_a_metric(
    client: httpx.AsyncClient, services: Services, city: City
) -> None:
    await submit(client, city.enterprise())
    await caught_up(services)
    await services.projections.status()  # what the runner's loop does every few seconds
    metrics = (await client.get("/metrics")).text
    assert 'dispatchroom_follower_lag_events{follower="problem_history"} 0.0' in metrics
    assert 'dispatchroom_follower_lag_seconds{follower="problem_history"} 0.0' in metrics


async def test_a_failed_rebuild_leaves_the_live_tables_alone(
    client: httpx.AsyncClient, services: Services, city: City
) -> None:
    await submit(client, city.enterprise())
    await caught_up(services)
    before = await dump(services.db)
    # A stream the problem projector cannot fold (it does not start with a submission).
    await services.store.append("problem-broken", 0, [NewEvent("problem.accepted", {})])
    rebuilder = Rebuilder(services.db, services.store, services.clock, batch=1)
    with pytest.raises(ValueError, match=r"starts with problem\.submitted"):
        await rebuilder.rebuild(services.projections.get("problem_view"))
    assert await dump(services.db) == before
    async with services.db.read() as conn:
        tables = await conn.run_sync(lambda c: sa.inspect(c).get_table_names())
    assert not [t for t in tables if t.endswith("__rebuild")]


@pytest.mark.postgres_only
async def test_a_transaction_in_another_database_does_not_make_every_stream_look_changed(
    client: httpx.AsyncClient, services: Services, city: City, db_url: str
) -> None:
    """The rebuild knows which streams changed during its pass from the sequencer's horizon, not
    the cluster-wide snapshot xmin: another database's long transaction changes nothing."""
    other = await asyncpg.connect(_asyncpg_dsn(db_url).rsplit("/", 1)[0] + "/postgres")
    try:
        tx = other.transaction()
        await tx.start()
        # holds a transaction id older than every event below, like a long write elsewhere
        await other.execute("SELECT pg_current_xact_id()")
        await varied_history(client, city)
        await caught_up(services)
        report = await services.projections.rebuild("problem_history")
        await tx.rollback()
    finally:
        await other.close()
    assert (report.streams, report.caught_up) == (5, 0)


@pytest.mark.postgres_only
async def test_a_parallel_rebuild_in_worker_processes_is_byte_identical(
    client: httpx.AsyncClient, services: Services, city: City, settings: Any
) -> None:
    """Large rebuilds fold ranges of streams in worker processes (`REBUILD_PROCESSES`); forced
    here on a small log, cut into more ranges than there are streams."""
    await varied_history(client, city)
    for i in range(6):
        await submit(client, city.enterprise(index=i % 4))
    await caught_up(services)
    before = await dump(services.db)
    workers = settings.model_copy(update={"rebuild_processes": 2})
    for name in ("problem_view", "problem_history"):
        rebuilder = Rebuilder(services.db, services.store, services.clock, settings=workers, parallel_min=0)
        report = await rebuilder.rebuild(services.projections.get(name))
        assert report.streams == 11 and report.caught_up == 0
    assert await dump(services.db) == before
