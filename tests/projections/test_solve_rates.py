"""`/v1/stats/solve-rates` with exact figures, built through the HTTP API from imported history,
on SQLite and PostgreSQL. Figures from practice (`demo_city.json`): a district with 87 problems,
45 solved and 42 in progress (51.7%); 15 jointly handled problems, 10 solved (66.7%)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx

from app.main import Services
from tests.conftest import T0
from tests.factories import D1, D2, City, auth, make_key
from tests.projections.helpers import at, by_key, caught_up, get, submit_at

MON = datetime(2026, 11, 2, 1, 0, tzinfo=UTC)  # Monday 2 November 2026, 09:00 in the city
RATES = "/v1/stats/solve-rates"


async def test_a_district_of_87_with_45_solved_and_42_in_progress(
    client: httpx.AsyncClient, services: Services, city: City
) -> None:
    for i in range(87):
        t = MON + timedelta(minutes=10 * i)
        pid = await submit_at(client, city.enterprise(D1, i % 4), t)
        await at(client, pid, t + timedelta(minutes=5), "accept")
        if i < 45:
            await at(client, pid, t + timedelta(hours=1), "resolve", {"resolution": "已协调解决"})
    for i in range(10):
        pid = await submit_at(client, city.enterprise(D2, i % 4), MON + timedelta(minutes=7 * i))
        if i < 3:
            await at(client, pid, MON + timedelta(days=1), "resolve", {"resolution": "已解决"})
    await caught_up(services)

    body = await get(client, RATES, group_by="district")
    d1, d2 = by_key(body)[D1], by_key(body)[D2]
    assert (d1["received"], d1["solved"], d1["open"], d1["solve_rate"]) == (87, 45, 42, 0.517)
    assert (d1["solved_on_the_spot"], d1["on_time"], d1["on_time_rate"]) == (45, 45, 1.0)
    # In progress since 2 November with a deadline of 3 working days: overdue on the 16th.
    assert (d1["overdue"], d1["response_due"], d1["responded"], d1["response_rate"]) == (42, 87, 87, 1.0)
    assert (d2["received"], d2["solved"], d2["solve_rate"]) == (10, 3, 0.3)
    # D2's seven unaccepted problems: their response window (1 working day) ended long ago.
    assert (d2["response_due"], d2["responded"], d2["response_rate"]) == (10, 3, 0.3)
    total = body["total"]
    assert (total["received"], total["solved"], total["solve_rate"]) == (97, 48, 0.495)
    assert body["group_by"] == "district" and body["response_window_days"] == 1
    assert d1["name"] == f"{D1}调度室" and body["as_of"] == "2026-11-16T09:00:00+08:00"

    dispatcher = await make_key(client, "dispatcher", district_id=D2)
    scoped = (await client.get(RATES, params={"group_by": "district"}, headers=auth(dispatcher))).json()
    assert list(by_key(scoped)) == [D2] and scoped["total"]["received"] == 10


async def test_jointly_handled_problems_and_unit_groups(
    client: httpx.AsyncClient, services: Services, city: City
) -> None:
    fg_a, fg_b = city.function_groups[D1]
    for i in range(20):
        t = MON + timedelta(hours=i)
        pid = await submit_at(client, city.enterprise(D1, i % 4), t)
        await at(client, pid, t + timedelta(minutes=10), "escalate", {"reason": "需区级协调"})
        joint = i < 15
        body = {"lead_unit_id": fg_a, "cooperating_unit_ids": [fg_b]} if joint else {"lead_unit_id": fg_b}
        await at(client, pid, t + timedelta(minutes=20), "assign", body)
        if (joint and i < 10) or i == 15:
            await at(client, pid, t + timedelta(days=2), "resolve", {"resolution": "联合办结"})
    await caught_up(services)

    joint = await get(client, RATES, group_by="unit", joint="true")
    assert (joint["total"]["received"], joint["total"]["solved"], joint["total"]["solve_rate"]) == (
        15,
        10,
        0.667,
    )
    assert joint["total"]["joint"] == 15
    units = by_key(await get(client, RATES, group_by="unit"))
    assert (units[fg_a]["received"], units[fg_a]["solved"], units[fg_a]["solve_rate"]) == (15, 10, 0.667)
    assert (units[fg_b]["received"], units[fg_b]["solved"], units[fg_b]["solve_rate"]) == (5, 1, 0.2)
    assert units[fg_a]["district_id"] == D1 and units[fg_a]["name"] == f"{D1}职能组a"
    tiers = by_key(await get(client, RATES, group_by="tier"))
    assert list(tiers) == ["district"] and tiers["district"]["solved_on_the_spot"] == 0

    handler = await make_key(client, "handler", unit_id=fg_b)
    seen = (await client.get(RATES, params={"group_by": "unit"}, headers=auth(handler))).json()
    # fg-b sees what it leads (5) and what it cooperates on (15); each counts under its holder.
    assert seen["total"]["received"] == 20


async def test_tier_groups_follow_where_problems_are_and_who_solved_them(
    client: httpx.AsyncClient, services: Services, city: City
) -> None:
    fg_a = city.function_groups[D1][0]
    local = await submit_at(client, city.enterprise(), MON)
    await at(client, local, MON + timedelta(hours=1), "resolve", {"resolution": "现场解决"})
    district = await submit_at(client, city.enterprise(), MON)
    await at(client, district, MON + timedelta(hours=1), "escalate", {"reason": "上交"})
    await at(client, district, MON + timedelta(hours=2), "assign", {"lead_unit_id": fg_a})
    # Solved late: after the district deadline of 10 working days (16 November, end of day).
    await at(client, district, datetime(2026, 11, 16, 0, 30, tzinfo=UTC), "resolve", {"resolution": "办结"})
    city_level = await submit_at(client, city.enterprise(), MON)
    await at(client, city_level, MON + timedelta(hours=1), "escalate", {"reason": "上交"})
    await at(client, city_level, MON + timedelta(hours=2), "escalate", {"reason": "超出区级权限"})
    withdrawn = await submit_at(client, city.enterprise(), MON)
    await at(client, withdrawn, MON + timedelta(hours=1), "withdraw", {"reason": "企业自行解决"})
    await caught_up(services)

    tiers = by_key(await get(client, RATES, group_by="tier"))
    assert {k: (g["received"], g["solved"], g["open"]) for k, g in tiers.items()} == {
        "local": (1, 1, 0),
        "district": (1, 1, 0),
        "city": (1, 0, 1),
    }
    assert tiers["local"]["solved_on_the_spot"] == 1 and tiers["district"]["solved_on_the_spot"] == 0
    assert tiers["district"]["on_time"] == 1  # the deadline is the end of the 16th
    assert tiers["city"]["name"] == "市级"


async def test_response_rate_counts_working_days_after_the_assignment(
    client: httpx.AsyncClient, services: Services, city: City
) -> None:
    fri = datetime(2026, 11, 6, 1, 0, tzinfo=UTC)  # Friday 09:00
    on_time = await submit_at(client, city.enterprise(), MON)
    await at(client, on_time, MON + timedelta(days=1, hours=8), "accept")  # Tuesday evening
    late = await submit_at(client, city.enterprise(), MON)
    await at(client, late, MON + timedelta(days=2), "accept")  # Wednesday
    weekend = await submit_at(client, city.enterprise(), fri)
    await at(client, weekend, fri + timedelta(days=3), "accept")  # Monday: the next working day
    await submit_at(client, city.enterprise(), MON)  # never accepted: due, not answered
    await submit_at(client, city.enterprise(), T0 - timedelta(hours=1))  # still within its window
    await caught_up(services)

    total = (await get(client, RATES))["total"]
    assert (total["response_due"], total["responded"], total["response_rate"]) == (4, 2, 0.5)


async def test_from_to_and_validation(client: httpx.AsyncClient, services: Services, city: City) -> None:
    for day in (2, 3, 9, 10):
        await submit_at(client, city.enterprise(), datetime(2026, 11, day, 1, 0, tzinfo=UTC))
    await caught_up(services)
    week = await get(client, RATES, **{"from": "2026-11-02", "to": "2026-11-08"})
    assert week["total"]["received"] == 2 and week["from"] == "2026-11-02T00:00:00+08:00"
    assert week["to"] == "2026-11-09T00:00:00+08:00"
    instant = await get(
        client, RATES, **{"from": "2026-11-03T09:00:00+08:00", "to": "2026-11-10T09:00:00+08:00"}
    )
    assert instant["total"]["received"] == 2  # from inclusive, to exclusive

    for params, code in [
        ({"group_by": "holder"}, "validation_failed"),
        ({"as_of": "2026-11-17T09:00:00+08:00"}, "as_of_in_future"),
        ({"from": "2026-11-09", "to": "2026-11-02"}, "invalid_range"),
        ({"from": "yesterday"}, "validation_failed"),
    ]:
        response = await client.get(RATES, params=params)
        assert response.status_code == 422 and response.json()["code"] == code, params


async def test_every_statistic_is_scoped_by_the_callers_role(
    client: httpx.AsyncClient, services: Services, city: City
) -> None:
    portal = await make_key(client, "portal", source="portal-a")
    viewer_d2 = await make_key(client, "viewer", district_id=D2)
    group = await make_key(client, "handler", unit_id=city.groups[D1][1])
    ours = await submit_at(client, city.enterprise(D1, 0), MON, source="portal-a")
    await submit_at(client, city.enterprise(D1, 2), MON)  # covered by D1's second service group
    await submit_at(client, city.enterprise(D2, 0), MON)
    await caught_up(services)

    async def seen(key: str, path: str, **params: str) -> int:
        response = await client.get(path, params=params, headers=auth(key))
        assert response.status_code == 200, response.text
        total = response.json()["total"]
        return int(total["received"] if "received" in total else total["open"])

    for path in (RATES, "/v1/stats/aging"):
        assert await seen(portal, path) == 1
        assert await seen(viewer_d2, path) == 1
        assert await seen(group, path) == 1
        assert (await get(client, path))["total"]["received" if path == RATES else "open"] == 3
    oldest = (await client.get("/v1/stats/aging", headers=auth(portal))).json()["oldest"]
    assert [o["id"] for o in oldest] == [ours]
    report = await client.get("/v1/reports/dispatch", params={"period": "2026-11"}, headers=auth(viewer_d2))
    assert report.json()["total"]["received"] == 1 and report.json()["scope"]["district_id"] == D2


async def test_current_figures_from_the_monthly_tallies_equal_the_temporal_models(
    client: httpx.AsyncClient, services: Services, city: City
) -> None:
    """Whole months come from `problem_tallies` plus corrections for what depends on the instant
    (overdue, unanswered past the window, answered late); the rest from the temporal model. A
    varied history over three months, including a return, a late answer and a withdrawal."""
    from app.core.security import Caller, Role
    from app.projections.history import problem_history
    from app.projections.stats import Basis, Cohort, GroupBy
    from tests.projections.test_rebuild import varied_history

    await varied_history(client, city)  # November: returns, joint handling, deferral, withdrawal
    fg = city.function_groups[D1][0]
    for i, month in enumerate((datetime(2026, 9, 7, 1, tzinfo=UTC), datetime(2026, 10, 12, 1, tzinfo=UTC))):
        late = await submit_at(client, city.enterprise(D1, i), month)
        await at(client, late, month + timedelta(hours=1), "escalate", {"reason": "上交"})
        await at(client, late, month + timedelta(hours=2), "assign", {"lead_unit_id": fg})
        await at(client, late, month + timedelta(days=6), "accept")  # answered after the window
        extension = {"deadline": "2026-12-31", "reason": "等待审批"}  # open, its deadline ahead
        await at(client, late, month + timedelta(days=7), "request-extension", extension)
        await at(client, late, month + timedelta(days=7, hours=1), "decide-extension", {"approve": True})
        unanswered = await submit_at(client, city.enterprise(D2, i), month)
        await at(client, unanswered, month + timedelta(hours=1), "escalate", {"reason": "上交"})
        await at(
            client,
            unanswered,
            month + timedelta(hours=2),
            "assign",
            {"lead_unit_id": city.function_groups[D2][0]},
        )
        solved = await submit_at(client, city.enterprise(D1, 2), month)
        await at(client, solved, month + timedelta(hours=3), "resolve", {"resolution": "现场解决"})
    await caught_up(services)

    stats = services.stats
    cohorts = [
        Cohort(),
        Cohort(datetime(2026, 9, 10, tzinfo=UTC), datetime(2026, 11, 3, tzinfo=UTC)),
        Cohort(datetime(2026, 8, 31, 16, tzinfo=UTC), None),  # from 1 September, city time
        Cohort(None, datetime(2026, 10, 31, 16, tzinfo=UTC), district_id=D1),
        Cohort(joint=True),
    ]
    # Response windows within the tallied days and beyond them (the rules allow 1 to 60).
    for window in (1, 3, 8):
        cutoff = stats.response_cutoff(T0, window)
        for cohort in cohorts:
            for scope in (None, problem_history.c.district_id == D1):
                for grouping in GroupBy:
                    tallied = await stats._from_tallies(scope, grouping, cohort, T0, window, cutoff)
                    direct = await stats._from_history(scope, grouping, cohort, None, T0, window, cutoff)
                    assert tallied == direct, (window, cohort, scope, grouping)
    # Aging now (months before the 31-day edge from the tallies) equals aging as of now (the
    # temporal model throughout), for every grouping, both bases and the cohorts above.
    admin = Caller(key_id="t", name="t", role=Role.admin)
    for cohort in cohorts:
        for basis in Basis:
            for grouping in [None, *GroupBy]:
                now = await stats.aging(admin, basis, grouping, cohort, None, 5)
                assert now == await stats.aging(admin, basis, grouping, cohort, T0, 5), (
                    cohort,
                    basis,
                    grouping,
                )
    body = await get(client, RATES, group_by="district")
    d1 = by_key(body)[D1]
    # Every figure the tallies correct is exercised: a return, an overdue assignment, late answers.
    total = body["total"]
    assert d1["returned"] == 1 and d1["responded"] < d1["response_due"]
    assert 1 <= total["overdue"] < total["open"]  # overdue, and open with the deadline ahead
    # And a scope the tallies cannot answer (a handler's units) goes to the temporal model.
    assert (
        await stats._from_tallies(problem_history.c.source == "x", GroupBy.tier, Cohort(), T0, window, cutoff)
        is None
    )


async def test_the_corrections_and_the_aging_read_their_partial_indexes(services: Services) -> None:
    """What the tallies cannot hold is read from small partial indexes of the current intervals,
    on both databases' planners (a query uses such an index only if its WHERE clause contains the
    index's condition as written, or provably implies it)."""
    from typing import Any

    import sqlalchemy as sa

    from app.projections.history import open_now, problem_history
    from app.projections.stats import Cohort, GroupBy

    stats, db = services.stats, services.db
    explain = "EXPLAIN " if db.is_postgres else "EXPLAIN QUERY PLAN "

    def explained(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> Any:
        return explain + statement, params

    corrections = stats._corrections(
        None, GroupBy.unit, Cohort(), T0, 10, T0
    )  # a window beyond the tallied days
    aging = (
        sa.select(problem_history.c.tier).where(open_now()).order_by(problem_history.c.submitted_at).limit(5)
    )
    async with db.read() as conn:
        if db.is_postgres:  # an empty table: make the planner show which indexes it *can* use
            await conn.exec_driver_sql("SET enable_seqscan = off")
        sa.event.listen(conn.sync_connection, "before_cursor_execute", explained, retval=True)
        plan = "\n".join(str(row[-1]) for row in (await conn.execute(corrections)).all())
        for index in (
            "ix_problem_history_open",
            "ix_problem_history_unanswered",
            "ix_problem_history_answered",
        ):
            assert index in plan, (index, plan)
        plan = "\n".join(str(row[-1]) for row in (await conn.execute(aging)).all())
        assert "ix_problem_history_open" in plan, plan
        sa.event.remove(conn.sync_connection, "before_cursor_execute", explained)
        if db.is_postgres:
            await conn.exec_driver_sql("RESET enable_seqscan")
