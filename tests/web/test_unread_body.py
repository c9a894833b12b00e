"""A request answered before its body was read: the connection answers again or closes cleanly.

The real app on a real socket. The admin guard refuses a keyless POST without reading its
200 KB body; before the fix the keep-alive connection then never answered again and its
socket stayed in CLOSE-WAIT, one per attempt.
"""

from __future__ import annotations

import os
from pathlib import Path

import trio

from actors.web.unread_body import expects_body
from tests.conftest import running_app

BODY = b"x" * 200_000
FIRST_PART = 50_000


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def read_until(stream: trio.SocketStream, marker: bytes) -> tuple[bytes, bool]:
    """Bytes received until ``marker`` appears or the peer closes; True when it closed."""
    data = b""
    while marker not in data:
        try:
            chunk = await stream.receive_some(65536)
        except trio.BrokenResourceError:  # reset: the server closed with our bytes unread
            return data, True
        if not chunk:
            return data, True
        data += chunk
    return data, False


async def unread_then_second_request(host: str, port: int, path: str) -> tuple[bytes, bytes, bool]:
    """Send half a big body, read the refusal, send the rest and a second request on the same socket."""
    stream = await trio.open_tcp_stream(host, port)
    try:
        head = (f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(BODY)}\r\n\r\n").encode()
        await stream.send_all(head + BODY[:FIRST_PART])
        with trio.fail_after(5):
            first, _ = await read_until(stream, b"}}")
        try:
            await stream.send_all(BODY[FIRST_PART:] + b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
        except trio.BrokenResourceError:
            return first, b"", True
        with trio.fail_after(2):  # an answer or a clean close, never silence
            second, closed = await read_until(stream, b"\r\n\r\n")
        return first, second, closed
    finally:
        await stream.aclose()


def test_expects_body_reads_the_framing_headers() -> None:
    assert expects_body({"headers": [(b"content-length", b"12")]})
    assert expects_body({"headers": [(b"transfer-encoding", b"chunked")]})
    assert not expects_body({"headers": [(b"content-length", b"0")]})
    assert not expects_body({"headers": [(b"host", b"x")]})


async def test_unread_body_then_second_request_is_answered_or_closed(config_path: Path) -> None:
    async with running_app(config_path) as harness:
        host, port = harness.url.removeprefix("http://").split(":")
        for path in ("/models", "/config/reload"):
            first, second, closed = await unread_then_second_request(host, int(port), path)
            assert first.startswith(b"HTTP/1.1 401"), first[:80]
            assert b"connection: close" in first.lower()
            assert closed or second.startswith(b"HTTP/1.1 200"), second[:80]


async def test_refused_bodies_leak_no_sockets(config_path: Path) -> None:
    async with running_app(config_path) as harness:
        host, port = harness.url.removeprefix("http://").split(":")
        await unread_then_second_request(host, int(port), "/models")  # warm up lazily opened files
        before = open_fds()
        for attempt in range(50):
            path = "/models" if attempt % 2 else "/config/reload"
            first, _second, _closed = await unread_then_second_request(host, int(port), path)
            assert first.startswith(b"HTTP/1.1 401")
        # A request that reads its body keeps the connection (and lets the server finish closing).
        response = await harness.client.get("/health")
        assert response.status_code == 200 and "close" not in response.headers.get("connection", "")
        assert open_fds() <= before + 2  # before the fix: one socket left in CLOSE-WAIT per attempt
