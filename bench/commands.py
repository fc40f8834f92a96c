"""Commands on existing problems under contention, over HTTP: `BENCH_HOT` hot problems (default
8) driven through their lifecycle by 8 and 32 concurrent clients at once (escalate → assign →
accept → resolve → reopen → …), each client choosing the next command from the last state it
saw of a random hot problem and sending it without `If-Match` (so the server decides again on
the fresh state when another client's append got in first).

Reported per level: successful commands/s, p50/p99, the share refused by the state (409: another
client moved the problem on first, so the command no longer applied), and the append conflicts
the server retried (`dispatchroom_concurrency_conflicts_total`) per successful command.
"""

from __future__ import annotations

import asyncio
import os
import random
import re

import httpx
import orjson
import sqlalchemy as sa

from bench import loadgen
from bench.common import PIDS, cpu_seconds, free_port, running, scratch_database
from bench.http_append import ADMIN_KEY, body, prepare, server_specs

HOT = int(os.environ.get("BENCH_HOT", "8"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "8"))
LEVELS = [int(c) for c in os.environ.get("BENCH_CONTENTION_LEVELS", "8,32").split(",")]
HEADERS = {"Authorization": f"Bearer {ADMIN_KEY}"}


def conflicts(metrics: str) -> int:
    match = re.search(r"^dispatchroom_concurrency_conflicts_total ([0-9.e+]+)$", metrics, re.M)
    return int(float(match.group(1))) if match else 0


class Lifecycle:
    """The last state each client saw of each hot problem, and the command that state calls for."""

    def __init__(self, problems: list[dict[str, object]], leads: dict[str, str], department: str) -> None:
        self.seen = {str(p["id"]): p for p in problems}
        self.ids = list(self.seen)
        self.leads = leads
        self.department = department
        self.rng = random.Random(3)
        self.refused = 0

    def next(self, client: int, i: int) -> tuple[str, str, dict[str, object], dict[str, str]]:
        pid = self.ids[self.rng.randrange(len(self.ids))]
        p = self.seen[pid]
        status, tier = p["status"], p["tier"]
        if status == "assigned" and tier == "local":
            name, data = "escalate", {"reason": "需区级协调"}
        elif status == "open":
            lead = self.leads[str(p["district_id"])] if tier == "district" else self.department
            name, data = "assign", {"lead_unit_id": lead}
        elif status == "assigned":
            name, data = "accept", {}
        elif status in ("in_progress", "deferred"):
            name, data = "resolve", {"resolution": "办结"}
        elif status in ("resolved", "closed"):
            name, data = "reopen", {"reason": "企业反映仍未解决"}
        else:
            name, data = "progress", {"note": "跟进"}
        return "POST", f"/v1/problems/{pid}/{name}", data, HEADERS

    def saw(self, client: int, i: int, status: int, payload: bytes) -> None:
        if status == 200:
            problem = orjson.loads(payload)
            self.seen[problem["id"]] = problem
        elif status == 409:
            self.refused += 1


async def main() -> None:
    async with scratch_database("dr_bench_cmd") as (url, dsn):
        codes = await prepare(url)
        engine = __import__("sqlalchemy.ext.asyncio", fromlist=["x"]).create_async_engine(url)
        async with engine.connect() as conn:
            rows = (await conn.execute(sa.text("SELECT id, kind, district_id FROM units ORDER BY id"))).all()
        await engine.dispose()
        leads: dict[str, str] = {}
        for unit_id, kind, district in rows:
            if kind == "district_function_group":
                leads.setdefault(district, unit_id)
        department = next(u for u, kind, _ in rows if kind == "city_department")
        command, env, health, _, _ = server_specs(url, dsn)["dispatchroom"]
        port = free_port()
        command = [str(port) if a == "{port}" else a for a in command]
        print(f"# {HOT} hot problems; {SECONDS:.0f} s per level after 1 s warm-up; one server process")
        async with running(command, env, port, health) as base, httpx.AsyncClient(base_url=base) as http:
            problems = []
            for i in range(HOT):
                response = await http.post("/v1/problems", json=body(codes, 0, i), headers=HEADERS)
                problems.append(response.json())
            for clients in LEVELS:
                life = Lifecycle(problems, leads, department)
                before = conflicts((await http.get("/metrics")).text)
                cpu = cpu_seconds(PIDS[base])
                host, port_text = base.removeprefix("http://").split(":")
                outcome = await loadgen.run(
                    host, int(port_text), clients, SECONDS, life.next, on_response=life.saw
                )
                used = cpu_seconds(PIDS[base]) - cpu
                retried = conflicts((await http.get("/metrics")).text) - before
                ok = outcome.statuses.get(200, 0)
                print(
                    f"commands on {HOT} hot problems, {clients:3d} clients  {ok / outcome.seconds:7.0f} ok/s"
                    f"  p50 {outcome.percentile(0.5):6.1f} ms  p99 {outcome.percentile(0.99):6.1f} ms"
                    f"  refused by state {life.refused / max(outcome.total, 1):5.1%}"
                    f"  append conflicts retried {retried / max(ok, 1):.2f} per ok command"
                    f"  statuses {dict(sorted(outcome.statuses.items()))}"
                    f"  server CPU {used / max(outcome.total, 1) * 1000:.2f} ms/req",
                    flush=True,
                )
                problems = list(life.seen.values())


if __name__ == "__main__":
    asyncio.run(main())
