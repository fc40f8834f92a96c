"""`POST /v1/problems` over HTTP at 1, 8 and 32 concurrent clients, side by side in one run with:

- the ceiling: a bare FastAPI endpoint doing one asyncpg INSERT per request (bench/ceiling_app.py);
- the peer: the same workload through the `eventsourcing` library's PostgreSQL persistence
  (bench/eventsourcing_app.py).

All three run under uvicorn with the same number of worker processes (BENCH_WORKERS, default 1)
against the same PostgreSQL; the load generator (bench/loadgen.py) shares the machine. Targets
(issue 8): Dispatchroom ≥ 0.5 of the ceiling with p99 < 100 ms at 32 clients, and ≥ 2× the peer.
"""

from __future__ import annotations

import asyncio
import os
import sys

from bench import loadgen
from bench.common import free_port, running, scratch_database

WORKERS = os.environ.get("BENCH_WORKERS", "1")
SECONDS = float(os.environ.get("BENCH_SECONDS", "8"))
LEVELS = [int(c) for c in os.environ.get("BENCH_CLIENTS_LEVELS", "1,8,32").split(",")]
ADMIN_KEY = "dr_bench_admin_key_" + "x" * 20
PYTHON = sys.executable
BIN = os.path.dirname(sys.executable)


async def prepare(url: str) -> list[str]:
    """Migrate, load the demo city without problems, return the enterprises' credit codes."""
    from app.core.clock import SystemClock
    from app.core.settings import Settings
    from app.demo import load_demo
    from app.main import Services
    from app.migrate import upgrade

    await upgrade(url)
    services = Services(Settings(database_url=url, environment="test"), SystemClock())
    await services.bootstrap()
    await load_demo(services.directory, services.problems, now=services.clock.now(), problems_count=0)
    import sqlalchemy as sa

    async with services.db.read() as conn:
        codes = list((await conn.execute(sa.text("SELECT id FROM enterprises ORDER BY id"))).scalars())
    await services.db.dispose()
    return codes


def body(codes: list[str], client: int, i: int) -> dict[str, object]:
    return {
        "enterprise_id": codes[(client * 7919 + i) % len(codes)],
        "category": "utilities",
        "title": "新厂房双回路供电接入",
        "description": "新建厂房需要双回路供电，申请已提交三个月未获答复。",
    }


async def measure_server(
    name: str, base: str, path: str, headers: dict[str, str], codes: list[str]
) -> dict[int, loadgen.Outcome]:
    host, port = base.removeprefix("http://").split(":")
    results = {}
    for clients in LEVELS:
        outcome = await loadgen.run(
            host,
            int(port),
            clients,
            SECONDS,
            lambda c, i: ("POST", path, body(codes, c, i), headers),
        )
        results[clients] = outcome
        ok = sum(n for s, n in outcome.statuses.items() if s < 300)
        print(
            f"{name:16s} {clients:3d} clients  {outcome.rate:8.0f} req/s"
            f"  p50 {outcome.percentile(0.5):6.1f} ms"
            f"  p99 {outcome.percentile(0.99):6.1f} ms  ok {ok}/{outcome.count}",
            flush=True,
        )
    return results


async def main() -> None:
    async with scratch_database("dr_bench_http") as (url, dsn):
        codes = await prepare(url)
        name = dsn.rsplit("/", 1)[1]
        print(f"# uvicorn workers per server: {WORKERS}; {SECONDS:.0f} s per level after 1 s warm-up")
        results = {}

        port = free_port()
        async with running(
            [
                PYTHON,
                "-m",
                "uvicorn",
                "bench.ceiling_app:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                WORKERS,
                "--log-level",
                "warning",
            ],
            {"CEILING_DSN": dsn},
            port,
        ) as base:
            results["ceiling"] = await measure_server("ceiling", base, "/append", {}, codes)

        port = free_port()
        async with running(
            [
                os.path.join(BIN, "dispatchroom"),
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                WORKERS,
                "--log-level",
                "warning",
            ],
            {"DATABASE_URL": url, "ADMIN_API_KEY": ADMIN_KEY},
            port,
            "/healthz",
        ) as base:
            results["dispatchroom"] = await measure_server(
                "dispatchroom", base, "/v1/problems", {"Authorization": f"Bearer {ADMIN_KEY}"}, codes
            )

        port = free_port()
        es_env = {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": name,
            "POSTGRES_HOST": "127.0.0.1",
            "POSTGRES_PORT": "5432",
            "POSTGRES_USER": "postgres",
            "POSTGRES_PASSWORD": "",
            "CREATE_TABLE": "y",
            "POSTGRES_POOL_SIZE": "10",
        }
        async with running(
            [
                PYTHON,
                "-m",
                "uvicorn",
                "bench.eventsourcing_app:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                WORKERS,
                "--log-level",
                "warning",
            ],
            es_env,
            port,
        ) as base:
            results["eventsourcing"] = await measure_server("eventsourcing", base, "/problems", {}, codes)

        print()
        for clients in LEVELS:
            ours = results["dispatchroom"][clients]
            print(
                f"{clients:3d} clients: "
                f"dispatchroom / ceiling {ours.rate / results['ceiling'][clients].rate:5.2f}"
                f"   dispatchroom / eventsourcing {ours.rate / results['eventsourcing'][clients].rate:5.2f}"
                f"   dispatchroom p99 {ours.percentile(0.99):.1f} ms"
            )


if __name__ == "__main__":
    asyncio.run(main())
