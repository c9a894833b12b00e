"""The main port's head gate (actors/web/head_gate.py) in front of Hypercorn (actors/web/hypercorn_worker.py).

Real sockets and Hypercorn's real connection handling behind the gate, with a tiny ASGI app
that echoes what it received, so a byte lost or reordered by the gate shows in the answer.
The service's own main port runs through the same worker in every other end-to-end test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pytest
import trio
from hypercorn.config import Config

from actors.web import hypercorn_worker
from actors.web.head_gate import head_complete

BOUND = 5.0


async def echo_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    payload = orjson.dumps({"path": scope["path"], "body": body.decode(),
                            "x": dict(scope["headers"]).get(b"x-long", b"").decode()[:10]})
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})


@asynccontextmanager
async def gated(head_timeout_s: float = 0.5) -> AsyncIterator[tuple[int, trio.Event, trio.Event]]:
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.graceful_timeout = 5.0
    config.accesslog = None
    stop, stopped = trio.Event(), trio.Event()

    async def serve(task_status: trio.TaskStatus[list[str]]) -> None:
        await hypercorn_worker.serve(echo_app, config, shutdown_trigger=stop.wait, head_timeout_s=head_timeout_s,
                                     task_status=task_status)
        stopped.set()

    async with trio.open_nursery() as nursery:
        binds = await nursery.start(serve)
        port = int(binds[0].rsplit(":", 1)[1])
        yield port, stop, stopped
        stop.set()


async def read_all(stream: trio.SocketStream) -> bytes:
    data = b""
    with trio.fail_after(BOUND):
        while chunk := await stream.receive_some(65536):
            data += chunk
    return data


def split(answer: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), orjson.loads(body)


def test_head_complete_scans_only_new_bytes_and_a_split_end() -> None:
    assert not head_complete(b"GET / HTTP/1.1\r\nHost: x\r\n", 0)
    assert head_complete(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 20)
    assert head_complete(b"GET / HTTP/1.1\nHost: x\n\n", 0)
    assert head_complete(b"ab\r\n\r\n", 4)  # the end began in the previous read


async def test_a_head_in_many_pieces_then_a_body_reaches_the_app_intact() -> None:
    async with gated() as (port, _stop, _stopped):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        request = (b"POST /echo HTTP/1.1\r\nHost: t\r\nX-Long: " + b"z" * 3000 + b"\r\nContent-Length: 5\r\n"
                   b"Connection: close\r\n\r\nhello")
        cut = request.index(b"\r\n\r\n") - 3  # the head in ~30 writes; its end and the body in the last one
        for i in range(0, cut, 100):
            await stream.send_all(request[i:min(i + 100, cut)])
        await stream.send_all(request[cut:])
        status, body = split(await read_all(stream))
        assert status == 200
        assert body == {"path": "/echo", "body": "hello", "x": "z" * 10}


async def test_keep_alive_requests_after_the_first_go_straight_to_hypercorn() -> None:
    async with gated() as (port, _stop, _stopped):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        for i in range(3):
            await stream.send_all(f"POST /n{i} HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\n{i}".encode())
            with trio.fail_after(BOUND):
                data = b""
                while b"}" not in data:
                    data += await stream.receive_some(65536)
            assert split(data)[1]["body"] == str(i)


async def test_an_unfinished_head_is_answered_408_and_closed_at_the_timeout() -> None:
    async with gated(head_timeout_s=0.5) as (port, _stop, _stopped):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        started = trio.current_time()
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: aaa")
        status, body = split(await read_all(stream))
        assert status == 408 and body["error"]["code"] == "request_timeout"
        assert body["error"]["message"] and isinstance(body["error"]["details"], dict)
        assert 0.45 <= trio.current_time() - started < BOUND


async def test_a_connection_that_never_speaks_is_closed_without_an_answer() -> None:
    async with gated(head_timeout_s=0.3) as (port, _stop, _stopped):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        assert await read_all(stream) == b""


async def test_a_head_larger_than_h11_takes_is_431() -> None:
    async with gated() as (port, _stop, _stopped):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"b" * (20 * 1024))
        status, body = split(await read_all(stream))
        assert status == 431 and body["error"]["code"] == "headers_too_large"


async def test_connections_still_in_the_gate_do_not_hold_a_graceful_shutdown() -> None:
    async with gated(head_timeout_s=60.0) as (port, stop, stopped):
        streams = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(5)]
        for stream in streams:
            await stream.send_all(b"GET / HTTP/1.1\r\nHost")
        started = trio.current_time()
        stop.set()
        with trio.fail_after(BOUND):
            await stopped.wait()
        assert trio.current_time() - started < 2.0  # well inside the 5 s grace: they were closed at once
        for stream in streams:
            assert await read_all(stream) == b""


@pytest.mark.parametrize("pieces", [1, 7])
async def test_upgrade_requests_pass_the_gate(pieces: int) -> None:
    """A WebSocket handshake is a head like any other: Hypercorn gets it whole (this app refuses it)."""
    async with gated() as (port, _stop, _stopped):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        head = (b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        size = len(head) // pieces + 1
        for i in range(0, len(head), size):
            await stream.send_all(head[i:i + size])
        with trio.fail_after(BOUND):
            answer = await stream.receive_some(65536)
        assert answer.startswith(b"HTTP/1.1 ")  # Hypercorn answered the handshake (not a timeout)
        assert not answer.startswith(b"HTTP/1.1 408")


async def test_connections_arriving_together_are_all_served_through_the_backlog() -> None:
    """The accept loop takes the waiting connections in bulk (``accepting.Backlog``); each still passes the gate."""
    async with gated() as (port, _stop, _stopped):
        streams = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(20)]
        for i, stream in enumerate(streams):
            await stream.send_all(f"POST /c{i} HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nConnection: close\r\n\r\n"
                                  f"{i % 10}".encode())
        for i, stream in enumerate(streams):
            status, body = split(await read_all(stream))
            assert status == 200 and body["path"] == f"/c{i}" and body["body"] == str(i % 10)
