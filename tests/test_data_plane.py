"""The data-plane actor: binds, reports its port, shares a port with SO_REUSEPORT, drains on stop."""

from __future__ import annotations

import errno
import socket
from functools import partial
from typing import Any

import orjson
import pytest
import trio
import trio.testing

from actors import data_plane
from actors.web.http1 import Handler, Limits, Request, Response

HINT = "upgrades are served on the main port"
BOUND = 5.0


def routes_named(name: str, gate: trio.Event | None = None, started: trio.Event | None = None
                 ) -> dict[str, dict[str, Handler]]:
    """``GET /who`` answers which actor served it; ``GET /slow`` waits for ``gate``."""

    async def who(request: Request) -> Response:
        return Response(200, orjson.dumps({"actor": name}))

    async def slow(request: Request) -> Response:
        assert gate is not None and started is not None
        started.set()
        await gate.wait()
        return Response(200, orjson.dumps({"actor": name, "slow": True}))

    return {"/who": {"GET": who}, "/slow": {"GET": slow}}


def actor(name: str, port: int, shutdown: trio.Event, *, reuse_port: bool = False,
          gate: trio.Event | None = None, started: trio.Event | None = None) -> partial[Any]:
    return partial(data_plane.run, host="127.0.0.1", port=port, routes=routes_named(name, gate, started),
                   limits=Limits(), upgrade_hint=HINT, reuse_port=reuse_port, shutdown=shutdown)


async def exchange(port: int, path: str = "/who") -> tuple[int, dict, bytes]:
    """One request with ``Connection: close`` over a raw socket, read to EOF."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        data = b""
        with trio.fail_after(BOUND):
            while chunk := await stream.receive_some(65536):
                data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


async def test_binds_port_zero_reports_the_port_and_serves() -> None:
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        port = await nursery.start(actor("a", 0, shutdown))
        assert isinstance(port, int) and port > 0
        status, headers, body = await exchange(port)
        assert (status, orjson.loads(body)) == (200, {"actor": "a"})
        assert headers["connection"] == "close"
        status, _, body = await exchange(port, "/missing")
        assert status == 404 and orjson.loads(body)["error"]["code"] == "not_found"
        shutdown.set()


async def test_two_actors_share_a_port_with_reuse_port_and_both_serve() -> None:
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        port = await nursery.start(actor("first", 0, shutdown, reuse_port=True))
        assert await nursery.start(actor("second", port, shutdown, reuse_port=True)) == port
        seen: set[str] = set()
        with trio.fail_after(BOUND * 2):
            # The kernel spreads connections by a hash of the 4-tuple: both answer within a few tries.
            while seen != {"first", "second"}:
                status, _, body = await exchange(port)
                assert status == 200
                seen.add(orjson.loads(body)["actor"])
        shutdown.set()


async def test_without_reuse_port_a_second_bind_fails() -> None:
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        port = await nursery.start(actor("first", 0, shutdown))
        with pytest.raises(OSError) as info:
            await nursery.start(actor("second", port, shutdown))
        assert info.value.errno == errno.EADDRINUSE
        status, _, body = await exchange(port)
        assert (status, orjson.loads(body)["actor"]) == (200, "first")
        shutdown.set()


async def test_shutdown_drains_a_read_request_then_refuses_connections() -> None:
    shutdown, gate, started, stopped = trio.Event(), trio.Event(), trio.Event(), trio.Event()
    answers: list[tuple[int, dict, bytes]] = []

    async def run_actor(task_status: trio.TaskStatus[int]) -> None:
        await actor("a", 0, shutdown, gate=gate, started=started)(task_status=task_status)
        stopped.set()

    async def slow_client(port: int) -> None:
        answers.append(await exchange(port, "/slow"))

    async with trio.open_nursery() as nursery:
        port = await nursery.start(run_actor)
        nursery.start_soon(slow_client, port)
        with trio.fail_after(BOUND):
            await started.wait()
        shutdown.set()
        await trio.testing.wait_all_tasks_blocked()  # the actor has seen shutdown and closed its listener
        with pytest.raises(OSError):
            await trio.open_tcp_stream("127.0.0.1", port)
        assert not stopped.is_set(), "the actor waits for the request it has read"
        gate.set()
        with trio.fail_after(BOUND):
            await stopped.wait()
    [(status, headers, body)] = answers
    assert (status, orjson.loads(body)) == (200, {"actor": "a", "slow": True})
    assert headers["connection"] == "close"
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
