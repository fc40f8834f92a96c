"""Slow consumers do not slow command handling, on a real server process (SQLite and PostgreSQL):
a webhook receiver that hangs on every request and Server-Sent Events clients that never read
(their sockets' buffers fill up) are running while commands are sent; the commands' latency stays
close to what it was without them."""

from __future__ import annotations

import asyncio
import socket
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import ADMIN_KEY
from tests.factories import City, auth
from tests.server import server_process
from tests.webhooks.conftest import subscribe
from tests.webhooks.receiver import Receiver, always
from tests.webhooks.test_processes import prepared_city, server_env

pytestmark = pytest.mark.slow
SILENT_STREAMS = 4
ROUNDS = 25


@contextmanager
def silent_streams(base: str, count: int) -> Iterator[list[socket.socket]]:
    """SSE clients that send their request and never read a byte (a tiny receive buffer)."""
    host = urlsplit(base)
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
            s.connect((host.hostname, host.port))
            s.sendall(
                f"GET /v1/events/stream?heartbeat=1 HTTP/1.1\r\nHost: {host.netloc}\r\n"
                f"Authorization: Bearer {ADMIN_KEY}\r\nAccept: text/event-stream\r\n\r\n".encode()
            )
            sockets.append(s)
        yield sockets
    finally:
        for s in sockets:
            s.close()


async def latencies(http: httpx.AsyncClient, city: City, rounds: int) -> list[float]:
    """Seconds per command: a submission and an escalation, `rounds` times."""
    took = []
    for i in range(rounds):
        body = {"enterprise_id": city.enterprise(index=i % 4), "category": "utilities",
                "title": "慢消费者期间的命令", "description": "命令延迟不受影响" * 20}  # fmt: skip
        started = time.monotonic()
        created = await http.post("/v1/problems", json=body)
        took.append(time.monotonic() - started)
        assert created.status_code == 201, created.text
        started = time.monotonic()
        escalated = await http.post(
            f"/v1/problems/{created.json()['id']}/escalate", json={"reason": "需区级协调"}
        )
        took.append(time.monotonic() - started)
        assert escalated.status_code == 200, escalated.text
    return took


async def test_hung_receivers_and_silent_streams_do_not_slow_commands(db_url: str, tmp_path: Path) -> None:
    city = await prepared_city(db_url)
    env = server_env(db_url, tmp_path, WEBHOOK_TIMEOUT_SECONDS="60", WEBHOOK_RETRY_SCHEDULE="0,1,1,1")
    with Receiver(always(200, delay=120)) as hung, server_process(env) as (_, base):
        async with httpx.AsyncClient(base_url=base, headers=auth(ADMIN_KEY), timeout=30) as http:
            await latencies(http, city, 3)  # warm up
            quiet = await latencies(http, city, ROUNDS)
            for _ in range(3):  # several subscriptions, all to the receiver that never answers
                await subscribe(http, hung, event_types=["*"])
            with silent_streams(base, SILENT_STREAMS):
                await asyncio.sleep(0.5)
                loaded = await latencies(http, city, ROUNDS)
                assert hung.busy >= 3, f"the receiver holds {hung.busy} requests (the hang is in effect)"
                health = await http.get("/healthz")
                assert health.status_code == 200
    q50, l50 = statistics.median(quiet), statistics.median(loaded)
    q95, l95 = sorted(quiet)[int(len(quiet) * 0.95)], sorted(loaded)[int(len(loaded) * 0.95)]
    print(f"\ncommand latency: quiet p50 {q50 * 1000:.1f} ms p95 {q95 * 1000:.1f} ms; "
          f"with slow consumers p50 {l50 * 1000:.1f} ms p95 {l95 * 1000:.1f} ms")  # fmt: skip
    # A shared 2-core machine is noisy: bounded, not equal.
    assert l50 < 3 * q50 + 0.05, (q50, l50)
    assert max(loaded) < 5, f"a command took {max(loaded):.1f} s with slow consumers"
