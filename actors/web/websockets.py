"""The two WebSocket protocols: the live switch feed (a lean ASGI route) and streamed predictions (Quart)."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

import attrs
import orjson
import trio
from quart import websocket

from actors.core.access import ApiKey
from actors.core.errors import RouterError
from actors.switch_feed import STREAM_ID, FeedFilter, Subscriber, SwitchFeed
from actors.web.access import scope_key
from actors.web.bodies import parse_json
from actors.web.errors import item_body
from actors.web.service import Service
from actors.web.ws_transport import RawTransport, raw_transport

WS_QUEUE = 32
WS_WORKERS = 4
FEED_PATH = "/ws/switches"
FRAMES_PER_WRITE = 64  # pending switch-feed frames one socket write may carry

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def stream_id_key(stream_id: str) -> tuple[int, int]:
    millis, _, seq = stream_id.partition("-")
    return int(millis), int(seq or 0)


async def stream_switches(service: Service, scope: Scope, receive: Receive, send: Send) -> None:
    """``/ws/switches``: live switch events as JSON, filtered, resumable from a stream id with Redis.

    A lean ASGI route (``HotPath`` sends it here; the access layer has already admitted the
    handshake), not a Quart view: one switch sends the same burst to every subscriber, and
    per message Quart adds a context proxy lookup, a signal and a wrapper around the send.
    Each live frame was encoded once by the feed (JSON and WebSocket frame) and is written
    to this socket as is, straight to the socket where Hypercorn allows
    (``actors/web/ws_transport.py``). This task is the subscriber's own: a socket that
    stops taking data blocks nobody else, and once the feed drops it, it is closed.
    """
    if (await receive())["type"] != "websocket.connect":
        return
    args = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)

    def arg(name: str) -> str | None:
        values = args.get(name)
        return values[0] if values else None

    feed = service.feed
    since = arg("since")
    feed_filter = FeedFilter(arg("symbol"), arg("asset_class"), arg("model"))
    await send({"type": "websocket.accept"})
    if since is not None and (not STREAM_ID.match(since) or feed.redis_url is None):
        reason = "since needs Redis" if feed.redis_url is None else "since must be a stream id like 1700000000000-0"
        await send(_text({"type": "error", "error": {"code": "bad_since", "message": reason}}))
        await send({"type": "websocket.close", "code": 1008, "reason": reason})
        return
    subscriber = feed.subscribe(feed_filter)
    transport = raw_transport(send)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_until_disconnect, receive, nursery.cancel_scope)
            if transport is not None:
                nursery.start_soon(_abort_if_dropped_mid_write, subscriber, transport)
            await _send_feed(feed, subscriber, since, send, transport)
            if subscriber.dropped:
                await send({"type": "websocket.close", "code": 1013,
                            "reason": "too slow: reconnect with ?since=<last id>"})
            else:  # the feed stopped (shutdown), or the peer is gone
                await send({"type": "websocket.close", "code": 1000, "reason": ""})
            nursery.cancel_scope.cancel()
    finally:
        feed.unsubscribe(subscriber)


async def _send_feed(feed: SwitchFeed, subscriber: Subscriber, since: str | None, send: Send,
                     transport: RawTransport | None) -> None:
    """The hello, the replay after ``since`` (Redis), then live frames until the feed lets go of us.

    With the raw transport a turn writes all the pending frames (up to FRAMES_PER_WRITE)
    in one socket write; through ASGI sends, one frame per turn (each send is a full trip
    through Hypercorn, and a turn must stay small).
    """
    feed_filter = subscriber.filter
    await send(_text({"type": "subscribed", "filters": attrs.asdict(feed_filter), "since": since,
                      "redis": feed.redis_url is not None}))
    last_replayed = None
    if since is not None:
        try:
            replay = await trio.to_thread.run_sync(feed.read_since, since)
        except Exception as exc:  # Redis down: say so, then continue live
            await send(_text({"type": "error", "error": {
                "code": "replay_unavailable", "message": f"could not read the switch log: {exc}"}}))
            replay = []
        for message in replay:
            if feed_filter.matches(message):
                await send(_text(message))
            last_replayed = message["id"]
    most = FRAMES_PER_WRITE if transport is not None else 1
    while (frames := await feed.next_frames(subscriber, most)) is not None:
        if last_replayed is not None:
            frames = [f for f in frames if not _replayed(f.message["id"], last_replayed)]
        if transport is not None:
            if frames and not await transport.write(b"".join(f.wire for f in frames)):
                return  # the peer is gone
        else:
            for frame in frames:
                await send({"type": "websocket.send", "text": frame.text})


def _replayed(stream_id: str | None, last_replayed: str) -> bool:
    return stream_id is not None and stream_id_key(stream_id) <= stream_id_key(last_replayed)


async def _abort_if_dropped_mid_write(subscriber: Subscriber, transport: RawTransport) -> None:
    """Dropped while its write was blocked: the peer stopped reading, and no close frame can reach it.

    Closing the connection ends the write and frees the socket and its buffers, rather
    than holding them until the peer reads again or goes away.
    """
    await subscriber.gone.wait()
    if subscriber.dropped and subscriber.sending:
        await transport.abort()


def _text(message: dict[str, Any]) -> dict[str, Any]:
    return {"type": "websocket.send", "text": orjson.dumps(message).decode()}


async def _until_disconnect(receive: Receive, cancel_scope: trio.CancelScope) -> None:
    """The feed takes no messages from its subscribers: read (and drop) them until the client leaves."""
    message = await receive()
    while message["type"] != "websocket.disconnect":
        message = await receive()
    cancel_scope.cancel()


async def stream_predictions(service: Service) -> None:
    """``/ws/predict``: each message is one request, a list of requests, or ``{"requests": [...]}``.

    One answer message per request message: ``{"type": "prediction", ...}`` (or
    ``{"type": "error", "correlation_id", "error"}``) for a single request, and
    ``{"type": "predictions", "predictions": [...]}`` for a list, each item carrying its
    ``correlation_id``. Up to WS_WORKERS messages are answered concurrently, so answers
    may come out of order (a model that must load first does not hold the others up).
    At most WS_QUEUE messages wait; past that the socket is not read, and TCP pushes back
    on the client. A bad message gets an error answer; the connection stays open.
    """
    key = scope_key(websocket.scope)
    await websocket.accept()
    inbound_send, inbound_recv = trio.open_memory_channel[bytes | str](WS_QUEUE)
    outbound_send, outbound_recv = trio.open_memory_channel[bytes](WS_QUEUE)

    async def read() -> None:
        async with inbound_send:
            while True:
                await inbound_send.send(await websocket.receive())

    async def answer_messages(messages: trio.MemoryReceiveChannel[bytes | str],
                              out: trio.MemorySendChannel[bytes]) -> None:
        async with messages, out:
            async for raw in messages:
                await out.send(orjson.dumps(await answer_message(service, raw, key)))

    async def write() -> None:
        async with outbound_recv:
            async for payload in outbound_recv:
                await websocket.send(payload.decode())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(write)
        async with inbound_recv, outbound_send:
            for _ in range(WS_WORKERS):
                nursery.start_soon(answer_messages, inbound_recv.clone(), outbound_send.clone())
        await read()


async def answer_message(service: Service, raw: bytes | str, key: ApiKey) -> dict[str, Any]:
    """One streamed request message's answer (an error answer keeps the connection open).

    Each message is a request: the key's rate limit, budget and model allow-list apply to it.
    """
    gate = service.gate
    try:
        body = parse_json(raw.encode() if isinstance(raw, str) else raw)
        if isinstance(body, list):
            body = {"requests": body}
        limited = gate.rate_check(key)
        if limited is not None:
            raise limited
        if isinstance(body, dict) and "requests" in body:
            return {"type": "predictions", **await gate.predict(service.predictor, key, body, batch=True)}
        return {"type": "prediction", **await gate.predict(service.predictor, key, body, batch=False)}
    except RouterError as error:
        correlation_id = None
        with contextlib.suppress(orjson.JSONDecodeError):
            candidate = orjson.loads(raw)
            correlation_id = candidate.get("correlation_id") if isinstance(candidate, dict) else None
        return {"type": "error", "correlation_id": correlation_id, **item_body(error)}
