"""Shared helpers: a throwaway PostgreSQL database per run, timed concurrent loops, the machine line."""

from __future__ import annotations

import asyncio
import os
import platform
import secrets
import signal
import statistics
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg

ADMIN_DSN = os.environ.get("BENCH_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


def machine() -> str:
    cpus = os.cpu_count()
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{platform.machine()}, {cpus} CPUs, {mem:.0f} GiB, Python {platform.python_version()}"


@asynccontextmanager
async def scratch_database(prefix: str = "dr_bench") -> AsyncIterator[tuple[str, str]]:
    """(SQLAlchemy URL, asyncpg DSN) of a fresh database, dropped afterwards."""
    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(3)}"
    admin = await asyncpg.connect(ADMIN_DSN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    version = await admin.fetchval("SHOW server_version")
    await admin.close()
    dsn = ADMIN_DSN.rsplit("/", 1)[0] + "/" + name
    print(f"# PostgreSQL {version}; {machine()}")
    try:
        yield dsn.replace("postgresql://", "postgresql+asyncpg://", 1), dsn
    finally:
        admin = await asyncpg.connect(ADMIN_DSN)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@dataclass
class Rate:
    name: str
    count: int
    seconds: float
    latencies: list[float]

    @property
    def per_second(self) -> float:
        return self.count / self.seconds

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else 0.0

    def line(self) -> str:
        p50 = statistics.median(self.latencies) * 1000 if self.latencies else 0.0
        return (
            f"{self.name:48s} {self.per_second:9.0f}/s   p50 {p50:6.2f} ms   "
            f"p99 {self.percentile(0.99):6.2f} ms"
        )


async def measure(name: str, clients: int, seconds: float, op: Callable[[int, int], Awaitable[None]]) -> Rate:
    """Run `op(client, i)` from `clients` concurrent loops for `seconds`."""
    stop = time.perf_counter() + seconds
    latencies: list[float] = []

    async def loop(client: int) -> None:
        i = 0
        while time.perf_counter() < stop:
            t = time.perf_counter()
            await op(client, i)
            latencies.append(time.perf_counter() - t)
            i += 1

    start = time.perf_counter()
    await asyncio.gather(*(loop(c) for c in range(clients)))
    return Rate(name, len(latencies), time.perf_counter() - start, latencies)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


PIDS: dict[str, int] = {}  # base URL -> pid of each server `running` started


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and all its descendants (Linux /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    times: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
        times[int(entry)] = (int(fields[11]) + int(fields[12])) / ticks
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        total += times.get(p, 0.0)
        todo += children.get(p, [])
    return total


@asynccontextmanager
async def running(
    command: list[str], env: dict[str, str], port: int, health: str = "/docs"
) -> AsyncIterator[str]:
    """Start a server process and wait until it answers on `port`; stop it afterwards."""
    import sys

    import httpx

    full_env = {**os.environ, **env}
    proc = subprocess.Popen(command, env=full_env, stdout=subprocess.DEVNULL, stderr=sys.stderr)
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient() as client:
            for _ in range(600):
                if proc.poll() is not None:
                    raise RuntimeError(f"{command[0]} exited with {proc.returncode}")
                try:
                    if (await client.get(base + health, timeout=1)).status_code < 500:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
            else:
                raise TimeoutError(f"{' '.join(command)} did not start")
        PIDS[base] = proc.pid
        yield base
    finally:
        PIDS.pop(base, None)
        stop(proc)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a process started for a benchmark: SIGTERM, then SIGKILL after 20 s."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
