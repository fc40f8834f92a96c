"""README's walk-through runs as written against `dispatchroom serve --demo`, on both backends."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from tests.server import server

README = Path(__file__).resolve().parents[1] / "README.md"


def walkthrough() -> str:
    """Every walk-through block of the README, in order, as one script."""
    text = README.read_text(encoding="utf-8")
    blocks = [
        part.split("<!-- walkthrough:end -->")[0] for part in text.split("<!-- walkthrough:start -->")[1:]
    ]
    scripts = [re.search(r"```bash\n(.*?)```", block, re.S) for block in blocks]
    assert scripts and all(scripts), "a README walk-through block is missing"
    return "\n".join(match.group(1) for match in scripts if match)


def test_the_walkthrough_works(db_url: str, tmp_path: Path) -> None:
    env = {
        "DATABASE_URL": db_url,
        "ADMIN_API_KEY": "dr_dev_admin_key",
        "SERVER_LOG": str(tmp_path / "server.log"),
    }
    with server(env, "--demo") as base:
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", walkthrough()],
            env={**os.environ, "BASE": base, "KEY": "dr_dev_admin_key"},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert '"role":"admin"' in out
    assert '{"tier":"local","status":"assigned"' in out
    assert '{"tier":"district","status":"open","holder_unit_id":"220102-room"' in out
    assert '"lead_unit_id":"220102-utilities","cooperating_unit_ids":["220102-approvals"]' in out
    assert '{"status":"in_progress","version":4}' in out
    assert '{"status":"closed","satisfied":true}' in out
    assert "7 problem.closed by admin" in out
    assert '"status":409,"code":"invalid_transition"' in out
    # routing rules, the calendar, the lists of the command room
    assert '"cooperating_unit_ids":["220102-approvals"],"rule_version":1}' in out
    assert '{"version":1,"city_categories":["demolition","environmental_assessment"]' in out
    assert '{"version":2,"auto_escalate":{"local":true,"district":false}}' in out
    assert '{"version":2,"changes":{"settings":["auto_escalate"]' in out
    assert '{"status":422,"code":"invalid_rules","first":"unit 220102-t1-g1 is a service_group' in out
    assert '["2027-01-01",false,"override"]' in out
    assert "助企问题调度通报" in out and '"solve_rate":' in out
    assert '{"status":"resolved","satisfied":null}' in out
    # the wall board: a board link opens the board, not the API
    assert "/board/open#token=…" in out and 'id="kpi-received" value="' in out
    assert "API with a board token: 401" in out
