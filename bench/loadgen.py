"""A minimal HTTP/1.1 keep-alive load generator on asyncio streams.

A general-purpose client (httpx) spends more CPU per request than the servers under test, and on
a two-core machine it would cap every server at the same rate; this one builds requests from
bytes and reads responses by Content-Length, so the servers stay the bottleneck.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson


@dataclass
class Outcome:
    count: int = 0
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0
    total: int = 0  # requests sent, warm-up included (what the server's CPU time was spent on)
    server_cpu: float = 0.0  # filled in by the caller that knows the server's process

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else 0.0


class Connection:
    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(ConnectionError):
                await self.writer.wait_closed()

    async def request(
        self, method: str, path: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, bytes]:
        assert self.reader is not None and self.writer is not None
        head = [
            f"{method} {path} HTTP/1.1",
            f"Host: {self.host}",
            f"Content-Length: {len(body)}",
            "Content-Type: application/json",
        ]
        head += [f"{k}: {v}" for k, v in headers.items()]
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        status_line = await self.reader.readline()
        status = int(status_line.split(b" ", 2)[1])
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        payload = await self.reader.readexactly(length) if length else b""
        return status, payload


async def run(
    host: str,
    port: int,
    clients: int,
    seconds: float,
    make_request: Callable[[int, int], tuple[str, str, dict[str, object], dict[str, str]]],
    *,
    warmup: float = 1.0,
    on_response: Callable[[int, int, int, bytes], None] | None = None,
    max_requests: int | None = None,
) -> Outcome:
    """`make_request(client, i) -> (method, path, json_body, headers)` from `clients` keep-alive
    connections for `seconds` after a warm-up; returns counts, statuses and latencies.
    `on_response(client, i, status, body)` sees every response (the next request may depend on it)."""
    outcome = Outcome()
    start = time.perf_counter()
    measure_from = start + warmup
    stop = measure_from + seconds

    async def loop(client: int) -> None:
        conn = Connection(host, port)
        await conn.open()
        i = 0
        try:
            while (now := time.perf_counter()) < stop and (max_requests is None or i < max_requests):
                method, path, body, headers = make_request(client, i)
                i += 1
                t = time.perf_counter()
                status, payload = await conn.request(method, path, orjson.dumps(body), headers)
                outcome.total += 1
                if on_response is not None:
                    on_response(client, i - 1, status, payload)
                if now >= measure_from:
                    outcome.count += 1
                    outcome.latencies.append(time.perf_counter() - t)
                    outcome.statuses[status] = outcome.statuses.get(status, 0) + 1
                    if status >= 400:
                        outcome.errors += 1
        finally:
            await conn.close()

    await asyncio.gather(*(loop(c) for c in range(clients)))
    outcome.seconds = time.perf_counter() - min(max(measure_from, start), time.perf_counter())
    return outcome
