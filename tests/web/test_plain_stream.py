"""The data plane's plain TCP stream: the Trio stream contract over a real socket."""

from __future__ import annotations

import socket

import pytest
import trio
import trio.testing

from actors.web.plain_stream import PlainSocketStream


async def tcp_pair() -> tuple[PlainSocketStream, trio.SocketStream]:
    """(server side adopted from an accepted trio.SocketStream, client side)."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    client = await trio.open_tcp_stream("127.0.0.1", port)
    accepted = await listeners[0].accept()
    await listeners[0].aclose()
    return PlainSocketStream.adopt(accepted), client


async def test_round_trip_and_end_of_stream() -> None:
    server, client = await tcp_pair()
    async with server, client:
        await client.send_all(b"ping")
        assert await server.receive_some(100) == b"ping"
        await server.send_all(b"pong")
        assert await client.receive_some(100) == b"pong"
        await client.send_eof()
        assert await server.receive_some(100) == b""


async def test_a_send_larger_than_the_socket_buffer_waits_and_completes() -> None:
    """send_all writes what fits, waits for writability, and delivers every byte in order."""
    server, client = await tcp_pair()
    payload = bytes(range(256)) * 40_000  # 10 MB: far beyond any socket buffer
    received = bytearray()

    async def read_all() -> None:
        while len(received) < len(payload):
            received.extend(await client.receive_some(1 << 20))

    async with server, client, trio.open_nursery() as nursery:
        nursery.start_soon(read_all)
        await server.send_all(payload)
    assert bytes(received) == payload


async def test_receive_waits_and_can_be_cancelled() -> None:
    """receive_some parks until data arrives (a checkpoint); a cancel scope ends the wait."""
    server, client = await tcp_pair()
    async with server, client:
        with trio.move_on_after(0.05) as scope:
            await server.receive_some(10)
        assert scope.cancelled_caught
        await client.send_all(b"late")
        assert await server.receive_some(10) == b"late"


async def test_peer_reset_is_a_broken_stream_and_closed_is_closed() -> None:
    server, client = await tcp_pair()
    raw = client.socket
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST on close
    await client.aclose()
    with pytest.raises(trio.BrokenResourceError):  # the reset makes the socket readable; recv fails
        await server.receive_some(10)
    with pytest.raises(trio.BrokenResourceError):
        await server.send_all(b"x")
    await server.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await server.receive_some(10)
    with pytest.raises(trio.ClosedResourceError):
        await server.send_all(b"x")
    await server.aclose()  # idempotent


async def test_half_close_lets_the_peer_see_eof_and_still_answer() -> None:
    server, client = await tcp_pair()
    async with server, client:
        await server.send_all(b"bye")
        await server.send_eof()
        assert await client.receive_some(10) == b"bye"
        assert await client.receive_some(10) == b""
        await client.send_all(b"ack")
        assert await server.receive_some(10) == b"ack"


async def test_receive_nowait_reads_only_what_is_buffered() -> None:
    """None when nothing is buffered (never waits), the bytes when they are, b"" at end of stream."""
    server, client = await tcp_pair()
    async with server:
        assert server.receive_nowait(10) is None
        await client.send_all(b"rest")
        assert await server.receive_some(2) == b"re"  # waits until readable
        assert server.receive_nowait(10) == b"st"
        await client.aclose()
        await trio.lowlevel.wait_readable(server.socket)
        assert server.receive_nowait(10) == b""
