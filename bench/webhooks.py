"""Webhook delivery end to end, on PostgreSQL and on SQLite (`BENCH_WEBHOOK_BACKENDS`): a real
`dispatchroom serve` process on a scratch database, a real receiver on 127.0.0.1 (a thread of
this process, answering 200 at once), every request signed.

1. Throughput: PROBLEMS problems are submitted over HTTP while the server's background work is
   off, to SUBS subscriptions; then a server with background work starts, fans out and delivers
   the backlog. Deliveries per second from the first arrival to the last (fan-out included).
2. Lag under load: problem events appended at RATE per second for SECONDS, one subscription; the
   lag is the receiver's arrival time minus the event's `recorded_at` (the append), p50/p99. On
   PostgreSQL this process appends and the server sequences, fans out and sends (with a
   breakdown of where the time goes); on SQLite, an embedded single-process deployment, the
   application runs in this process and appends itself.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from app.core.clock import SystemClock
from app.core.db import Database
from app.core.security import Caller, Role
from app.core.settings import Settings
from app.events import EventStore, NewEvent
from app.main import create_app
from app.migrate import upgrade
from app.webhooks.schemas import WebhookIn
from bench.common import machine, scratch_database
from tests.server import server_process
from tests.webhooks.receiver import Receiver

ADMIN = "dr_bench_admin_" + "k" * 24
PROBLEMS = int(os.environ.get("BENCH_WEBHOOK_PROBLEMS", "300"))
SUBS = int(os.environ.get("BENCH_WEBHOOK_SUBS", "10"))
RATE = float(os.environ.get("BENCH_WEBHOOK_RATE", "100"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "20"))
LOG = Path(os.environ.get("BENCH_SERVER_LOG", os.devnull))


def env(url: str, **extra: str) -> dict[str, str]:
    return {
        "DATABASE_URL": url,
        "ADMIN_API_KEY": ADMIN,
        "ENVIRONMENT": "test",
        "WEBHOOK_ALLOWED_TARGETS": "127.0.0.1",
        "SERVER_LOG": str(LOG),
        **extra,
    }


def client(base: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=base,
        headers={"Authorization": f"Bearer {ADMIN}"},
        timeout=30,
        limits=httpx.Limits(max_connections=64, keepalive_expiry=2),  # uvicorn closes after 5 s
    )


async def enterprises(http: httpx.AsyncClient) -> list[str]:
    response = await http.get("/v1/enterprises", params={"limit": 100})
    response.raise_for_status()
    return [e["id"] for e in response.json()["items"]]


async def submit(http: httpx.AsyncClient, enterprise: str) -> None:
    body = {"enterprise_id": enterprise, "category": "utilities", "title": "压测", "description": "压测问题"}
    response = await http.post("/v1/problems", json=body)
    response.raise_for_status()


async def subscribe(http: httpx.AsyncClient, receiver: Receiver, n: int) -> None:
    for i in range(n):
        response = await http.post(
            "/v1/webhooks",
            json={"url": f"{receiver.url}/{i}", "event_types": ["problem.submitted"], "description": "bench"},
        )
        response.raise_for_status()
        receiver.secrets.append(response.json()["secret"])


async def sequence_all(url: str) -> None:
    """Give the demo's events their positions (no sequencer runs without background work), so
    that subscriptions created now start after them."""
    db = Database(url, pool_size=1)
    try:
        store = EventStore(db, SystemClock())
        while await store.sequence():
            pass
    finally:
        await db.dispose()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


async def throughput(url: str) -> None:
    with Receiver(verify=False) as receiver:
        with server_process(env(url, BACKGROUND="false"), "--demo") as (_, base):
            await sequence_all(url)
            async with client(base) as http:
                await subscribe(http, receiver, SUBS)
                ids = await enterprises(http)
                for start in range(0, PROBLEMS, 16):
                    await asyncio.gather(*(submit(http, ids[i % len(ids)]) for i in range(start, start + 16)))
        expected = PROBLEMS * SUBS
        started = time.monotonic()
        with server_process(env(url)) as (proc, _):
            got = await receiver.wait_count(expected, timeout=600)
            startup = time.monotonic() - started
            cpu = cpu_seconds(proc.pid)
        arrivals = [r.at for r in got]
        seconds = max(arrivals) - min(arrivals)
        print(
            f"throughput: {expected} deliveries ({PROBLEMS} events x {SUBS} subscriptions) "
            f"in {seconds:.2f} s = {expected / seconds:.0f} deliveries/s "
            f"(first to last arrival; from server start {startup:.1f} s)"
        )
        ids_seen = [r.webhook_id for r in got]
        print(
            f"  sent twice: {len(ids_seen) - len(set(ids_seen))}; server CPU {cpu:.1f} s in all "
            f"(start-up, migrations and demo check included)"
        )


async def append_at_rate(store: EventStore, n: int) -> float:
    """Append `n` problem submissions at RATE per second; returns the rate achieved."""
    tasks: list[asyncio.Task[Any]] = []
    t0 = time.monotonic()
    for i in range(n):
        delay = t0 + i / RATE - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        problem_id = str(uuid.uuid4())
        event = NewEvent("problem.submitted", {**TEMPLATE, "problem_id": problem_id}, metadata=META)
        tasks.append(asyncio.create_task(store.append(f"problem-{problem_id}", 0, [event])))
    await asyncio.gather(*tasks)
    return n / (time.monotonic() - t0)


def report_lag(offered: float, got: list[Any], cpu: str) -> None:
    lags = [r.at - datetime.fromisoformat(r.json["data"]["event"]["recorded_at"]).timestamp() for r in got]
    print(
        f"lag at {offered:.0f} events/s for {SECONDS:.0f} s ({len(got)} deliveries): "
        f"p50 {statistics.median(lags) * 1000:.0f} ms, p99 {percentile(lags, 0.99) * 1000:.0f} ms, "
        f"max {max(lags) * 1000:.0f} ms; {cpu}"
    )


async def lag(url: str, dsn: str) -> None:
    """PostgreSQL: events appended at RATE per second straight into the store by this process
    (the command path's own cost is not what is measured here); the server process sequences,
    fans out and delivers them."""
    with Receiver(verify=False) as receiver, server_process(env(url)) as (proc, base):
        async with client(base) as http:
            await subscribe(http, receiver, 1)
        db = Database(url, pool_size=16)
        n = int(RATE * SECONDS)
        cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
        offered = await append_at_rate(EventStore(db, SystemClock()), n)
        got = await receiver.wait_count(n, timeout=300)
        busy = (cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - t0)
        await db.dispose()
    report_lag(offered, got, f"server CPU {busy:.0%} of one core")
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(BREAKDOWN)
    finally:
        await conn.close()
    print(
        "  p50/p99: append to fan-out {:.0f}/{:.0f} ms, fan-out to attempt {:.0f}/{:.0f} ms, "
        "HTTP {:.0f}/{:.0f} ms".format(*(v * 1000 for v in row["fan"] + row["claim"]), *row["http"])
    )


async def lag_in_process(url: str, synchronous: str) -> None:
    """SQLite: an embedded deployment is one process, so the events are appended by the process
    that fans out and sends (as its commands would be), not by a second writer of the file."""
    await upgrade(url)
    settings = Settings(
        database_url=url,
        environment="test",
        webhook_allowed_targets=["127.0.0.1"],
        sqlite_synchronous=synchronous,  # type: ignore[arg-type]
    )
    print(f"# SQLITE_SYNCHRONOUS={synchronous}")
    application = create_app(settings)
    with Receiver(verify=False) as receiver:
        async with application.router.lifespan_context(application):
            services = application.state.services
            await services.webhooks.create(
                Caller(key_id="bench", name="bench", role=Role.admin),
                WebhookIn(url=receiver.url, event_types=["*"]),
            )
            n = int(RATE * SECONDS)
            cpu0, t0 = time.process_time(), time.monotonic()
            offered = await append_at_rate(services.store, n)
            got = await receiver.wait_count(n, timeout=300)
            busy = (time.process_time() - cpu0) / (time.monotonic() - t0)
    report_lag(offered, got, f"process CPU (appends and receiver included) {busy:.0%} of one core")


# A submission as the problem decider writes it (the fan-out folds it like any other).
TEMPLATE: dict[str, Any] = {
    "enterprise_id": "91220102MA17W1P07X",
    "enterprise_name": "压测企业有限公司",
    "district_id": "220102",
    "category": "utilities",
    "title": "压测问题",
    "description": "压测",
    "urgency": "normal",
    "source": None,
    "reported_by": None,
    "reporter_unit_id": "220102-t1-g1",
    "submitted_by": "bench",
    "lead_unit_id": "220102-t1-g1",
    "tier": "local",
    "deadline": "2026-12-01T15:59:59+00:00",
}
BREAKDOWN = """
SELECT percentile_cont(ARRAY[0.5, 0.99])
         WITHIN GROUP (ORDER BY extract(epoch FROM d.created_at - e.recorded_at)) AS fan,
       percentile_cont(ARRAY[0.5, 0.99])
         WITHIN GROUP (ORDER BY extract(epoch FROM a.attempted_at - d.created_at)) AS claim,
       percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY a.latency_ms) AS http
FROM webhook_deliveries d
JOIN events e ON e.event_id = d.event_id
JOIN webhook_attempts a ON a.delivery_id = d.id
"""
META = {"actor": "bench", "role": "admin"}


@asynccontextmanager
async def scratch_sqlite() -> AsyncIterator[tuple[str, str]]:
    with tempfile.TemporaryDirectory() as tmp:
        print(f"# SQLite {sqlite3.sqlite_version} (file in {tmp}); {machine()}")
        yield f"sqlite+aiosqlite:///{tmp}/bench.db", ""


async def main() -> None:
    backends = os.environ.get("BENCH_WEBHOOK_BACKENDS", "postgresql,sqlite").split(",")
    for backend in backends:
        scratch = scratch_sqlite if backend == "sqlite" else lambda: scratch_database("dr_bench_hooks")
        async with scratch() as (url, _dsn):
            await throughput(url)
        if backend != "sqlite":
            async with scratch() as (url, dsn):
                await lag(url, dsn)
            continue
        for synchronous in ("FULL", "NORMAL"):
            async with scratch() as (url, _dsn):
                await lag_in_process(url, synchronous)


if __name__ == "__main__":
    asyncio.run(main())
