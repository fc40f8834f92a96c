"""Random command sequences against a real server process (Hypothesis stateful testing), on
SQLite and PostgreSQL. After every step: the problem's version equals the number of events in
its audit trail, versions run 1..n, a refused command (4xx) wrote nothing and an accepted one
moved the version on. At the end: every event is in the global feed exactly once, and the
problem view reads the same after `dispatchroom projections rebuild`."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from tests.conftest import ADMIN_KEY
from tests.factories import auth
from tests.reliability.databases import BACKENDS, fresh_database
from tests.server import dispatchroom, server

pytestmark = pytest.mark.slow
EXAMPLES = int(os.environ.get("STATEFUL_EXAMPLES", "6"))
COMMANDS: dict[str, dict[str, Any]] = {
    "accept": {},
    "escalate": {"reason": "需上级协调"},
    "assign": {},
    "progress": {"note": "已现场踏勘"},
    "resolve": {"resolution": "已办结"},
    "feedback": {"score": 5, "comment": "满意"},
    "reopen": {"reason": "问题复发"},
    "supervise": {"note": "请加快"},
    "withdraw": {"reason": "企业撤回"},
    "close": {"reason": "按规定销号"},
    "return": {"reason": "不属本单位职责"},
}


@pytest.fixture(scope="module", params=BACKENDS)
def live(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    folder = tmp_path_factory.mktemp(f"stateful-{request.param}")
    with fresh_database(request.param, folder) as url:
        env = {"DATABASE_URL": url, "ADMIN_API_KEY": ADMIN_KEY, "ENVIRONMENT": "test",
               "SEQUENCER_POLL_MS": "5", "SERVER_LOG": str(folder / "server.log")}  # fmt: skip
        with server(env, "--demo") as base:
            yield base, url


def test_random_command_sequences_keep_the_log_and_the_views_consistent(live: tuple[str, str]) -> None:
    base, url = live
    http = httpx.Client(base_url=base, headers=auth(ADMIN_KEY), timeout=30)
    enterprises = [e["id"] for e in http.get("/v1/enterprises", params={"limit": 8}).json()["items"]]
    created: dict[str, int] = {}  # every problem of every example -> its acknowledged version
    outcomes = {"accepted": 0, "refused": 0}

    class Commands(RuleBasedStateMachine):
        problems = Bundle("problems")

        @initialize()
        def start(self) -> None:
            self.versions: dict[str, int] = {}

        @rule(target=problems, enterprise=st.sampled_from(enterprises), urgent=st.booleans())
        def submit(self, enterprise: str, urgent: bool) -> str:
            body = {"enterprise_id": enterprise, "category": "utilities", "title": "随机命令",
                    "description": "状态机生成", "urgency": "urgent" if urgent else "normal"}  # fmt: skip
            response = http.post("/v1/problems", json=body)
            assert response.status_code == 201, response.text
            pid: str = response.json()["id"]
            self.versions[pid] = created[pid] = 1
            return pid

        @rule(pid=problems, name=st.sampled_from(sorted(COMMANDS)), pinned=st.booleans())
        def command(self, pid: str, name: str, pinned: bool) -> None:
            before = self.versions[pid]
            headers = {"If-Match": f'"{before}"'} if pinned else {}
            response = http.post(f"/v1/problems/{pid}/{name}", json=COMMANDS[name], headers=headers)
            assert response.status_code < 500, response.text
            if response.is_success:
                version = response.json()["version"]
                assert version > before, f"{name} answered {response.status_code} without a new event"
                self.versions[pid] = created[pid] = version
                outcomes["accepted"] += 1
            else:
                outcomes["refused"] += 1
                assert response.status_code in (403, 409, 422), response.text
                assert response.headers["content-type"].startswith("application/problem+json")
            self.check(pid)

        def check(self, pid: str) -> None:
            trail = http.get(f"/v1/problems/{pid}/events").json()
            view = http.get(f"/v1/problems/{pid}")
            assert [e["version"] for e in trail] == list(range(1, len(trail) + 1))
            assert view.json()["version"] == len(trail) == self.versions[pid], "an event lost or extra"
            assert view.headers["etag"] == f'"{len(trail)}"'

        @invariant()
        def all_consistent(self) -> None:
            for pid in list(self.versions)[-3:]:
                self.check(pid)

    run_state_machine_as_test(
        Commands,
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=15,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        ),
    )
    assert len(created) >= EXAMPLES
    assert outcomes["accepted"] >= 5 and outcomes["refused"] >= 5, outcomes  # both paths were taken

    # Every event of these problems is in the global feed, once, in stream order.
    deadline = time.monotonic() + 30
    while True:
        feed = _feed(http)
        mine = [e for e in feed if e["stream_id"].removeprefix("problem-") in created]
        if len(mine) == sum(created.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert len(mine) == sum(created.values()), "an acknowledged event is missing from the feed"
    assert len({e["event_id"] for e in mine}) == len(mine)
    positions = [e["position"] for e in feed]
    assert positions == list(range(1, len(feed) + 1)), "the feed has a gap"

    views = {pid: http.get(f"/v1/problems/{pid}").json() for pid in created}
    rebuilt = dispatchroom("projections", "rebuild", env={"DATABASE_URL": url})
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    for pid, before in views.items():
        after = http.get(f"/v1/problems/{pid}").json()
        # Aging moves with the clock between the two reads; everything else is the same.
        moving = {"time_to_deadline", "age_days", "age_working_days", "tier_age_days", "overdue"}
        assert {k: v for k, v in after.items() if k not in moving} == {
            k: v for k, v in before.items() if k not in moving
        }, pid
    http.close()


def _feed(http: httpx.Client) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    after = 0
    while True:
        page = http.get("/v1/events", params={"after": after, "limit": 1000}).json()["items"]
        if not page:
            return items
        items += page
        after = page[-1]["position"]
