"""Where `dispatchroom seed` spends CPU per problem, with the bulk-loaded tables' indexes kept and
with them dropped (PostgreSQL), side by side in one run.

A scratch database is seeded with `BENCH_PROBLEMS` problems (default 50,000) by `dispatchroom
seed`; two copies of it are made, one with every index (how a seed loaded before, and still loads
into a database that has problems) and one without the indexes a seed into an empty database
drops. Into each, in turn, `BENCH_CHUNKS` chunks (default 3) of 2,000 more problems are written
by the seed's own chunk functions, measuring CPU from `/proc`, which load inflates much less than
wall time:

- generation: this process deciding and folding the problems (before any COPY),
- COPY client / COPY server: this process and its PostgreSQL backend during the COPY,
- numbering: the backend running the sequencer's statement over those events (passes of 20,000
  as during a load with indexes; of 1,000,000 after a load without them).

Building the dropped indexes afterwards is timed too (the seed does it once, at the end).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from typing import Any

import asyncpg

from app.cli import services
from app.core.settings import Settings
from app.demo.seed import (
    BULK_SEQUENCE_BATCH,
    CHUNK,
    SEQUENCE_BATCH,
    build_indexes,
    chunk_rows,
    copy_chunk,
    drop_indexes,
    load_city,
)
from bench.common import ADMIN_DSN, scratch_database

PROBLEMS = int(os.environ.get("BENCH_PROBLEMS", "50000"))
CHUNKS = int(os.environ.get("BENCH_CHUNKS", "3"))
BIN = os.path.dirname(sys.executable)


def backend_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(url: str, dsn: str, indexes: bool) -> dict[str, float]:
    async with services(Settings(background=False, database_url=url)) as svc:
        city = await load_city(svc, dsn, seed=int(time.time()) % 100_000 + 2)
        totals = dict.fromkeys(["generation", "copy client", "copy server", "numbering"], 0.0)
        events = 0
        async with svc.db.autocommit() as conn:
            await conn.exec_driver_sql("SET statement_timeout = 0")
            raw: Any = (await conn.get_raw_connection()).driver_connection
            pid = await raw.fetchval("SELECT pg_backend_pid()")
            for index in range(CHUNKS):
                started = time.process_time()
                chunk = chunk_rows(city, index, CHUNK)
                copied, server = time.process_time(), backend_cpu(pid)
                events += await copy_chunk(raw, chunk)
                totals["generation"] += copied - started
                totals["copy client"] += time.process_time() - copied
                totals["copy server"] += backend_cpu(pid) - server
            server = backend_cpu(pid)
            while await svc.store.sequence(SEQUENCE_BATCH if indexes else BULK_SEQUENCE_BATCH, conn=conn):
                pass
            totals["numbering"] = backend_cpu(pid) - server
            await conn.exec_driver_sql("RESET statement_timeout")
    problems = CHUNKS * CHUNK
    return {k: v / problems * 1000 for k, v in totals.items()} | {"events/problem": events / problems}


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


async def main() -> None:
    async with scratch_database("dr_bench_seed") as (url, dsn):
        env = {**os.environ, "DATABASE_URL": url}
        t = time.perf_counter()
        command = [os.path.join(BIN, "dispatchroom"), "seed", "--problems", str(PROBLEMS)]
        subprocess.run(command, env=env, check=True)
        print(f"# seeded {PROBLEMS:,} problems in {time.perf_counter() - t:.0f} s; load {load()}")
        name = dsn.rsplit("/", 1)[1]
        admin = await asyncpg.connect(ADMIN_DSN)
        copies = {True: f"{name}_with", False: f"{name}_without"}
        try:
            for copy in copies.values():
                await admin.execute(f'CREATE DATABASE "{copy}" TEMPLATE "{name}"')
            base, base_url = dsn.rsplit("/", 1)[0], url.rsplit("/", 1)[0]
            await drop_indexes(f"{base}/{copies[False]}")
            results = {}
            for indexes, copy in copies.items():
                results[indexes] = await measure(f"{base_url}/{copy}", f"{base}/{copy}", indexes)
            t = time.perf_counter()
            await build_indexes(f"{base}/{copies[False]}")
            build = time.perf_counter() - t
        finally:
            for copy in copies.values():
                await admin.execute(f'DROP DATABASE IF EXISTS "{copy}" WITH (FORCE)')
            await admin.close()
    print(f"# CPU ms per problem, {CHUNKS} chunks of {CHUNK:,} into {PROBLEMS:,} problems; load {load()}")
    print(f"{'':<16}{'indexes kept':>14}{'dropped':>10}{'ratio':>8}")
    for key in results[True]:
        kept, dropped = results[True][key], results[False][key]
        print(f"{key:<16}{kept:>14.3f}{dropped:>10.3f}{kept / dropped if dropped else 0:>8.2f}")
    total = PROBLEMS + CHUNKS * CHUNK
    print(f"# building every dropped index afterwards: {build:.1f} s (wall), {total:,} problems")


if __name__ == "__main__":
    asyncio.run(main())
