"""Keys across real server processes: a revocation through one process is refused by the other
at once (no process caches keys), and the servers' own output (console and access log) never
shows a key, not even Open311's `api_key` query parameter."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.conftest import ADMIN_KEY
from tests.server import servers


def test_revocation_reaches_every_process_and_logs_hold_no_key(db_url: str, tmp_path: Path) -> None:
    log = tmp_path / "servers.log"
    env = {
        "DATABASE_URL": db_url,
        "ADMIN_API_KEY": ADMIN_KEY,
        "ENVIRONMENT": "test",
        "SCHEDULER_INTERVAL_SECONDS": "0",
        "SERVER_LOG": str(log),
    }
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    with servers(env, 2, "--log-level", "info") as (first, second):
        created = httpx.post(f"{first}/v1/api-keys", json={"name": "v", "role": "viewer"}, headers=admin)
        assert created.status_code == 201
        key, key_id = created.json()["key"], created.json()["id"]
        bearer = {"Authorization": f"Bearer {key}"}
        for base in (first, second):  # both processes have served the key
            assert httpx.get(f"{base}/v1/problems", headers=bearer).status_code == 200
            open311 = httpx.get(f"{base}/open311/v2/requests.json", params={"api_key": key})
            assert open311.status_code == 200
        assert httpx.delete(f"{first}/v1/api-keys/{key_id}", headers=admin).status_code == 200
        refused = httpx.get(f"{second}/v1/problems", headers=bearer)
        assert refused.status_code == 401 and refused.json()["code"] == "unauthorized"
        assert httpx.get(f"{second}/open311/v2/requests.json", params={"api_key": key}).status_code == 403
        assert httpx.get(f"{first}/v1/me", headers=bearer).status_code == 401
    output = log.read_text()
    assert "GET /open311/v2/requests.json?api_key=***" in output, "the access log is on"
    assert key not in output
    assert ADMIN_KEY not in output  # outside development the console shows a hint only
