"""`GET /v1/events/stream` against a real server process, on SQLite and PostgreSQL: live events,
heartbeats, resuming with Last-Event-ID, scope, a consumer that stops reading, and shutdown."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson

from tests.server import server

ADMIN = "dr_dev_admin_key"


def messages(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """Parse Server-Sent Events: each message as {id, event, data, comments}."""
    current: dict[str, Any] = {"comments": []}
    for line in response.iter_lines():
        if line == "":
            if set(current) != {"comments"} or current["comments"]:
                yield current
            current = {"comments": []}
        elif line.startswith(":"):
            current["comments"].append(line[1:].strip())
        else:
            field, _, value = line.partition(":")
            current[field] = value.removeprefix(" ")


def next_event(stream: Iterator[dict[str, Any]]) -> dict[str, Any]:
    for message in stream:
        if "data" in message:
            message["data"] = orjson.loads(message["data"])
            return message
    raise AssertionError("the stream ended")


def test_stream_live_resume_scope_slow_consumer_and_shutdown(db_url: str, tmp_path: Path) -> None:
    env = {"DATABASE_URL": db_url, "ADMIN_API_KEY": ADMIN, "SERVER_LOG": str(tmp_path / "server.log")}
    ended: dict[str, float] = {}
    with server(env, "--demo") as base:
        api = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10)
        enterprise = api.get("/v1/enterprises", params={"district_id": "220102", "limit": 1}).json()
        enterprise_id = enterprise["items"][0]["id"]
        portal = api.post("/v1/api-keys", json={"name": "portal", "role": "portal", "source": "zwfw"}).json()

        def submit(key: str = ADMIN) -> str:
            body = {
                "enterprise_id": enterprise_id,
                "category": "utilities",
                "title": "供电",
                "description": "供电",
            }
            response = api.post("/v1/problems", json=body, headers={"Authorization": f"Bearer {key}"})
            assert response.status_code == 201, response.text
            return str(response.json()["id"])

        head = api.get("/v1/events", params={"limit": 1}).json()["head"]

        # Live: events arrive as they are written; heartbeats while idle.
        # Only problems' events: on PostgreSQL the portal key's event may be numbered after `head`.
        params = {"after": head, "heartbeat": "0.5", "types": "problem.*"}
        with api.stream("GET", "/v1/events/stream", params=params, timeout=10) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            stream = messages(response)
            first = submit()
            event = next_event(stream)
            assert event["event"] == "problem.submitted" and event["data"]["problem_id"] == first
            assert int(event["id"]) == event["data"]["position"] > head
            started = time.monotonic()
            beat = next(m for m in stream if "heartbeat" in m["comments"])
            assert beat and time.monotonic() - started < 5
            last_id = event["id"]

        # Resume with Last-Event-ID: exactly the events written since, in order.
        second, third = submit(), submit()
        headers = {"Last-Event-ID": last_id}
        with api.stream(
            "GET", "/v1/events/stream", params={"after": 0, "types": "problem.*"}, headers=headers, timeout=10
        ) as response:
            stream = messages(response)
            assert [next_event(stream)["data"]["problem_id"] for _ in range(2)] == [second, third]

        # Scope: a portal's stream carries its own problems only.
        portal_headers = {"Authorization": f"Bearer {portal['key']}"}
        with api.stream(
            "GET", "/v1/events/stream", params={"after": head}, headers=portal_headers, timeout=10
        ) as response:
            stream = messages(response)
            submit()  # not the portal's
            own = submit(portal["key"])
            event = next_event(stream)
            assert event["data"]["problem_id"] == own

        # A consumer that stops reading does not hold up writers, and loses nothing.
        slow = socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1])))
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        auth = f"Authorization: Bearer {ADMIN}"
        request = f"GET /v1/events/stream?after=0 HTTP/1.1\r\nHost: x\r\n{auth}\r\n\r\n"
        slow.sendall(request.encode())
        time.sleep(0.5)
        latencies = []
        written = []
        for _ in range(40):
            started = time.monotonic()
            written.append(submit())
            latencies.append(time.monotonic() - started)
        assert max(latencies) < 2.0, latencies
        final = api.get("/v1/events", params={"after": 0, "limit": 1}).json()["head"]
        received = b""
        slow.settimeout(10)
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)  # now read at full speed
        while f"id: {final}\n".encode() not in received:
            chunk = slow.recv(65536)
            assert chunk, "the slow consumer's stream ended early"
            received += chunk
        slow.close()
        ids = [int(line[4:]) for line in received.decode().splitlines() if line.startswith("id: ")]
        # Every event, in order, none twice (a submission numbered just after `final` was read
        # may arrive in the same chunk).
        assert ids == list(range(1, len(ids) + 1)) and len(ids) >= final

        # Shutdown: an open stream ends by itself and the server stops promptly.
        def follow() -> None:
            try:
                with httpx.stream(
                    "GET",
                    f"{base}/v1/events/stream",
                    params={"after": final},
                    headers={"Authorization": f"Bearer {ADMIN}"},
                    timeout=30,
                ) as response:
                    for _ in response.iter_lines():
                        pass
            except httpx.HTTPError:
                pass
            ended["at"] = time.monotonic()

        follower = threading.Thread(target=follow)
        follower.start()
        time.sleep(0.5)
        stopping = time.monotonic()
    stopped = time.monotonic() - stopping
    follower.join(timeout=5)
    assert "at" in ended and stopped < 10, f"the server took {stopped:.1f}s to stop"
