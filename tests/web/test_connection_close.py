"""``Connection: close`` on the main port: the answer, then the server closes the socket.

The real service on a real socket. Before the fix the answer came with ``Connection: close``
and then nothing: the socket stayed open until the client gave up (Hypercorn's close ran
inside the send Quart cancels on disconnect).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from actors.web.connection_close import asks_to_close
from tests.conftest import running_app


async def exchange(url: str, request: bytes) -> tuple[bytes, bool]:
    """Send ``request`` on a fresh connection; (everything received, whether the server closed)."""
    host, port = url.removeprefix("http://").split(":")
    stream = await trio.open_tcp_stream(host, int(port))
    data = b""
    try:
        await stream.send_all(request)
        with trio.move_on_after(5):  # a generous bound: a closing server closes within milliseconds
            while chunk := await stream.receive_some(65536):
                data += chunk
            return data, True
        return data, False
    finally:
        await stream.aclose()


def head_of(data: bytes) -> tuple[str, dict[str, str]]:
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    return head[0], {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in head[1:])}


@pytest.mark.parametrize("request_bytes", [
    b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    b"GET /models HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",  # a Quart route
    b"GET /no/such/route HTTP/1.1\r\nHost: t\r\nconnection: Keep-Alive, CLOSE\r\n\r\n",
    b"POST /predict HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Type: application/json\r\n"
    b"Content-Length: 2\r\n\r\n{}",
    b"GET /health HTTP/1.0\r\nHost: t\r\n\r\n",  # HTTP/1.0 without keep-alive
    b"GET /models HTTP/1.0\r\nHost: t\r\nConnection: keep-alive\r\n\r\n",  # h11 closes 1.0 anyway
], ids=["health", "quart-route", "404-token-list", "predict-with-body", "http10", "http10-keep-alive"])
async def test_the_server_closes_after_answering_a_request_that_asked_it_to(
        config_path: Path, request_bytes: bytes) -> None:
    async with running_app(config_path) as h:
        data, closed = await exchange(h.url, request_bytes)
        status, headers = head_of(data)
        assert status.split(" ")[1] in ("200", "400", "404"), status
        assert headers.get("connection", "").lower() == "close", headers
        body = data.split(b"\r\n\r\n", 1)[1]
        assert len(body) == int(headers["content-length"])  # the whole answer came first
        assert closed, "the answer came, then the socket stayed open"


async def test_a_keep_alive_connection_stays_open_for_the_next_request(config_path: Path) -> None:
    async with running_app(config_path) as h:
        host, port = h.url.removeprefix("http://").split(":")
        stream = await trio.open_tcp_stream(host, int(port))
        try:
            answers = []
            for _ in range(2):
                await stream.send_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
                data = b""
                with trio.fail_after(5):
                    while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < int(
                            head_of(data)[1]["content-length"]):
                        chunk = await stream.receive_some(65536)
                        assert chunk, "a keep-alive connection was closed"
                        data += chunk
                answers.append(head_of(data))
            assert [status.split(" ")[1] for status, _ in answers] == ["200", "200"]
            assert all("connection" not in headers for _, headers in answers)
        finally:
            await stream.aclose()


def test_asks_to_close_reads_the_version_and_the_connection_tokens() -> None:
    def scope(version: str, *headers: tuple[bytes, bytes]) -> dict:
        return {"type": "http", "http_version": version, "headers": list(headers)}

    assert asks_to_close(scope("1.1", (b"connection", b"close")))
    assert asks_to_close(scope("1.1", (b"Connection", b"keep-alive, Close")))
    assert asks_to_close(scope("1.0"))
    assert not asks_to_close(scope("1.1"))
    assert not asks_to_close(scope("1.1", (b"connection", b"keep-alive")))
    assert not asks_to_close(scope("1.1", (b"connection", b"closed")))
    assert not asks_to_close(scope("2", (b"connection", b"close")))
