"""The webhook HTTP client against real sockets on 127.0.0.1: keep-alive reuse, receivers that
close idle connections, chunked and oversized answers, refusals and garbage."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from app.webhooks.egress import Target
from app.webhooks.transport import Transport, TransportError
from tests.conftest import free_port

Handler = Callable[[bytes, int], bytes]  # (request bytes, request number) -> raw answer


@asynccontextmanager
async def raw_server(
    answer: Handler, *, close_after: bool = False
) -> AsyncIterator[tuple[Target, list[int]]]:
    """A server that answers each request with canned bytes; yields the target and the client
    port of every request (one per connection used)."""
    peers: list[int] = []
    count = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal count
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                body = await reader.readexactly(length)
                peers.append(writer.get_extra_info("peername")[1])
                writer.write(answer(head + body, count))
                count += 1
                await writer.drain()
                if close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    target = Target(
        url=f"http://127.0.0.1:{port}/hook?x=1",
        scheme="http",
        host="127.0.0.1",
        port=port,
        address=ipaddress.ip_address("127.0.0.1"),
    )
    try:
        yield target, peers
    finally:
        server.close()


def ok(_request: bytes, _n: int) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def transport(read_cap: int = 1024) -> Transport:
    return Transport(connect_timeout=2, read_cap=read_cap, max_idle_per_destination=4)


HEADERS = [("Host", "127.0.0.1"), ("Content-Type", "application/json")]


async def test_keep_alive_connections_are_reused() -> None:
    seen: list[bytes] = []

    def record(request: bytes, n: int) -> bytes:
        seen.append(request)
        return ok(request, n)

    client = transport()
    async with raw_server(record) as (target, peers):
        for _ in range(3):
            answer = await client.post(target, HEADERS, b'{"a": 1}')
            assert (answer.status, answer.body) == (200, b"ok")
    await client.aclose()
    assert len(set(peers)) == 1, "one connection for three requests"
    assert seen[0].startswith(b"POST /hook?x=1 HTTP/1.1\r\n") and seen[0].endswith(b'{"a": 1}')
    assert b"content-length: 8" in seen[0].lower()


async def test_a_receiver_closing_idle_connections_costs_nothing() -> None:
    client = transport()
    async with raw_server(ok, close_after=True) as (target, peers):
        for _ in range(3):
            await asyncio.sleep(0.05)  # let the server's close arrive (or not) before reuse
            assert (await client.post(target, HEADERS, b"{}")).status == 200
    await client.aclose()
    assert len(set(peers)) == 3


async def test_chunked_and_oversized_answers() -> None:
    chunked = (
        b"HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\nRetry-After: 7\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    )
    client = transport(read_cap=10)
    async with raw_server(lambda _r, _n: chunked) as (target, _):
        answer = await client.post(target, HEADERS, b"{}")
    assert (answer.status, answer.body, answer.headers["retry-after"]) == (500, b"hello", "7")
    big = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 100000
    async with raw_server(lambda _r, _n: big) as (target, peers):
        first = await client.post(target, HEADERS, b"{}")
        second = await client.post(target, HEADERS, b"{}")
    assert first.body == b"x" * 10 and second.status == 200
    assert len(set(peers)) == 2, "a connection whose answer was cut short is not reused"
    await client.aclose()


async def test_refused_and_garbage_answers_are_transport_errors() -> None:
    client = transport()
    port = free_port()
    nowhere = Target(
        f"http://127.0.0.1:{port}/", "http", "127.0.0.1", port, ipaddress.ip_address("127.0.0.1")
    )
    with pytest.raises(TransportError, match="cannot connect"):
        await client.post(nowhere, HEADERS, b"{}")
    async with raw_server(lambda _r, _n: b"SMTP ready\r\n\r\n") as (target, _):
        with pytest.raises(TransportError, match="not a valid HTTP answer"):
            await client.post(target, HEADERS, b"{}")
    async with raw_server(lambda _r, _n: b"", close_after=True) as (target, _):
        with pytest.raises(TransportError, match="closed before an answer"):
            await client.post(target, HEADERS, b"{}")
    await client.aclose()
