"""As of a past instant: a problem, a list and the statistics say what was true then, even after
later events (a reopen, a re-assignment) changed the present; imported history lands where it
happened."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest
import sqlalchemy as sa

from app.main import Services
from app.projections.history import problem_history
from app.projections.settled import Settled, settled_figures
from app.projections.tallies import problem_tallies
from tests.factories import D1, City, auth, make_key
from tests.projections.helpers import at, by_key, caught_up, get, submit_at


def day(n: int, hour: int = 9) -> datetime:
    """November 2026, `hour` o'clock in the city."""
    return datetime(2026, 11, n, hour - 8, 0, tzinfo=UTC)


@pytest.fixture
async def history(client: httpx.AsyncClient, services: Services, city: City) -> dict[str, str]:
    """p1: solved on the 4th, reopened (unsatisfied) on the 6th, solved again on the 10th, closed
    on the 11th. p2: at the district from the 3rd, with fg-a; re-assigned to fg-b on the 9th."""
    fg_a, fg_b = city.function_groups[D1]
    p1 = await submit_at(client, city.enterprise(), day(2))
    await at(client, p1, day(2, 10), "accept")
    await at(client, p1, day(4), "resolve", {"resolution": "已办结"})
    await at(client, p1, day(6), "feedback", {"score": 2, "comment": "未解决"})
    await at(client, p1, day(10), "resolve", {"resolution": "再次办结"})
    await at(client, p1, day(11), "feedback", {"score": 5})
    p2 = await submit_at(client, city.enterprise(index=1), day(2))
    await at(client, p2, day(3), "escalate", {"reason": "需区级协调"})
    await at(client, p2, day(3, 10), "assign", {"lead_unit_id": fg_a})
    await at(client, p2, day(9), "assign", {"lead_unit_id": fg_b})
    await caught_up(services)
    return {"p1": p1, "p2": p2}


async def test_a_problem_as_of_intermediate_instants(
    client: httpx.AsyncClient, history: dict[str, str]
) -> None:
    p1 = history["p1"]
    then = await client.get(f"/v1/problems/{p1}", params={"as_of": day(5).isoformat()})
    assert then.status_code == 200 and "etag" not in then.headers
    body = then.json()
    assert (body["status"], body["resolved_at"], body["version"]) == (
        "resolved",
        "2026-11-04T09:00:00+08:00",
        3,
    )
    assert (body["age_days"], body["time_to_resolve"]) == (2, "P2D")
    reopened = await get(client, f"/v1/problems/{p1}", as_of=day(7).isoformat())
    assert (reopened["status"], reopened["reopens"], reopened["resolved_at"]) == ("in_progress", 1, None)
    # The reopen set a fresh local deadline (3 working days after Friday the 6th): not yet overdue.
    assert (reopened["deadline"], reopened["overdue"], reopened["age_days"]) == (
        "2026-11-11T23:59:59+08:00",
        False,
        5,
    )
    assert reopened["time_to_deadline"] == "P4DT14H59M59S"
    exact = await get(client, f"/v1/problems/{p1}", as_of=day(6).isoformat())  # the instant itself counts
    assert exact["status"] == "in_progress"
    a_day = await get(client, f"/v1/problems/{p1}", as_of="2026-11-04")  # the end of that day
    assert a_day["status"] == "resolved"
    now = await get(client, f"/v1/problems/{p1}")
    assert (now["status"], now["reopens"], now["satisfied"]) == ("closed", 1, True)

    before = await client.get(f"/v1/problems/{p1}", params={"as_of": day(1).isoformat()})
    assert before.status_code == 404
    future = await client.get(f"/v1/problems/{p1}", params={"as_of": day(30).isoformat()})
    assert future.status_code == 422 and future.json()["code"] == "as_of_in_future"


async def test_lists_as_of_filter_by_the_state_then(
    client: httpx.AsyncClient, history: dict[str, str], city: City
) -> None:
    p1, p2 = history["p1"], history["p2"]
    fg_a, fg_b = city.function_groups[D1]

    async def ids(**params: str) -> list[str]:
        return [p["id"] for p in (await get(client, "/v1/problems", **params))["items"]]

    assert await ids(status="resolved", as_of=day(5).isoformat()) == [p1]
    assert await ids(status="resolved", as_of=day(7).isoformat()) == []
    assert await ids(holder_unit_id=fg_a, as_of=day(5).isoformat()) == [p2]
    assert await ids(holder_unit_id=fg_a) == []
    assert await ids(holder_unit_id=fg_b) == [p2]
    assert await ids(tier="district", as_of=day(2, 12).isoformat()) == []
    item = (await get(client, "/v1/problems", lead_unit_id=fg_a, as_of=day(5).isoformat()))["items"][0]
    assert (item["lead_unit_id"], item["tier_age_days"], item["age_days"]) == (fg_a, 2, 3)
    # Overdue as of the 16th at 09:00 minus nothing: p2's district deadline (10 working days after
    # the 3rd) is the 17th; as of the 12th p1 was not overdue either.
    assert await ids(overdue="true", as_of=day(12).isoformat()) == []
    page = await get(client, "/v1/problems", limit=1, as_of=day(5).isoformat())
    assert len(page["items"]) == 1 and page["next_cursor"]
    rest = await get(client, "/v1/problems", limit=1, cursor=page["next_cursor"], as_of=day(5).isoformat())
    assert {page["items"][0]["id"], rest["items"][0]["id"]} == {p1, p2} and rest["next_cursor"] is None

    other = await make_key(client, "dispatcher", district_id="220103")
    hidden = await client.get(f"/v1/problems/{p1}", params={"as_of": day(5).isoformat()}, headers=auth(other))
    assert hidden.status_code == 404
    listed = await client.get("/v1/problems", params={"as_of": day(5).isoformat()}, headers=auth(other))
    assert listed.json()["items"] == []


async def test_statistics_as_of_and_imported_history(
    client: httpx.AsyncClient, services: Services, history: dict[str, str], city: City
) -> None:
    fg_a, fg_b = city.function_groups[D1]
    rates = "/v1/stats/solve-rates"
    assert (await get(client, rates, as_of=day(5).isoformat()))["total"]["solved"] == 1
    assert (await get(client, rates, as_of=day(7).isoformat()))["total"]["solved"] == 0
    now = (await get(client, rates))["total"]
    assert (now["solved"], now["satisfied"], now["feedback_count"], now["satisfaction_rate"]) == (
        1,
        1,
        1,
        1.0,
    )
    then = await get(client, rates, as_of=day(7).isoformat())
    assert (then["total"]["feedback_count"], then["total"]["satisfaction_rate"]) == (1, 0.0)
    units = by_key(await get(client, rates, group_by="unit", as_of=day(5).isoformat()))
    assert units[fg_a]["received"] == 1 and fg_b not in units
    units = by_key(await get(client, rates, group_by="unit"))
    assert units[fg_b]["received"] == 1 and fg_a not in units

    # A ledger imported today, with events from early November, changes what "as of the 5th" says.
    late = await submit_at(client, city.enterprise(index=2), day(3))
    await at(client, late, day(4), "resolve", {"resolution": "补录"})
    await caught_up(services)
    assert (await get(client, rates, as_of=day(5).isoformat()))["total"]["solved"] == 2
    assert (await get(client, rates, as_of=day(3, 12).isoformat()))["total"]["received"] == 3
    assert (await get(client, rates, as_of=day(2, 12).isoformat()))["total"]["received"] == 2


async def test_figures_of_the_past_are_remembered_until_the_past_changes(
    client: httpx.AsyncClient, services: Services, city: City, history: dict[str, str]
) -> None:
    """A figure as of a past day is computed once and then answered from memory; an event
    recorded now (business time now) leaves it alone, imported history dated before it and a
    rebuild make it computed again (`app.projections.settled`)."""
    stats = services.stats
    params = {"group_by": "district", "as_of": day(5).isoformat()}
    first = await get(client, "/v1/stats/solve-rates", **params)
    hits = stats.settled.hits
    assert await get(client, "/v1/stats/solve-rates", **params) == first
    assert stats.settled.hits == hits + 1

    # Today's event changes the present, not the 5th.
    await at(client, history["p2"], datetime(2026, 11, 16, 0, 30, tzinfo=UTC), "progress", {"note": "已约谈"})
    await caught_up(services)
    assert await get(client, "/v1/stats/solve-rates", **params) == first
    assert stats.settled.hits == hits + 2

    # History imported into the 3rd: the 5th is computed again and counts it.
    late = await submit_at(client, city.enterprise(index=2), day(3))
    await caught_up(services)
    again = await get(client, "/v1/stats/solve-rates", **params)
    assert stats.settled.hits == hits + 2
    assert by_key(again)[D1]["received"] == by_key(first)[D1]["received"] + 1
    assert await get(client, "/v1/stats/solve-rates", **params) == again
    assert stats.settled.hits == hits + 3

    # A rebuild rewrites every day: computed again once, then remembered again.
    await services.projections.rebuild("problem_history")
    assert await get(client, "/v1/stats/solve-rates", **params) == again
    assert stats.settled.hits == hits + 3
    assert await get(client, "/v1/stats/solve-rates", **params) == again
    assert stats.settled.hits == hits + 4
    assert late


async def _stored(services: Services) -> int:
    async with services.db.read() as conn:
        return int((await conn.execute(sa.select(sa.func.count()).select_from(settled_figures))).scalar_one())


async def test_figures_of_the_past_are_stored_for_every_process(
    client: httpx.AsyncClient, services: Services, history: dict[str, str]
) -> None:
    """What one process computed about the past, another (here: the same service with its memory
    emptied, as a restarted server or another replica has it) reads from `settled_figures`
    instead of computing it again, under the same rule; a rebuild makes it stale and the
    preparer's pruning drops it."""
    params = {"group_by": "district", "as_of": day(5).isoformat()}
    first = await get(client, "/v1/stats/solve-rates", **params)
    assert await _stored(services) == 1

    # Change the temporal model behind the statistics' back (no mark, as no real writer would):
    # an answer computed now would differ, a stored one cannot.
    async with services.db.transaction() as conn:
        await conn.execute(sa.update(problem_history).values(district_id="elsewhere"))
        await conn.execute(sa.update(problem_tallies).values(district_id="elsewhere"))
    services.stats.settled = Settled()
    assert await get(client, "/v1/stats/solve-rates", **params) == first
    assert services.stats.settled.hits == 0  # not from this process's memory: from the table

    # Without the stored row, the same question is computed, and sees the tampered model.
    async with services.db.transaction() as conn:
        await conn.execute(sa.delete(settled_figures))
    services.stats.settled = Settled()
    assert by_key(await get(client, "/v1/stats/solve-rates", **params)).keys() == {"elsewhere"}

    # A rebuild marks every day: the stored row can never be true again, and is pruned.
    await services.projections.rebuild("problem_history")
    services.stats.settled = Settled()
    assert await get(client, "/v1/stats/solve-rates", **params) == first
    assert await _stored(services) == 1
    # A rebuild with nothing new changes nothing; after new events it rewrites every day.
    await services.projections.rebuild("problem_history")
    async with services.db.transaction() as conn:
        assert await Settled.prune(conn, services.clock.now()) == 0
    await at(client, history["p2"], datetime(2026, 11, 16, 0, 30, tzinfo=UTC), "progress", {"note": "已约谈"})
    await services.projections.rebuild("problem_history")
    async with services.db.transaction() as conn:
        assert await Settled.prune(conn, services.clock.now()) == 1
    assert await _stored(services) == 0


async def test_closed_periods_are_prepared_before_anyone_asks(
    client: httpx.AsyncClient, services: Services, city: City, history: dict[str, str]
) -> None:
    """The background pass computes the last closed ten-day periods, months and quarters for the
    city and each district; a ranking of a closed period then computes nothing, and says what a
    computation from scratch says."""
    districts = len(city.rooms)
    assert await services.rankings.prepare_closed(services.clock.now()) == (1 + districts) * 3 * 3
    prepared = await _stored(services)
    assert prepared == (1 + districts) * 3 * 3  # each a question of its own
    # Again: every figure is found stored, nothing new is computed.
    assert await services.rankings.prepare_closed(services.clock.now()) == (1 + districts) * 3 * 3
    assert await _stored(services) == prepared

    # The first ten-day period of November (closed on the 11th; now is the 16th) with its two
    # predecessors, for the city and for a district's dispatcher: all prepared.
    dispatcher = await make_key(client, "dispatcher", district_id=D1)
    services.stats.settled = Settled()
    city_wide = await get(client, "/v1/stats/rankings", period="2026-11-D1")
    district = (await client.get("/v1/stats/rankings?period=2026-11-D1", headers=auth(dispatcher))).json()
    assert await _stored(services) == prepared
    assert services.stats.settled.hits == 0
    assert any(g["received"] for g in city_wide["groups"])

    async with services.db.transaction() as conn:
        await conn.execute(sa.delete(settled_figures))
    services.stats.settled = Settled()
    assert await get(client, "/v1/stats/rankings", period="2026-11-D1") == city_wide
    again = await client.get("/v1/stats/rankings?period=2026-11-D1", headers=auth(dispatcher))
    assert again.json() == district
