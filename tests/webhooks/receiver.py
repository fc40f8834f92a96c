"""A real HTTP receiver on 127.0.0.1 for webhook tests (and the benchmark).

It runs its own asyncio loop in a thread, so it answers while the test's loop is busy or blocked
(starting a server process, say). It speaks just enough HTTP/1.1: keep-alive, Content-Length
bodies. Every request is verified with the `standardwebhooks` package (the reference
implementation) against the secrets the test hands it, and recorded with the verdict. What it
answers is up to the test (`respond`): a status, a body, optionally a delay (a hung receiver).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from standardwebhooks import Webhook, WebhookVerificationError


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.time() on arrival
    verified_by: list[str] = field(default_factory=list)  # the secrets that verify it
    error: str | None = None
    answered: int | None = None  # the status the receiver answered with

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)

    @property
    def type(self) -> str:
        return str(self.json["type"])

    @property
    def signatures(self) -> list[str]:
        return self.headers["webhook-signature"].split(" ")


@dataclass
class Answer:
    status: int = 200
    body: bytes = b"ok"
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


Respond = Callable[[Received, int], Answer]  # (request, how many came before it) -> answer


def always(status: int = 200, body: bytes = b"ok", delay: float = 0.0) -> Respond:
    return lambda _r, _n: Answer(status, body, delay)


class Receiver:
    def __init__(self, respond: Respond | None = None, *, verify: bool = True) -> None:
        self.respond: Respond = respond or always()
        self.verify = verify
        self.secrets: list[str] = []
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[Any]] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, name="webhook-receiver", daemon=True)
        self.port = 0
        self.busy = 0  # requests being answered now (slow answers)
        self.max_busy = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def __enter__(self) -> Receiver:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        future.result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    # -- HTTP ------------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                _method, path, _version = lines[0].split(" ", 2)
                headers: dict[str, str] = {}
                for line in lines[1:]:
                    if ":" in line:
                        name, value = line.split(":", 1)
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                request = Received(path=path, headers=headers, body=body, at=time.time())
                self._check(request)
                with self._lock:
                    count = len(self.received)
                    self.received.append(request)
                answer = self.respond(request, count)
                self.busy += 1
                self.max_busy = max(self.max_busy, self.busy)
                try:
                    if answer.delay and await self._hangs_up_within(reader, answer.delay):
                        return  # the sender gave up (timeout) and closed the connection
                finally:
                    self.busy -= 1
                lines = [f"HTTP/1.1 {answer.status} X", f"Content-Length: {len(answer.body)}"]
                lines += [f"{k}: {v}" for k, v in answer.headers.items()]
                writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + answer.body)
                await writer.drain()
                request.answered = answer.status
        except (
            asyncio.IncompleteReadError,
            ConnectionError,
            asyncio.LimitOverrunError,
            asyncio.CancelledError,
        ):
            pass
        finally:
            writer.close()
            self._connections.discard(task)

    async def _hangs_up_within(self, reader: asyncio.StreamReader, seconds: float) -> bool:
        """Sleep `seconds` (a slow receiver), noticing if the client closes meanwhile."""
        eof = asyncio.ensure_future(reader.read(1))
        done, _ = await asyncio.wait({eof}, timeout=seconds)
        if not done:
            eof.cancel()
            # Let the cancelled read finish before the next request is read from this reader.
            await asyncio.gather(eof, return_exceptions=True)
            return False
        return eof.result() == b""

    def _check(self, request: Received) -> None:
        if not self.verify:
            return
        for secret in list(self.secrets):
            try:
                Webhook(secret).verify(request.body, request.headers)
            except WebhookVerificationError as exc:
                request.error = str(exc)
            else:
                request.verified_by.append(secret)
        if not self.secrets:
            request.error = "the receiver was given no secret"

    # -- for tests -------------------------------------------------------------------------

    def snapshot(self) -> list[Received]:
        with self._lock:
            return list(self.received)

    def of_type(self, *types: str) -> list[Received]:
        return [r for r in self.snapshot() if r.type in types]

    async def wait_for(
        self, predicate: Callable[[list[Received]], bool], timeout: float = 30.0
    ) -> list[Received]:
        """Poll (bounded) until `predicate(received)` holds; returns what was received."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.snapshot()
            if predicate(got):
                return got
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"receiver: condition not met within {timeout} s; got "
                    f"{[(r.webhook_id, r.type) for r in got][-20:]}"
                )
            await asyncio.sleep(0.02)

    async def wait_count(self, n: int, timeout: float = 30.0) -> list[Received]:
        return await self.wait_for(lambda got: len(got) >= n, timeout)

    def assert_all_verified(self) -> None:
        bad = [(r.webhook_id, r.error) for r in self.snapshot() if not r.verified_by]
        assert not bad, f"deliveries that standardwebhooks did not verify: {bad}"
