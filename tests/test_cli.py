"""The `dispatchroom` command as a real process."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.server import dispatchroom, server


def test_migrate_then_keys_create_list_revoke(db_url: str, tmp_path: Path) -> None:
    env = {"DATABASE_URL": db_url}
    assert dispatchroom("migrate", env=env).returncode == 0
    created = dispatchroom("keys", "create", "--role", "commander", "--name", "市总调度室值班", env=env)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("dr_")
    bad = dispatchroom("keys", "create", "--role", "handler", "--name", "x", env=env)
    assert bad.returncode == 2 and "invalid_key_scope" in bad.stdout
    listed = dispatchroom("keys", "list", env=env)
    assert "市总调度室值班" in listed.stdout and key not in listed.stdout
    with server({**env, "SERVER_LOG": str(tmp_path / "server.log")}) as base:
        me = httpx.get(f"{base}/v1/me", headers={"Authorization": f"Bearer {key}"})
        assert me.status_code == 200 and me.json()["role"] == "commander"
        key_id = me.json()["id"]
        assert dispatchroom("keys", "revoke", key_id, env=env).returncode == 0
        assert httpx.get(f"{base}/v1/me", headers={"Authorization": f"Bearer {key}"}).status_code == 401


def test_demo_refuses_a_database_that_is_not_empty(db_url: str) -> None:
    env = {"DATABASE_URL": db_url}
    first = dispatchroom("demo", env=env)
    assert first.returncode == 0 and "42 problems" in first.stdout
    second = dispatchroom("demo", env=env)
    assert second.returncode == 1 and "not empty" in second.stdout
