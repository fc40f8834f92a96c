"""A PostgreSQL outage under load: a throwaway cluster of the test's own (initdb in a temporary
folder, its own port; the machine's shared server is never touched) is stopped while a real
server process takes requests. Meanwhile every answer is a quick 503 problem+json with
`Retry-After` (no hang, no 500), `/readyz` says not ready and `/healthz` stays up; once the
cluster is back, writes, positions and reads work again without restarting the service."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from app.core.errors import PROBLEM_JSON
from tests.conftest import ADMIN_KEY, free_port
from tests.factories import auth, submit
from tests.server import server
from tests.webhooks.test_processes import prepared_city

pytestmark = pytest.mark.slow
PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))


class Cluster:
    """A PostgreSQL cluster in a temporary folder, run as `postgres` when the test runs as root
    (initdb refuses root)."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="dr-outage-"))
        self.data = self.folder / "data"
        self.port = free_port()
        self.as_root = os.geteuid() == 0
        if self.as_root:
            shutil.chown(self.folder, "postgres", "postgres")

    def run(self, *command: str, check: bool = True) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if self.as_root else []
        subprocess.run([*prefix, *command], check=check, capture_output=True, timeout=60)

    def init(self) -> None:
        self.run(str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = str(self.folder / "postgres.log")
        self.run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", log, "-w", "start")

    def stop(self) -> None:
        self.run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def remove(self) -> None:
        self.run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop", check=False)
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    if not (PG_BIN / "initdb").exists():
        pytest.fail(f"initdb not found in {PG_BIN} (set PG_BIN)")
    c = Cluster()
    try:
        c.init()
        c.start()
        yield c
    finally:
        c.remove()


async def timed(
    http: httpx.AsyncClient, method: str, path: str, **kw: object
) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = await http.request(method, path, **kw)  # type: ignore[arg-type]
    return response, time.monotonic() - started


@pytest.mark.postgres_only
async def test_database_outage_is_503_and_recovers_without_a_restart(
    cluster: Cluster, db_url: str, tmp_path: Path
) -> None:
    """(`db_url` only selects the PostgreSQL run; the service runs on the throwaway cluster.)"""
    conn = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{cluster.port}/postgres")
    await conn.execute("CREATE DATABASE dispatchroom")
    await conn.close()
    url = cluster.url("dispatchroom")
    env = {
        "DATABASE_URL": url,
        "ADMIN_API_KEY": ADMIN_KEY,
        "ENVIRONMENT": "test",
        "SEQUENCER_POLL_MS": "5",
        "SERVER_LOG": str(tmp_path / "server.log"),
    }
    with server(env) as base:
        city = await prepared_city(url)
        async with httpx.AsyncClient(base_url=base, headers=auth(ADMIN_KEY), timeout=30) as http:
            before = await submit(http, city.enterprise())
            assert (await http.get("/readyz")).status_code == 200

            cluster.stop()
            for method, path, body in [
                ("GET", f"/v1/problems/{before['id']}", None),
                ("GET", "/v1/problems", None),
                ("POST", f"/v1/problems/{before['id']}/escalate", {"reason": "需区级协调"}),
                (
                    "POST",
                    "/v1/problems",
                    {
                        "enterprise_id": city.enterprise(),
                        "category": "utilities",
                        "title": "停库期间",
                        "description": "数据库不可用",
                    },
                ),
                ("GET", "/v1/events", None),
                ("GET", "/v1/stats/solve-rates", None),
            ] * 3:
                response, seconds = await timed(http, method, path, json=body)
                assert response.status_code == 503, (path, response.status_code, response.text)
                assert response.headers["content-type"].startswith(PROBLEM_JSON)
                assert response.json()["code"] == "service_unavailable"
                assert int(response.headers["retry-after"]) > 0
                assert seconds < 5, f"{method} {path} took {seconds:.1f} s during the outage"
            ready, seconds = await timed(http, "GET", "/readyz")
            assert ready.status_code == 503 and ready.json()["status"] == "not ready"
            assert "retry-after" in ready.headers and seconds < 5
            assert (await http.get("/healthz")).status_code == 200  # the process itself is fine

            cluster.start()
            deadline = time.monotonic() + 30
            while (await http.get("/readyz")).status_code != 200:
                assert time.monotonic() < deadline, "not ready 30 s after the database came back"
                await asyncio.sleep(0.2)
            escalated = await http.post(
                f"/v1/problems/{before['id']}/escalate", json={"reason": "恢复后上交"}
            )
            assert escalated.status_code == 200, escalated.text
            after = await submit(http, city.enterprise(index=1))
            # Background work survived the outage: the new events get positions in the feed.
            deadline = time.monotonic() + 30
            while True:
                feed = (await http.get("/v1/events", params={"limit": 1000})).json()["items"]
                if after["id"] in {e["stream_id"].removeprefix("problem-") for e in feed}:
                    break
                assert time.monotonic() < deadline, "no position for events written after the outage"
                await asyncio.sleep(0.2)
            assert (await http.get(f"/v1/problems/{after['id']}")).json()["version"] == 1
