"""`POST /v1/problems` over HTTP at 1, 8 and 32 concurrent clients, side by side in one run with:

- the ceiling: a bare FastAPI endpoint doing one asyncpg INSERT per request (bench/ceiling_app.py);
- the peer: the same workload through the `eventsourcing` library's PostgreSQL persistence
  (bench/eventsourcing_app.py).

All three run under uvicorn with the same number of worker processes (BENCH_WORKERS, default 1)
against the same PostgreSQL; the load generator (bench/loadgen.py) shares the machine. Targets
(issue 8): Dispatchroom ≥ 0.5 of the ceiling with p99 < 100 ms at 32 clients, and ≥ 2× the peer.

Before and after in one run: `BENCH_BASELINE=<dir>` adds the server `baseline`, Dispatchroom from
the source tree in <dir> (e.g. `git archive <commit> | tar -x -C <dir>`) with its own database,
measured in turn with the others.

`split` (in BENCH_HTTP_SERVERS) is Dispatchroom as docs/scaling.md deploys it: the API server with
`BACKGROUND=false` and a `dispatchroom worker` process beside it doing the background work (the
sequencer, followers, webhooks), with its own database. Its CPU per request counts both processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Iterator

from bench import loadgen
from bench.common import PIDS, cpu_seconds, free_port, running, scratch_database, stop

WORKERS = os.environ.get("BENCH_WORKERS", "1")
SECONDS = float(os.environ.get("BENCH_SECONDS", "8"))
LEVELS = [int(c) for c in os.environ.get("BENCH_CLIENTS_LEVELS", "1,8,32").split(",")]
ADMIN_KEY = "dr_bench_admin_key_" + "x" * 20
PYTHON = sys.executable
SIDECARS: dict[str, list[int]] = {}  # server base URL -> pids of its helper processes (CPU counted)
BIN = os.path.dirname(sys.executable)


async def prepare(url: str, source: str | None = None) -> list[str]:
    """Migrate (with the code in `source`, if given: the baseline's own migrations), load the
    demo city without problems, return the enterprises' credit codes."""
    from app.core.clock import SystemClock
    from app.core.settings import Settings
    from app.demo import load_demo
    from app.main import Services
    from app.migrate import upgrade

    if source:
        import subprocess

        env = {**os.environ, "DATABASE_URL": url, "PYTHONPATH": os.path.abspath(source)}
        subprocess.run([os.path.join(BIN, "dispatchroom"), "migrate"], env=env, check=True, cwd=source)
    else:
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


BASELINE = os.environ.get("BENCH_BASELINE")
SERVERS = os.environ.get(
    "BENCH_HTTP_SERVERS", "ceiling,dispatchroom" + (",baseline" if BASELINE else "") + ",eventsourcing"
).split(",")
# Extra settings for the Dispatchroom server, e.g. BENCH_OUR_ENV="BACKGROUND=false".
OUR_ENV = dict(kv.split("=", 1) for kv in os.environ.get("BENCH_OUR_ENV", "").split() if "=" in kv)
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))


def merge(outcomes: list[loadgen.Outcome]) -> loadgen.Outcome:
    total = loadgen.Outcome()
    for o in outcomes:
        total.count += o.count
        total.errors += o.errors
        total.seconds += o.seconds
        total.server_cpu += o.server_cpu
        total.total += o.total
        total.latencies += o.latencies
        for status, n in o.statuses.items():
            total.statuses[status] = total.statuses.get(status, 0) + n
    return total


def uvicorn_command(target: str, port: int) -> list[str]:
    return [
        PYTHON,
        "-m",
        "uvicorn",
        target,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        WORKERS,
        "--log-level",
        "warning",
    ]


def server_specs(
    url: str, dsn: str, baseline_url: str | None = None, split_url: str | None = None
) -> dict[str, tuple[list[str], dict[str, str], str, str, dict[str, str]]]:
    """name -> (command, environment, health path, append path, headers) of each server under test."""
    name = dsn.rsplit("/", 1)[1]
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
    ours = [os.path.join(BIN, "dispatchroom"), "serve", "--host", "127.0.0.1", "--port", "{port}"]
    ours += ["--workers", WORKERS, "--log-level", "warning"]
    ours_env = {"DATABASE_URL": url, "ADMIN_API_KEY": ADMIN_KEY, **OUR_ENV}
    auth = {"Authorization": f"Bearer {ADMIN_KEY}"}
    specs = {
        "ceiling": (
            uvicorn_command("bench.ceiling_app:app", 0),
            {"CEILING_DSN": dsn},
            "/docs",
            "/append",
            {},
        ),
        "dispatchroom": (ours, ours_env, "/healthz", "/v1/problems", auth),
        "eventsourcing": (
            uvicorn_command("bench.eventsourcing_app:app", 0),
            es_env,
            "/docs",
            "/problems",
            {},
        ),
    }
    if BASELINE and baseline_url:
        specs["baseline"] = (
            ours,
            {**ours_env, "DATABASE_URL": baseline_url, "PYTHONPATH": os.path.abspath(BASELINE)},
            "/healthz",
            "/v1/problems",
            auth,
        )
    if split_url:
        specs["split"] = (
            ours,
            {**ours_env, "DATABASE_URL": split_url, "BACKGROUND": "false"},
            "/healthz",
            "/v1/problems",
            auth,
        )
    return specs


@contextlib.contextmanager
def worker_process(url: str) -> Iterator[int]:
    """A `dispatchroom worker` on `url` (for the `split` server); yields its pid."""
    import subprocess

    env = {**os.environ, "DATABASE_URL": url, "ADMIN_API_KEY": ADMIN_KEY, **OUR_ENV}
    proc = subprocess.Popen([os.path.join(BIN, "dispatchroom"), "worker"], env=env, stdout=subprocess.DEVNULL)
    try:
        yield proc.pid
    finally:
        stop(proc)


async def measure_once(
    base: str, path: str, headers: dict[str, str], codes: list[str], clients: int
) -> loadgen.Outcome:
    host, port = base.removeprefix("http://").split(":")
    pids = [PIDS[base], *SIDECARS.get(base, [])]
    cpu = sum(map(cpu_seconds, pids))
    outcome = await loadgen.run(
        host, int(port), clients, SECONDS, lambda c, i: ("POST", path, body(codes, c, i), headers)
    )
    outcome.server_cpu = sum(map(cpu_seconds, pids)) - cpu
    return outcome


def line(name: str, clients: int, outcome: loadgen.Outcome) -> str:
    ok = sum(n for s, n in outcome.statuses.items() if s < 300)
    return (
        f"{name:16s} {clients:3d} clients  {outcome.rate:8.0f} req/s"
        f"  p50 {outcome.percentile(0.5):6.1f} ms"
        f"  p99 {outcome.percentile(0.99):6.1f} ms  ok {ok}/{outcome.count}"
        f"  server CPU {outcome.server_cpu / max(outcome.total, 1) * 1000:5.2f} ms/req"
    )


async def main() -> None:
    async with contextlib.AsyncExitStack() as databases:
        url, dsn = await databases.enter_async_context(scratch_database("dr_bench_http"))
        codes = await prepare(url)
        baseline_url = None
        if BASELINE:  # the same city in its own database (the same credit codes: a seeded demo)
            baseline_url, _ = await databases.enter_async_context(scratch_database("dr_bench_base"))
            await prepare(baseline_url, BASELINE)
        split_url = None
        if "split" in SERVERS:
            split_url, _ = await databases.enter_async_context(scratch_database("dr_bench_split"))
            await prepare(split_url)
        print(
            f"# uvicorn workers per server: {WORKERS}; servers {', '.join(SERVERS)} all running, measured "
            f"in turn, {ROUNDS} rounds of {SECONDS:.0f} s per level (after 1 s warm-up each)"
        )
        specs = server_specs(url, dsn, baseline_url, split_url)
        results: dict[str, dict[int, loadgen.Outcome]] = {}
        async with contextlib.AsyncExitStack() as stack:
            bases: dict[str, tuple[str, str, dict[str, str]]] = {}
            for name in SERVERS:
                command, env, health, path, headers = specs[name]
                port = free_port()
                command = [str(port) if a in ("0", "{port}") else a for a in command]
                base = await stack.enter_async_context(running(command, env, port, health))
                if name == "split" and split_url:
                    SIDECARS[base] = [stack.enter_context(worker_process(split_url))]
                bases[name] = (base, path, headers)
            for clients in LEVELS:
                runs: dict[str, list[loadgen.Outcome]] = {name: [] for name in SERVERS}
                for _ in range(ROUNDS):  # interleaved, so that the machine's load hits all alike
                    for name in SERVERS:
                        base, path, headers = bases[name]
                        runs[name].append(await measure_once(base, path, headers, codes, clients))
                for name in SERVERS:
                    results.setdefault(name, {})[clients] = merge(runs[name])
                    print(line(name, clients, results[name][clients]), flush=True)

        print()
        for ours_name in ("dispatchroom", "split"):
            for clients in LEVELS:
                ours = results.get(ours_name, {}).get(clients)
                if ours is None:
                    continue
                parts = [f"{ours_name:12s} {clients:3d} clients:"]
                for peer in ("ceiling", "baseline", "eventsourcing"):
                    if peer in results:
                        parts.append(f"/ {peer} {ours.rate / results[peer][clients].rate:5.2f}")
                parts.append(f"p99 {ours.percentile(0.99):.1f} ms")
                print("   ".join(parts))


if __name__ == "__main__":
    asyncio.run(main())
