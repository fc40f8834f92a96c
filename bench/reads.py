"""Reads at size, over HTTP, and the server's memory under load (PostgreSQL).

Against a seeded database: `BENCH_READS_URL` (a SQLAlchemy URL of a database `dispatchroom seed`
has filled: e.g. 1,000,000 problems), or else a scratch database seeded here with
`BENCH_PROBLEMS` problems (default 100,000). One server process (`dispatchroom serve`, background
work on) answers:

0. the closed periods' figures prepared (as the server's background work does after a start);

1. each read alone, `BENCH_REPEAT` times (default 20) from one client: p50 and p95, and the
   first call's time (figures of the past are remembered after it: `app.projections.settled`);
(`BENCH_OUR_ENV="BACKGROUND=false"` passes settings to the server.)

2. a mix of all of them from 8 clients for `BENCH_SECONDS`, with 8 more clients submitting
   problems at the same time: throughput, and the server's resident memory (RSS, sampled every
   100 ms; the process and its children) at its peak.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from bench import loadgen
from bench.common import PIDS, free_port, running, scratch_database
from bench.http_append import ADMIN_KEY, OUR_ENV, body

REPEAT = int(os.environ.get("BENCH_REPEAT", "20"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "10"))
PROBLEMS = int(os.environ.get("BENCH_PROBLEMS", "100000"))
HEADERS = {"Authorization": f"Bearer {ADMIN_KEY}"}
BIN = os.path.dirname(sys.executable)


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children, in MiB."""
    total = 0
    for p in [pid, *_children(pid)]:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            kids = [int(c) for c in f.read().split()]
    except OSError:
        return []
    return kids + [g for k in kids for g in _children(k)]


@asynccontextmanager
async def seeded() -> AsyncIterator[tuple[str, str]]:
    given = os.environ.get("BENCH_READS_URL")
    if given:
        yield given, given.replace("+asyncpg", "")
        return
    async with scratch_database("dr_bench_reads") as (url, dsn):
        env = {**os.environ, "DATABASE_URL": url}
        t = time.perf_counter()
        subprocess.run(
            [os.path.join(BIN, "dispatchroom"), "seed", "--problems", str(PROBLEMS)], env=env, check=True
        )
        print(f"# seeded {PROBLEMS:,} problems in {time.perf_counter() - t:.0f} s")
        yield url, dsn


async def prepare_closed(url: str) -> int:
    from app.core.clock import SystemClock
    from app.core.settings import Settings
    from app.main import Services

    services = Services(Settings(database_url=url, background=False), SystemClock())
    try:
        return await services.rankings.prepare_closed(services.clock.now())
    finally:
        await services.db.dispose()


async def main() -> None:
    async with seeded() as (url, dsn):
        conn = await asyncpg.connect(dsn)
        problems = await conn.fetchval("SELECT count(*) FROM problem_view")
        events = await conn.fetchval("SELECT count(*) FROM events")
        district = await conn.fetchval(
            "SELECT district_id FROM problem_view GROUP BY 1 ORDER BY count(*) DESC LIMIT 1"
        )
        sample = [
            r[0] for r in await conn.fetch("SELECT id FROM problem_view TABLESAMPLE SYSTEM (1) LIMIT 200")
        ]
        codes = [r[0] for r in await conn.fetch("SELECT id FROM enterprises ORDER BY id LIMIT 200")]
        await conn.close()
        size = f"{problems:,} problems, {events:,} events"
        print(f"# {size}")
        reads = {
            "problem page: in progress in a district, 50": (
                f"/v1/problems?status=in_progress&district_id={district}&limit=50"
            ),
            "problem page: overdue, 50": "/v1/problems?overdue=true&limit=50",
            "problem page: newest, 50": "/v1/problems?limit=50",
            "one problem": "/v1/problems/{id}",
            "one problem's audit trail": "/v1/problems/{id}/events",
            "solve rates by district, all time": "/v1/stats/solve-rates?group_by=district",
            "solve rates by unit, all time": "/v1/stats/solve-rates?group_by=unit",
            "solve rates by unit, October 2026's problems": (
                "/v1/stats/solve-rates?group_by=unit&from=2026-10-01&to=2026-10-31"
            ),
            "solve rates by tier, as of 1 Oct 2026": "/v1/stats/solve-rates?group_by=tier&as_of=2026-10-01",
            "aging by tier (calendar days)": "/v1/stats/aging?group_by=tier",
            "aging by tier, as of 1 Oct 2026": "/v1/stats/aging?group_by=tier&as_of=2026-10-01",
            "rankings of October 2026": "/v1/stats/rankings?period=2026-10",
        }
        # What the background work does within a minute of a start: the closed periods' figures,
        # computed once (here, before the server starts, so the reads below do not share the
        # cores with it; the server's own pass then finds them stored).
        t = time.perf_counter()
        prepared = await prepare_closed(url)
        print(f"# closed periods prepared: {prepared} in {time.perf_counter() - t:.1f} s")
        port = free_port()
        command = [os.path.join(BIN, "dispatchroom"), "serve", "--host", "127.0.0.1", "--port", str(port)]
        command += ["--log-level", "warning"]
        env = {"DATABASE_URL": url, "ADMIN_API_KEY": ADMIN_KEY, **OUR_ENV}
        async with running(command, env, port, "/healthz") as base:
            pid = PIDS[base]
            print(f"# server RSS after start: {rss_mb(pid):.0f} MiB")
            host, port_text = base.removeprefix("http://").split(":")
            for name, path in reads.items():
                outcome = await loadgen.run(
                    host,
                    int(port_text),
                    1,
                    3600,
                    lambda c, i, path=path: ("GET", path.format(id=sample[i % len(sample)]), {}, HEADERS),
                    warmup=0,
                    max_requests=REPEAT,
                )
                bad = {s: n for s, n in outcome.statuses.items() if s != 200}
                p50, p95 = outcome.percentile(0.5), outcome.percentile(0.95)
                first = outcome.latencies[0] * 1000 if outcome.latencies else 0.0
                print(
                    f"{name:52s} p50 {p50:7.1f} ms   p95 {p95:7.1f} ms   first {first:7.1f} ms"
                    + (f"   statuses {bad}" if bad else "")
                    + f"   ({size})",
                    flush=True,
                )
            paths = list(reads.values())
            peak = 0.0
            sampling = True

            async def sample_rss() -> None:
                nonlocal peak
                while sampling:
                    peak = max(peak, rss_mb(pid))
                    await asyncio.sleep(0.1)

            sampler = asyncio.create_task(sample_rss())
            readers = loadgen.run(
                host,
                int(port_text),
                8,
                SECONDS,
                lambda c, i: (
                    "GET",
                    paths[(c + i) % len(paths)].format(id=sample[(c * 31 + i) % len(sample)]),
                    {},
                    HEADERS,
                ),
            )
            writers = loadgen.run(
                host,
                int(port_text),
                8,
                SECONDS,
                lambda c, i: ("POST", "/v1/problems", body(codes, c, i), HEADERS),
            )
            read_outcome, write_outcome = await asyncio.gather(readers, writers)
            sampling = False
            await sampler
            print(
                f"mixed load, 8 readers + 8 writers: {read_outcome.rate:.0f} reads/s "
                f"(p99 {read_outcome.percentile(0.99):.0f} ms), {write_outcome.rate:.0f} submissions/s "
                f"(p99 {write_outcome.percentile(0.99):.0f} ms); server RSS peak {peak:.0f} MiB, "
                f"after {rss_mb(pid):.0f} MiB   ({size})"
            )
            print(f"# statuses: reads {read_outcome.statuses}, writes {write_outcome.statuses}")


if __name__ == "__main__":
    asyncio.run(main())
