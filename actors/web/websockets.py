"""The two WebSocket protocols: the live switch feed and streamed predictions."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import attrs
import orjson
import trio
from quart import websocket

from actors.core.access import ApiKey
from actors.core.errors import RouterError
from actors.switch_feed import STREAM_ID, FeedFilter
from actors.web.access import scope_key
from actors.web.bodies import parse_json
from actors.web.errors import item_body
from actors.web.service import Service

WS_QUEUE = 32
WS_WORKERS = 4


def stream_id_key(stream_id: str) -> tuple[int, int]:
    millis, _, seq = stream_id.partition("-")
    return int(millis), int(seq or 0)


async def stream_switches(service: Service) -> None:
    """``/ws/switches``: live switch events as JSON, filtered, resumable from a stream id with Redis."""
    args = websocket.args
    since = args.get("since")
    feed_filter = FeedFilter(args.get("symbol"), args.get("asset_class"), args.get("model"))
    if since is not None and (not STREAM_ID.match(since) or service.feed.redis_url is None):
        reason = ("since needs Redis" if service.feed.redis_url is None
                  else "since must be a stream id like 1700000000000-0")
        await websocket.accept()
        await websocket.send(json.dumps({"type": "error", "error": {"code": "bad_since", "message": reason}}))
        await websocket.close(1008, reason)
        return
    subscription, receive = service.feed.subscribe(feed_filter)
    try:
        await websocket.accept()
        await websocket.send(json.dumps({"type": "subscribed", "filters": attrs.asdict(feed_filter),
                                         "since": since, "redis": service.feed.redis_url is not None}))
        last_replayed = None
        if since is not None:
            try:
                replay = await trio.to_thread.run_sync(service.feed.read_since, since)
            except Exception as exc:  # Redis down: say so, then continue live
                await websocket.send(json.dumps({"type": "error", "error": {
                    "code": "replay_unavailable", "message": f"could not read the switch log: {exc}"}}))
                replay = []
            for message in replay:
                if feed_filter.matches(message):
                    await websocket.send(json.dumps(message))
                last_replayed = message["id"]
        async with receive:
            async for message in receive:
                if last_replayed is not None and message["id"] is not None and \
                        stream_id_key(message["id"]) <= stream_id_key(last_replayed):
                    continue
                await websocket.send(json.dumps(message))
        if subscription.dropped:
            await websocket.close(1013, "too slow: reconnect with ?since=<last id>")
    finally:
        service.feed.unsubscribe(subscription)


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
