"""Several processes on one PostgreSQL database, as several machines would run them: load driven
through two real server processes, with the background work in the API processes or in a
separate `dispatchroom worker`. No event is lost or written twice, the feed numbers every event
exactly once without gaps, and the read models equal a full rebuild from the log.

(Automatic actions and webhook deliveries happening once with two processes are proven by
tests/problems/test_scheduler_processes.py and tests/webhooks/test_processes.py.)"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.core.clock import SystemClock
from app.core.settings import Settings
from tests.conftest import ADMIN_KEY
from tests.factories import D1, D2, build_city
from tests.instances import another_instance
from tests.projections.test_rebuild import dump
from tests.server import BIN, servers, stop_process

AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
PROBLEMS = 24


@contextmanager
def worker(env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """`dispatchroom worker`: the background work without HTTP."""
    log = Path(env["SERVER_LOG"])
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [str(BIN / "dispatchroom"), "worker"], env={**os.environ, **env}, stdout=out, stderr=out
        )
    try:
        yield proc
    finally:
        stop_process(proc)


async def drive(bases: list[str], enterprises: list[str], fgs: dict[str, str]) -> dict[str, int]:
    """Submissions through both servers, 8 at a time, then contended commands: each problem is
    escalated through one server while being assigned and given progress notes through the other.
    Returns each problem's final version as the servers reported it."""
    versions: dict[str, int] = {}
    gate = asyncio.Semaphore(8)
    async with httpx.AsyncClient(headers=AUTH, timeout=30) as http:

        async def post(base: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
            async with gate:
                response = await http.post(base + path, json=body)
            assert response.status_code in (200, 201), response.text
            result: dict[str, Any] = response.json()
            versions[result["id"]] = max(versions.get(result["id"], 0), result["version"])
            return result

        body = {"category": "utilities", "title": "供电接入", "description": "新厂房需要双回路供电"}
        submitted = await asyncio.gather(
            *(
                post(
                    bases[i % 2], "/v1/problems", {**body, "enterprise_id": enterprises[i % len(enterprises)]}
                )
                for i in range(PROBLEMS)
            )
        )
        escalated = await asyncio.gather(
            *(
                post(bases[i % 2], f"/v1/problems/{p['id']}/escalate", {"reason": "需区级协调"})
                for i, p in enumerate(submitted)
            )
        )
        contended = []
        for i, p in enumerate(escalated):
            if p["tier"] != "district":
                continue
            other = bases[(i + 1) % 2]
            contended.append(
                post(bases[i % 2], f"/v1/problems/{p['id']}/assign", {"lead_unit_id": fgs[p["district_id"]]})
            )
            contended += [
                post(other, f"/v1/problems/{p['id']}/progress", {"note": f"进展 {n}"}) for n in range(3)
            ]
        await asyncio.gather(*contended)
    return versions


@pytest.mark.postgres_only
@pytest.mark.parametrize("topology", ["background in both servers", "two API servers and a worker"])
async def test_two_server_processes_lose_and_duplicate_nothing(
    db_url: str, settings: Settings, tmp_path: Path, topology: str
) -> None:
    async with another_instance(settings, SystemClock(), background=False) as (services, _):
        city = await build_city(services, enterprises_per_group=2)
        enterprises = city.enterprises[D1] + city.enterprises[D2]
        fgs = {D1: city.function_groups[D1][0], D2: city.function_groups[D2][0]}
        env = {
            "DATABASE_URL": db_url,
            "ADMIN_API_KEY": ADMIN_KEY,
            "SERVER_LOG": str(tmp_path / "servers.log"),
        }
        split = topology == "two API servers and a worker"
        with (
            servers({**env, "BACKGROUND": "false"} if split else env, 2) as bases,
            worker(env) if split else _nothing(),
        ):
            versions = await drive(bases, enterprises, fgs)
            # Everything numbered and followed (by the servers' or the worker's loops).
            deadline = time.monotonic() + 60
            while True:
                status = {s.name: s for s in await services.projections.status()}
                if not await services.store.unsequenced() and status["problem_history"].lag_events == 0:
                    break
                assert time.monotonic() < deadline, "positions or the history follower lag behind"
                await asyncio.sleep(0.1)

        feed = await services.store.read_all(0, 100_000)
        problem_events = [e for e in feed if e.stream_id.startswith("problem-")]
        assert [e.position for e in feed] == list(range(1, len(feed) + 1)), "gap-free, each once"
        assert len({e.event_id for e in feed}) == len(feed)
        assert len(problem_events) == sum(versions.values()), "no event lost, none written twice"
        for pid, version in versions.items():
            stream = await services.store.read_stream(f"problem-{pid}")
            assert [e.stream_version for e in stream] == list(range(1, version + 1))

        live = await dump(services.db)
        assert len(live["problem_view"]) == PROBLEMS
        for name in ("problem_view", "problem_history"):
            await services.projections.rebuild(name)
        assert await dump(services.db) == live, "the read models equal a full rebuild"
    log = (tmp_path / "servers.log").read_text(encoding="utf-8", errors="replace")
    assert "Traceback" not in log, log[-3000:]


@contextmanager
def _nothing() -> Iterator[None]:
    yield
