"""``/ws/switches`` on the real main port (Hypercorn, the lean route in actors/web/websockets.py).

Bursts published by the feed reach every subscriber, each event once and in order, and a
subscriber whose socket stops taking data is dropped (counted, its connection closed)
while the others go on and the feed keeps only a bounded backlog. The route itself
(query, refusal, close codes) is also driven through plain ASGI calls, which is how it
runs where the raw frame path does not apply.
"""

from __future__ import annotations

import base64
import json
import os
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import attrs
import trio
import trio.testing
from trio_websocket import WebSocketConnection, open_websocket_url

from actors.serving.metrics import Metrics
from actors.switch_feed import SwitchFeed
from actors.web.websockets import stream_switches
from tests.conftest import Harness, running_app

PAD = "x" * 65_536  # big frames fill the socket buffers of a subscriber that does not read, quickly


def _event(symbol: str, pad: str = "") -> dict[str, Any]:
    return {"type": "switch", "id": None, "replay": False, "symbol": symbol, "asset_class": "crypto",
            "old_model": "fast@1", "new_model": "fast@2", "pad": pad}


def _dropped(h: Harness) -> float | None:
    return h.service.metrics.registry.get_sample_value("model_router_switch_subscribers_dropped_total")


async def _hello(ws: WebSocketConnection) -> None:
    hello = json.loads(await ws.get_message())
    assert hello["type"] == "subscribed", hello


async def _subscribed(nursery: trio.Nursery, url: str, count: int) -> list[WebSocketConnection]:
    """``count`` subscribers on ``url``, each past its ``subscribed`` hello."""
    sockets = []
    for _ in range(count):
        ws = await nursery.start(_open, url)
        await _hello(ws)
        sockets.append(ws)
    return sockets


async def _symbols(ws: WebSocketConnection, count: int) -> list[str]:
    with trio.fail_after(10):
        return [json.loads(await ws.get_message())["symbol"] for _ in range(count)]


async def test_every_subscriber_gets_every_event_of_each_burst_in_order(config_path: Path) -> None:
    """20 subscribers (one filtered) and three bursts: the same sequence everywhere, nothing extra."""
    async with running_app(config_path) as h:
        url = h.url.replace("http://", "ws://") + "/ws/switches"
        async with trio.open_nursery() as nursery:
            sockets = await _subscribed(nursery, url, 19)
            eth = await nursery.start(_open, url + "?symbol=ETH")
            await _hello(eth)
            bursts = [[_event(f"S{b}{i}") for i in range(5)] for b in range(3)]
            bursts[1][2] = _event("ETH")
            for burst in bursts:
                h.service.feed.publish(burst)
            expected = [e["symbol"] for burst in bursts for e in burst]
            for ws in sockets:
                assert await _symbols(ws, len(expected)) == expected
            assert await _symbols(eth, 1) == ["ETH"]
            h.service.feed.publish([_event("ETH")])  # nothing else was queued for the filtered one
            assert await _symbols(eth, 1) == ["ETH"]
            nursery.cancel_scope.cancel()
    assert _dropped(h) == 0


async def _open(url: str, *, task_status: trio.TaskStatus[WebSocketConnection] = trio.TASK_STATUS_IGNORED) -> None:
    async with open_websocket_url(url, max_message_size=1 << 20) as ws:
        task_status.started(ws)
        await trio.sleep_forever()


async def _never_reading(port: int) -> trio.socket.SocketType:
    """A raw subscriber with a tiny receive buffer; it reads its handshake answer and hello, then stops."""
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    await sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    await sock.send((f"GET /ws/switches HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                     f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    received = b""
    with trio.fail_after(10):
        while b'"subscribed"' not in received:
            received += await sock.recv(4096)
    assert received.startswith(b"HTTP/1.1 101")
    return sock


async def _read_to_end(sock: trio.socket.SocketType) -> tuple[int, int | None]:
    """Read everything the server sends: (bytes, close code or None when the connection just ends)."""
    buffer = b""
    total = 0
    with trio.fail_after(30):
        while True:
            try:
                chunk = await sock.recv(1 << 16)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                return total, None
            buffer += chunk
            total += len(chunk)
            while len(buffer) >= 2:
                opcode, length, start = buffer[0] & 0x0F, buffer[1] & 0x7F, 2
                if length == 126:
                    length, start = int.from_bytes(buffer[2:4], "big"), 4
                elif length == 127:
                    length, start = int.from_bytes(buffer[2:10], "big"), 10
                if len(buffer) < start + length:
                    break
                payload, buffer = buffer[start:start + length], buffer[start + length:]
                if opcode == 0x8:
                    return total, int.from_bytes(payload[:2], "big")


async def test_a_subscriber_that_stops_reading_is_dropped_and_closed_and_the_others_go_on(config_path: Path) -> None:
    """Its socket fills, its own write blocks (nobody else's): past the queue bound it is dropped and
    counted, the feed stops keeping frames for it, and its connection is closed under the blocked
    write (no close frame can reach a peer that does not read): it finds what its buffers held,
    then the end. (Through plain ASGI sends it would instead get a 1013 close frame once it
    reads again: this test also fails if a Hypercorn upgrade disables the raw frame path.)"""
    async with running_app(config_path) as h:
        feed = h.service.feed
        feed.subscriber_queue = 4
        port = int(h.url.rsplit(":", 1)[1])
        stalled = await _never_reading(port)
        url = h.url.replace("http://", "ws://") + "/ws/switches"
        async with trio.open_nursery() as nursery:
            readers = await _subscribed(nursery, url, 3)
            assert len(feed.subscribers) == 4
            published = 0
            while _dropped(h) == 0:
                assert published < 1000, "never dropped"  # ~4 MiB of socket buffers fill far sooner
                feed.publish([_event(f"S{published}", PAD)])
                published += 1
                for ws in readers:  # the readers keep up: every frame, in order
                    assert await _symbols(ws, 1) == [f"S{published - 1}"]
                assert len(feed.log) <= feed.subscriber_queue + 1
            assert len(feed.subscribers) == 3
            assert h.service.metrics.registry.get_sample_value("model_router_switch_subscribers") == 3
            feed.publish([_event("after")])
            for ws in readers:
                assert await _symbols(ws, 1) == ["after"]
            assert len(feed.log) <= 1
            received, code = await _read_to_end(stalled)
            nursery.cancel_scope.cancel()
        stalled.close()
    assert code is None
    assert received < published * len(PAD)  # what its buffers held, then the end: not the frames after the drop


# --------------------------------------------------------------------------- the route through plain ASGI


@attrs.define
class Peer:
    """The ASGI side of one connection: what the route sent, and a gate that can hold its sends."""

    sent: list[dict[str, Any]] = attrs.field(factory=list)
    inbox: tuple[trio.MemorySendChannel[dict[str, Any]], trio.MemoryReceiveChannel[dict[str, Any]]] = attrs.field(
        factory=lambda: trio.open_memory_channel[dict[str, Any]](8))
    open_gate: trio.Event | None = None  # set: sends go through; unset: a send waits (a peer not reading)
    changed: trio.Event = attrs.field(factory=trio.Event)

    async def receive(self) -> dict[str, Any]:
        return await self.inbox[1].receive()

    async def send(self, message: dict[str, Any]) -> None:
        if self.open_gate is not None:
            await self.open_gate.wait()
        self.sent.append(message)
        self.changed.set()
        self.changed = trio.Event()

    def texts(self) -> list[dict[str, Any]]:
        return [json.loads(m["text"]) for m in self.sent if m["type"] == "websocket.send"]

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        with trio.fail_after(5):
            while not predicate():
                await self.changed.wait()


def _scope(query: bytes) -> dict[str, Any]:
    return {"type": "websocket", "path": "/ws/switches", "query_string": query, "headers": []}


@asynccontextmanager
async def _route(feed: SwitchFeed, query: bytes) -> AsyncIterator[tuple[Peer, trio.Event]]:
    """The route running for one connection (connect sent); the event is set when it returns."""
    peer, done = Peer(), trio.Event()
    service = SimpleNamespace(feed=feed)

    async def run() -> None:
        await stream_switches(service, _scope(query), peer.receive, peer.send)  # type: ignore[arg-type]
        done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(feed.pump)
        await peer.inbox[0].send({"type": "websocket.connect"})
        nursery.start_soon(run)
        yield peer, done
        nursery.cancel_scope.cancel()


def _plain_feed(queue: int = 256) -> SwitchFeed:
    send, _ = trio.open_memory_channel[Any](1)
    return SwitchFeed(send, Metrics(), subscriber_queue=queue)


async def test_through_plain_asgi_filters_apply_and_a_stopping_feed_closes_with_1000() -> None:
    """The query's filters (first value wins, as Quart's args did); one text message per event."""
    feed = _plain_feed()
    async with _route(feed, b"symbol=ETH&symbol=BTC&model=fast") as (peer, done):
        await peer.wait_for(lambda: len(feed.subscribers) == 1 and len(peer.texts()) == 1)
        assert peer.sent[0] == {"type": "websocket.accept"}
        assert peer.texts()[0]["filters"] == {"symbol": "ETH", "asset_class": None, "model": "fast"}
        feed.publish([_event("BTC"), _event("ETH"), {**_event("ETH"), "new_model": "slow@1", "old_model": "slow@0"}])
        await peer.wait_for(lambda: len(peer.texts()) == 2)
        assert peer.texts()[1]["symbol"] == "ETH"
        feed.close_all()
        with trio.fail_after(5):
            await done.wait()
    assert peer.sent[-1] == {"type": "websocket.close", "code": 1000, "reason": ""}
    assert len(peer.texts()) == 2


async def test_through_plain_asgi_a_bad_since_is_refused_with_1008() -> None:
    """Without Redis there is nothing to resume from: an error message, then close 1008; no subscription."""
    feed = _plain_feed()
    async with _route(feed, b"since=1-0") as (peer, done):
        with trio.fail_after(5):
            await done.wait()
    assert peer.texts() == [{"type": "error", "error": {"code": "bad_since", "message": "since needs Redis"}}]
    assert peer.sent[-1] == {"type": "websocket.close", "code": 1008, "reason": "since needs Redis"}
    assert feed.subscribers == set()


async def test_through_plain_asgi_a_dropped_subscriber_is_closed_with_1013_once_its_send_returns() -> None:
    """Without the raw path nothing can cut a blocked send: when it returns, the close says why."""
    feed = _plain_feed(queue=2)
    async with _route(feed, b"") as (peer, done):
        await peer.wait_for(lambda: len(peer.texts()) == 1)
        peer.open_gate = trio.Event()  # the peer stops reading
        for i in range(4):
            feed.publish([_event(f"S{i}")])
            await trio.testing.wait_all_tasks_blocked()
        assert feed.subscribers == set()
        peer.open_gate.set()
        with trio.fail_after(5):
            await done.wait()
    assert [m["symbol"] for m in peer.texts()[1:]] == ["S0"]  # the one in flight; nothing after the drop
    assert peer.sent[-1]["code"] == 1013
