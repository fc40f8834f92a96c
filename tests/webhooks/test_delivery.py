"""Delivery to a real receiver on 127.0.0.1, on SQLite and PostgreSQL: every event type arrives
signed (verified by `standardwebhooks`), unit filters, retries, 410, disabling after failing,
redelivery, pings, rotation, timeouts, redirects."""

from __future__ import annotations

import itertools
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from app.core.clock import ManualClock
from app.core.security import SYSTEM
from app.main import Services
from app.problems import domain
from app.webhooks.schemas import PROBLEM_EVENT_TYPES
from app.webhooks.sender import Sender
from tests.factories import D1, D2, City, auth, command, make_key, submit
from tests.webhooks.conftest import (
    deliveries,
    disabled,
    eventually,
    fanned_out,
    log_of,
    settled_log,
    subscribe,
)
from tests.webhooks.receiver import Answer, Receiver, always


def _day(days: int) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).date().isoformat()


async def drive_every_event_type(client: httpx.AsyncClient, services: Services, city: City) -> set[str]:
    """Problems that between them produce each of the sixteen subscribable event types; returns
    the ids of the problems."""
    fg_a, fg_b = city.function_groups[D1]
    pid = (await submit(client, city.enterprise()))["id"]
    await command(client, pid, "escalate", {"reason": "需要区级协调"})
    await command(client, pid, "assign", {"lead_unit_id": fg_b})
    await command(client, pid, "return", {"reason": "不属于本组职责"})
    await command(client, pid, "decide-return", {"accept": True})
    await command(client, pid, "assign", {"lead_unit_id": fg_a, "deadline": _day(20)})
    await command(client, pid, "accept")
    await command(client, pid, "request-extension", {"deadline": _day(40), "reason": "等待材料"})
    await command(client, pid, "decide-extension", {"approve": True})
    await command(client, pid, "supervise", {"note": "请加快"})
    await command(
        client,
        pid,
        "defer",
        {"explanation": "待指标下达", "review_on": _day(30), "plan": [{"step": "申报", "due_on": _day(25)}]},
    )
    await command(client, pid, "resume", {"note": "指标已下达"})
    await services.problems.execute(SYSTEM, pid, lambda s: domain.Remind(reason="deadline near"))
    await command(client, pid, "resolve", {"resolution": "已解决"})
    await command(client, pid, "feedback", {"score": 2, "comment": "未彻底解决"})  # reopens
    await command(client, pid, "resolve", {"resolution": "再次办结"})
    await command(client, pid, "feedback", {"score": 5})  # closes
    withdrawn = (await submit(client, city.enterprise(D2, 0)))["id"]
    await command(client, withdrawn, "withdraw", {"reason": "企业自行解决"})
    # Submitted a month ago (an import), so the local deadline has passed: the system marks it.
    month_ago = (datetime.now(UTC) - timedelta(days=30)).isoformat()
    late = (await submit(client, city.enterprise(D1, 1), occurred_at=month_ago))["id"]
    await services.problems.execute(SYSTEM, late, lambda s: domain.MarkOverdue())
    return {pid, withdrawn, late}


async def test_every_event_type_arrives_signed_with_the_problem_summary(
    client: httpx.AsyncClient, services: Services, city: City, receiver: Receiver
) -> None:
    hook = await subscribe(client, receiver, description="all of it")
    problems = await drive_every_event_type(client, services, city)
    got = await receiver.wait_for(lambda r: {x.type for x in r} >= set(PROBLEM_EVENT_TYPES))
    receiver.assert_all_verified()
    for r in got:
        body = r.json
        data = body["data"]
        assert set(body) == {"type", "timestamp", "data"}
        assert set(data) == {"event_id", "position", "problem_id", "problem", "event"}
        assert data["problem_id"] in problems and data["problem"]["id"] == data["problem_id"]
        assert data["event"]["type"] == body["type"] and data["event"]["event_id"] == data["event_id"]
        assert data["event"]["position"] == data["position"] and data["position"] > 0
        assert "description" not in data["problem"]
        assert "request_hash" not in data["event"]["metadata"]
        assert data["event"]["metadata"]["role"] in ("admin", "system")
        assert body["timestamp"].endswith("+08:00")
        assert r.headers["content-type"] == "application/json"
        assert r.webhook_id.startswith("msg_") and r.headers["webhook-timestamp"].isdigit()
    # The summary is the problem right after the event, not as it is now.
    by_type = {r.type: r.json["data"] for r in got}
    assert by_type["problem.escalated"]["problem"]["status"] == "open"
    assert by_type["problem.escalated"]["problem"]["tier"] == "district"
    assert by_type["problem.accepted"]["problem"]["status"] == "in_progress"
    assert by_type["problem.overdue"]["problem"]["overdue"] is True
    assert by_type["problem.closed"]["problem"]["status"] == "closed"
    # Subscribable types only: progress notes and resumptions are not webhook events.
    assert {r.type for r in got} == set(PROBLEM_EVENT_TYPES)
    ids = [r.webhook_id for r in got]
    assert len(ids) == len(set(ids)), "one delivery per event, each sent once"
    log = await settled_log(client, hook["id"], len(ids))
    assert {d["id"] for d in log} == set(ids)
    assert all(d["status"] == "delivered" and d["attempt_count"] == 1 for d in log)
    first = log[0]["attempts"][0]
    assert first["status_code"] == 200 and first["outcome"] == "delivered" and first["response"] == "ok"
    assert first["latency_ms"] >= 0 and first["next_retry_at"] is None


async def test_unit_filter_follows_the_units_involved(
    client: httpx.AsyncClient, services: Services, city: City
) -> None:
    fg_a, fg_b = city.function_groups[D1]
    with Receiver() as team, Receiver() as group_b, Receiver() as elsewhere:
        await subscribe(client, team, unit_id=city.teams[D1])
        await subscribe(client, group_b, unit_id=fg_b)
        other = await subscribe(client, elsewhere, unit_id=city.teams[D2])
        pid = (await submit(client, city.enterprise()))["id"]
        await command(client, pid, "escalate", {"reason": "需要区级协调"})
        await command(client, pid, "assign", {"lead_unit_id": fg_b})
        await command(client, pid, "return", {"reason": "不属于本组职责"})
        await command(client, pid, "decide-return", {"accept": True})
        await command(client, pid, "assign", {"lead_unit_id": fg_a})
        await fanned_out(services)
        # The team covers its service groups, one of which reported the problem: everything.
        got = await team.wait_for(lambda r: len(r) == 5)
        assert [r.type for r in sorted(got, key=lambda r: r.json["data"]["position"])] == [
            "problem.submitted",
            "problem.escalated",
            "problem.assigned",
            "problem.returned",
            "problem.assigned",
        ]
        # The lead unit hears of its assignment and of the return that takes the problem away
        # from it, not of what happened before it was involved or after.
        got = await group_b.wait_for(lambda r: len(r) == 2)
        assert sorted(r.type for r in got) == ["problem.assigned", "problem.returned"]
        assert await deliveries(services, other["id"]) == []
        for r in (team, group_b):
            r.assert_all_verified()


async def test_a_revoked_keys_subscriptions_receive_nothing_new(
    client: httpx.AsyncClient, services: Services, city: City
) -> None:
    """A subscription speaks for the key that made it: when the key is revoked (someone left the
    unit), the endpoint stops receiving the unit's problems."""
    key = await make_key(client, "handler", unit_id=city.teams[D1])
    with Receiver() as receiver:
        sub = await subscribe(client, receiver, key=key)
        first = (await submit(client, city.enterprise()))["id"]
        await fanned_out(services)
        await receiver.wait_for(lambda r: len(r) == 1)
        key_id = (await client.get("/v1/me", headers=auth(key))).json()["id"]
        assert (await client.delete(f"/v1/api-keys/{key_id}")).status_code == 200
        await command(client, first, "accept")
        await submit(client, city.enterprise())
        await fanned_out(services)
        assert len(await deliveries(services, sub["id"])) == 1
        receiver.assert_all_verified()


def fail_first(n: int, status: int = 500) -> Any:
    return lambda _r, count: Answer(status, b"not yet") if count < n else Answer(200, b"ok")


async def test_a_receiver_that_fails_three_times_gets_it_once_more_with_the_same_id(
    client: httpx.AsyncClient, city: City
) -> None:
    with Receiver(fail_first(3)) as receiver:
        hook = await subscribe(client, receiver, event_types=["problem.submitted"])
        await submit(client, city.enterprise())
        [entry] = await settled_log(client, hook["id"], 1)
        got = receiver.snapshot()
    assert len(got) == 4, "three failures, then exactly one more"
    assert len({r.webhook_id for r in got}) == 1 and got[0].webhook_id == entry["id"]
    assert len({r.body for r in got}) == 1, "the same bytes every time"
    receiver.assert_all_verified()
    gaps = [b.at - a.at for a, b in itertools.pairwise(got)]
    assert all(gap >= 0.75 for gap in gaps), f"1 s backoff with at most 20 % jitter: {gaps}"
    assert (entry["status"], entry["attempt_count"], entry["last_status_code"]) == ("delivered", 4, 200)
    attempts = list(reversed(entry["attempts"]))
    assert [a["outcome"] for a in attempts] == ["retry", "retry", "retry", "delivered"]
    assert [a["number"] for a in attempts] == [1, 2, 3, 4]
    assert all(a["next_retry_at"] for a in attempts[:3]) and attempts[0]["response"] == "not yet"


@pytest.mark.parametrize("webhook_settings", [{"webhook_retry_schedule": [0, 1]}])
async def test_a_delivery_fails_for_good_when_the_schedule_is_used_up(
    client: httpx.AsyncClient, city: City
) -> None:
    with Receiver(always(503)) as receiver:
        hook = await subscribe(client, receiver, event_types=["problem.submitted"])
        await submit(client, city.enterprise())
        [entry] = await settled_log(client, hook["id"], 1)
    assert (entry["status"], entry["attempt_count"], entry["next_attempt_at"]) == ("failed", 2, None)
    assert entry["last_error"].startswith("HTTP 503")
    assert [a["outcome"] for a in entry["attempts"]] == ["failed", "retry"]
    current = (await client.get(f"/v1/webhooks/{hook['id']}")).json()
    assert current["enabled"] is True and current["failing_since"] is not None


async def test_410_disables_the_subscription_records_it_and_tells_the_owner(
    client: httpx.AsyncClient, services: Services, city: City
) -> None:
    with Receiver(always(410, b"gone for good")) as receiver:
        hook = await subscribe(client, receiver, event_types=["problem.submitted"])
        await submit(client, city.enterprise())
        current = await disabled(client, hook["id"])
        assert "410" in current["disabled_reason"] and current["disabled_at"]
        listed = (await client.get("/v1/webhooks", params={"enabled": "false"})).json()["items"]
        assert [h["id"] for h in listed] == [hook["id"]]
        events = await services.store.read_stream(f"webhook-{hook['id']}")
        assert [e.type for e in events] == ["webhook.created", "webhook.disabled"]
        disabled_event = events[-1]
        assert disabled_event.metadata["actor"] == "system"
        assert disabled_event.data["owner_key_id"] == hook["owner_key_id"]
        assert disabled_event.data["status_code"] == 410
        log = await log_of(client, hook["id"])
        assert [(d["kind"], d["event_type"], d["status"]) for d in log] == [
            ("notice", "webhook.disabled", "notice"),
            ("event", "problem.submitted", "failed"),
        ]
        assert log[1]["attempts"][0]["outcome"] == "gone"
        # Nothing more is sent to it; pings and retries are refused until it is re-enabled.
        await submit(client, city.enterprise())
        await fanned_out(services)
        assert len(await deliveries(services, hook["id"])) == 2
        assert (await client.post(f"/v1/webhooks/{hook['id']}/test")).json()["code"] == "webhook_disabled"
        retry = await client.post(f"/v1/webhooks/{hook['id']}/deliveries/{log[1]['id']}/retry")
        assert retry.status_code == 409
        assert len(receiver.snapshot()) == 1
        receiver.assert_all_verified()


@pytest.mark.parametrize(
    "webhook_settings",
    [{"webhook_disable_after_seconds": 2, "webhook_retry_schedule": [0, 1, 1, 1, 1, 1, 1, 1, 1]}],
)
async def test_an_endpoint_failing_everything_for_the_configured_time_is_disabled(
    client: httpx.AsyncClient, services: Services, city: City
) -> None:
    with Receiver(always(500)) as receiver:
        hook = await subscribe(client, receiver, event_types=["problem.submitted"])
        started = time.monotonic()
        await submit(client, city.enterprise())
        current = await disabled(client, hook["id"])
        assert time.monotonic() - started >= 2
        assert current["disabled_reason"].startswith("every delivery has failed since")
        assert len(receiver.snapshot()) >= 2, "the first failure starts the clock; a later one ends it"
        events = await services.store.read_stream(f"webhook-{hook['id']}")
        assert events[-1].type == "webhook.disabled"
        log = await log_of(client, hook["id"])
        assert log[0]["kind"] == "notice" and log[1]["status"] == "failed"
        # Re-enabling starts afresh: the failure clock is reset, new events flow again.
        enabled = await client.patch(f"/v1/webhooks/{hook['id']}", json={"enabled": True})
        assert enabled.json()["enabled"] is True and enabled.json()["disabled_reason"] is None
        assert enabled.json()["failing_since"] is None
        receiver.respond = always(200)
        await submit(client, city.enterprise())
        await receiver.wait_for(lambda r: any(x.answered == 200 for x in r))
        receiver.assert_all_verified()


async def test_redelivery_sends_the_same_message_again_and_is_recorded(
    client: httpx.AsyncClient, services: Services, city: City, receiver: Receiver
) -> None:
    hook = await subscribe(client, receiver, event_types=["problem.submitted"])
    await submit(client, city.enterprise())
    [entry] = await settled_log(client, hook["id"], 1)
    response = await client.post(f"/v1/webhooks/{hook['id']}/deliveries/{entry['id']}/retry")
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "pending" and response.json()["requested_by"]
    first, again = await receiver.wait_count(2)
    assert first.webhook_id == again.webhook_id == entry["id"] and first.body == again.body
    receiver.assert_all_verified()
    [entry] = await settled_log(client, hook["id"], 1)
    assert (entry["status"], entry["attempt_count"]) == ("delivered", 2)
    events = await services.store.read_stream(f"webhook-{hook['id']}")
    assert events[-1].type == "webhook.redelivery_requested"
    assert events[-1].data["delivery_id"] == entry["id"] and events[-1].metadata["role"] == "admin"
    missing = await client.post(f"/v1/webhooks/{hook['id']}/deliveries/msg_nope/retry")
    assert missing.status_code == 404


async def test_ping_and_secret_rotation(client: httpx.AsyncClient, receiver: Receiver) -> None:
    hook = await subscribe(client, receiver)
    old = hook["secret"]
    response = await client.post(f"/v1/webhooks/{hook['id']}/test")
    assert response.status_code == 202 and response.json()["kind"] == "ping"
    [ping] = await receiver.wait_count(1)
    assert ping.type == "webhook.ping" and ping.json["data"]["webhook_id"] == hook["id"]
    assert ping.verified_by == [old] and len(ping.signatures) == 1

    rotated = await client.post(
        f"/v1/webhooks/{hook['id']}/rotate-secret", json={"grace_period_seconds": 3600}
    )
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["secret"]
    assert new != old and new.startswith("whsec_") and rotated.json()["previous_secret_expires_at"]
    receiver.secrets.append(new)
    await client.post(f"/v1/webhooks/{hook['id']}/test")
    got = await receiver.wait_count(2)
    assert len(got[1].signatures) == 2 and set(got[1].verified_by) == {old, new}, (
        "both sign in the grace period"
    )

    # Without a grace period the old secret stops at once.
    again = (
        await client.post(f"/v1/webhooks/{hook['id']}/rotate-secret", json={"grace_period_seconds": 0})
    ).json()
    receiver.secrets.append(again["secret"])
    assert again["previous_secret_expires_at"] is None
    await client.post(f"/v1/webhooks/{hook['id']}/test")
    got = await receiver.wait_count(3)
    assert got[2].verified_by == [again["secret"]] and len(got[2].signatures) == 1
    log = await settled_log(client, hook["id"], 3)
    assert all(d["kind"] == "ping" and d["status"] == "delivered" for d in log)


@pytest.mark.parametrize(
    "webhook_settings",
    [{"webhook_timeout_seconds": 2.0, "webhook_endpoint_concurrency": 2, "webhook_concurrency": 8}],
)
async def test_a_hung_receiver_neither_blocks_other_endpoints_nor_slows_commands(
    client: httpx.AsyncClient, city: City
) -> None:
    with Receiver(always(200, delay=30)) as hung, Receiver() as healthy:
        hung_hook = await subscribe(client, hung, event_types=["problem.submitted"])
        await subscribe(client, healthy, event_types=["problem.submitted"])
        for _ in range(3):
            await submit(client, city.enterprise())
        await hung.wait_count(2)  # two attempts (the endpoint's share) hang now
        started = time.monotonic()
        for _ in range(3):
            await submit(client, city.enterprise())
        commands = time.monotonic() - started
        await healthy.wait_count(6, timeout=10)
        assert commands < 6, f"three commands took {commands:.2f} s"
        assert hung.max_busy <= 2, "no more than the endpoint's share of slots at a time"
        healthy.assert_all_verified()

        async def timed_out() -> list[dict[str, Any]]:
            log = await log_of(client, hung_hook["id"])
            return [a for d in log for a in d["attempts"] if a["error"]]

        [first, *_] = await eventually(timed_out, timeout=10)
        assert first["error"] == "no complete answer within 2 s" and first["outcome"] == "retry"
        assert first["status_code"] is None and first["latency_ms"] >= 1900


@pytest.mark.parametrize("webhook_settings", [{"webhook_retry_schedule": [0]}])
async def test_redirects_are_not_followed_and_responses_are_read_only_so_far(
    client: httpx.AsyncClient, city: City
) -> None:
    with Receiver() as target:

        def respond(request: Any, _n: int) -> Answer:
            if request.path == "/hook":
                return Answer(302, b"x" * 200_000, headers={"Location": target.url + "/elsewhere"})
            return Answer(200)

        target.respond = respond
        hook = await subscribe(client, target, event_types=["problem.submitted"])
        await submit(client, city.enterprise())
        [entry] = await settled_log(client, hook["id"], 1)
    assert [r.path for r in target.snapshot()] == ["/hook"], "the redirect was not followed"
    assert (entry["status"], entry["last_status_code"]) == ("failed", 302)
    assert len(entry["attempts"][0]["response"]) == 1024, "1 KiB of the answer is kept"


async def test_retry_after_is_respected(client: httpx.AsyncClient, city: City) -> None:
    def respond(_r: Any, n: int) -> Answer:
        return Answer(429, b"slow down", headers={"Retry-After": "3"}) if n == 0 else Answer(200)

    with Receiver(respond) as receiver:
        hook = await subscribe(client, receiver, event_types=["problem.submitted"])
        await submit(client, city.enterprise())
        first, second = await receiver.wait_count(2, timeout=15)
        await settled_log(client, hook["id"], 1)
    assert second.at - first.at >= 2.9, "the schedule said 1 s, the receiver 3 s"
    assert first.webhook_id == second.webhook_id


@pytest.mark.parametrize("webhook_settings", [{"webhook_timeout_seconds": 2.0}])
async def test_deleting_a_subscription_with_an_attempt_under_way(
    client: httpx.AsyncClient, city: City, caplog: pytest.LogCaptureFixture
) -> None:
    with Receiver(always(200, delay=1)) as slow, Receiver() as other:
        hook = await subscribe(client, slow, event_types=["problem.submitted"])
        await submit(client, city.enterprise())
        await slow.wait_count(1)
        assert (await client.delete(f"/v1/webhooks/{hook['id']}")).status_code == 204
        second = await subscribe(client, other)
        await client.post(f"/v1/webhooks/{second['id']}/test")
        await other.wait_count(1)
        await settled_log(client, second["id"], 1)
    assert "webhook sender failed" not in caplog.text


@pytest.mark.parametrize("webhook_settings", [{"webhook_log_retention_days": 30}])
async def test_finished_deliveries_are_forgotten_after_the_retention(
    client: httpx.AsyncClient, services: Services, city: City, receiver: Receiver
) -> None:
    hook = await subscribe(client, receiver, event_types=["problem.submitted"])
    await submit(client, city.enterprise())
    await settled_log(client, hook["id"], 1)
    later = ManualClock(datetime.now(UTC) + timedelta(days=29))
    assert await Sender(services.db, services.webhooks, services.settings, later).purge() == 0
    later.advance(timedelta(days=2))
    assert await Sender(services.db, services.webhooks, services.settings, later).purge() == 1
    assert await log_of(client, hook["id"]) == []
    events = await services.store.read_stream(f"webhook-{hook['id']}")
    assert [e.type for e in events] == ["webhook.created"], "the log of changes stays"
