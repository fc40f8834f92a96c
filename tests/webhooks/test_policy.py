"""The pure parts: the retry policy on a manual clock, the SSRF guard, signatures against the
reference implementation, and the OpenAPI `webhooks` section."""

from __future__ import annotations

import ipaddress
import random
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from standardwebhooks import Webhook

from app.core.clock import ManualClock
from app.core.settings import DEFAULT_RETRY_SCHEDULE
from app.webhooks.egress import Egress, InvalidTarget, RefusedTarget, is_public, parse_url
from app.webhooks.policy import (
    Outcome,
    classify,
    decide,
    first_attempt_at,
    retry_after_seconds,
    should_disable,
)
from app.webhooks.schemas import PING, PROBLEM_EVENT_TYPES
from app.webhooks.signing import fingerprint, generate_secret, sign, signature_header
from tests.conftest import T0


def test_outcomes() -> None:
    assert [classify(c) for c in (200, 204, 299)] == [Outcome.delivered] * 3
    assert classify(410) is Outcome.gone
    assert [classify(c) for c in (None, 301, 400, 404, 429, 500, 503)] == [Outcome.retry] * 7


def test_backoff_follows_the_schedule_with_bounded_jitter_and_ends() -> None:
    clock = ManualClock(T0)
    rng = random.Random(7)
    schedule = list(DEFAULT_RETRY_SCHEDULE)
    assert first_attempt_at(clock.now(), schedule, rng) == T0, "the first attempt is immediate"
    total = timedelta(0)
    for failures in range(1, len(schedule)):
        decision = decide(500, failures_this_round=failures, now=clock.now(), schedule=schedule, rng=rng)
        assert decision.outcome is Outcome.retry and decision.next_attempt_at is not None
        wait = decision.next_attempt_at - clock.now()
        assert 0.8 * schedule[failures] <= wait.total_seconds() <= 1.2 * schedule[failures]
        total += wait
        clock.advance(wait)
    assert timedelta(days=2) < total < timedelta(days=3.5), f"about three days of retries: {total}"
    last = decide(None, failures_this_round=len(schedule), now=clock.now(), schedule=schedule, rng=rng)
    assert last == (last.__class__(Outcome.failed, None))
    assert decide(200, failures_this_round=0, now=T0, schedule=schedule, rng=rng).outcome is Outcome.delivered
    assert decide(410, failures_this_round=1, now=T0, schedule=schedule, rng=rng).outcome is Outcome.gone


def test_retry_after_can_only_lengthen_the_wait() -> None:
    rng = random.Random(3)
    slow = decide(429, failures_this_round=1, now=T0, schedule=[0, 5], rng=rng, retry_after=120)
    assert slow.next_attempt_at == T0 + timedelta(seconds=120)
    short = decide(503, failures_this_round=1, now=T0, schedule=[0, 5], rng=rng, retry_after=1)
    assert short.next_attempt_at is not None and short.next_attempt_at - T0 >= timedelta(seconds=4)
    huge = decide(503, failures_this_round=1, now=T0, schedule=[0, 5], rng=rng, retry_after=10**9)
    assert huge.next_attempt_at == T0 + timedelta(days=1)
    assert retry_after_seconds(" 30 ") == 30
    assert retry_after_seconds("Wed, 21 Oct 2026 07:28:00 GMT") is None and retry_after_seconds(None) is None


def test_disable_after_failing_for_the_whole_window() -> None:
    five_days = timedelta(days=5)
    assert not should_disable(None, T0, five_days)
    assert not should_disable(T0, T0 + five_days - timedelta(seconds=1), five_days)
    assert should_disable(T0, T0 + five_days, five_days)


@pytest.mark.parametrize(
    "address",
    ["10.0.0.1", "172.16.0.1", "192.168.1.1", "127.0.0.1", "169.254.169.254", "100.64.0.1", "0.0.0.0",
     "224.0.0.1", "::1", "fe80::1", "fc00::1", "::ffff:127.0.0.1", "::"],
)  # fmt: skip
def test_special_addresses_are_not_public(address: str) -> None:
    assert not is_public(ipaddress.ip_address(address))


def test_public_addresses_pass() -> None:
    assert is_public(ipaddress.ip_address("93.184.216.34"))
    assert is_public(ipaddress.ip_address("2606:2800:220:1:248:1893:25c8:1946"))


async def test_the_guard_resolves_and_honours_the_allow_list() -> None:
    strict = Egress([])
    with pytest.raises(RefusedTarget):
        await strict.check("http://127.0.0.1:8080/x")
    with pytest.raises(RefusedTarget, match="localhost resolves to"):
        await strict.check("http://localhost:8080/x")  # what a name resolves to is what counts
    target = await strict.check("https://93.184.216.34/hook")
    assert (target.host, target.port, str(target.address)) == ("93.184.216.34", 443, "93.184.216.34")
    by_cidr = Egress(["127.0.0.0/8", "10.0.0.0/8"])
    assert str((await by_cidr.check("http://127.0.0.2:9/")).address) == "127.0.0.2"
    assert (await by_cidr.check("http://[::ffff:10.1.1.1]/")).port == 80
    with pytest.raises(RefusedTarget):
        await by_cidr.check("http://192.168.0.1/")
    by_host = Egress(["localhost"])
    assert (await by_host.check("http://LOCALHOST:9/")).host == "localhost"
    for bad in ("ftp://x/", "http://u:p@x/", "http://x/#f", "//x/", "http://x:0x/"):
        with pytest.raises(InvalidTarget):
            parse_url(bad)


def test_signatures_match_the_reference_implementation() -> None:
    secret = generate_secret()
    body = '{"type": "problem.assigned", "data": {"t": "中文"}}'.encode()
    now = datetime.now(UTC)
    ts = int(now.timestamp())
    reference = Webhook(secret).sign("msg_1", now, body.decode())
    assert sign(secret, "msg_1", ts, body) == reference
    other = generate_secret()
    header = signature_header([secret, other], "msg_1", ts, body)
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(ts), "webhook-signature": header}
    Webhook(secret).verify(body, headers)
    Webhook(other).verify(body, headers)
    assert fingerprint(secret) != fingerprint(other) and len(fingerprint(secret)) == 12


async def test_openapi_documents_every_payload(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/openapi.json")).json()
    hooks = doc["webhooks"]
    assert set(hooks) == {*PROBLEM_EVENT_TYPES, PING}
    schemas = doc["components"]["schemas"]
    for name in PROBLEM_EVENT_TYPES:
        operation = hooks[name]["post"]
        ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        schema = schemas[ref.rsplit("/", 1)[1]]
        assert schema["properties"]["type"]["const"] == name
        assert {"type", "timestamp", "data"} <= set(schema["required"])
        assert {p["name"] for p in operation["parameters"]} == {
            "webhook-id",
            "webhook-timestamp",
            "webhook-signature",
        }
        assert {"200", "410", "default"} <= set(operation["responses"])
    assert "ProblemSummary" in schemas and "EventInfo" in schemas
    assert "/v1/webhooks/{webhook_id}/rotate-secret" in doc["paths"]
