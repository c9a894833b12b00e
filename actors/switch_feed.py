"""The switch feed actor: detects switch events and streams them live.

Anything that can change which model version serves a symbol — a rules reload, a switch
step, a rollback, a breaker opening or closing, a model reload — sends a :class:`Trigger`.
The feed re-evaluates every recently active symbol (bounded), and for each one whose
serving ``name@version`` changed it emits a :class:`SwitchEvent`:

- appended to the Redis stream ``model.switch.log`` (``MAXLEN ~``) through the Redis
  bus, which buffers while Redis is down; the entry id comes back and travels with the
  live message so a client can resume from it (``GET /ws/switches?since=ID``);
- broadcast to every WebSocket subscriber whose filters match. Each subscriber has a
  bounded queue; one that falls behind is dropped (its socket closed with 1013) rather
  than slowing anybody else;
- counted in ``model_switch_total{reason}``.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

import attrs
import redis
import trio

from actors.core.recent_symbols import RecentSymbols, SymbolRoute, changed_routes
from actors.redis_bus import RedisMessage, RedisOutbox
from actors.serving.metrics import Metrics

log = logging.getLogger("model_router.switch_feed")

STREAM = "model.switch.log"
STREAM_MAXLEN = 100_000
ID_WAIT_S = 0.1
STREAM_ID = re.compile(r"^\d{1,20}(-\d{1,20})?$")
REPLAY_LIMIT = 10_000


@attrs.frozen
class Trigger:
    """Something changed; ``started_at`` (perf_counter) is when the change was initiated."""

    reason: str
    operation_id: str | None = None
    started_at: float | None = None


@attrs.frozen
class SwitchEvent:
    """Seed 000's switch-log fields plus why, which operation, and a unique id."""

    timestamp: float
    symbol: str
    old_model: str
    new_model: str
    latency_ms: float
    reason: str
    operation_id: str | None
    asset_class: str | None
    event_id: str

    def fields(self) -> dict[str, Any]:
        return {
            "timestamp": self.timestamp, "symbol": self.symbol, "old_model": self.old_model,
            "new_model": self.new_model, "latency_ms": round(self.latency_ms, 3), "reason": self.reason,
            "operation_id": self.operation_id, "asset_class": self.asset_class, "event_id": self.event_id,
        }

    def message(self, stream_id: str | None, *, replay: bool = False) -> dict[str, Any]:
        return {"type": "switch", "id": stream_id, "replay": replay, **self.fields()}


def event_from_stream(stream_id: str, fields: dict[str, str]) -> dict[str, Any]:
    """A stream entry back into the live message shape."""
    number_fields = {"timestamp", "latency_ms"}
    body: dict[str, Any] = {k: (float(v) if k in number_fields else v) for k, v in fields.items()}
    for key in ("operation_id", "asset_class"):
        body.setdefault(key, None)
    return {"type": "switch", "id": stream_id, "replay": True, **body}


@attrs.frozen
class FeedFilter:
    """Optional exact filters; ``model`` matches the model name on either side of the switch."""

    symbol: str | None = None
    asset_class: str | None = None
    model: str | None = None

    def matches(self, message: dict[str, Any]) -> bool:
        if self.symbol is not None and message.get("symbol") != self.symbol:
            return False
        if self.asset_class is not None and message.get("asset_class") != self.asset_class:
            return False
        if self.model is not None:
            names = {str(message.get(k, "")).split("@", 1)[0] for k in ("old_model", "new_model")}
            if self.model not in names:
                return False
        return True


@attrs.define(eq=False)
class Subscription:
    filter: FeedFilter
    send: trio.MemorySendChannel[dict[str, Any]]
    dropped: bool = False


@attrs.define
class SwitchFeed:
    """The handle: the request path notes symbols, anything may trigger, WebSockets subscribe."""

    triggers: trio.MemorySendChannel[Trigger]
    metrics: Metrics
    recent: RecentSymbols = attrs.field(factory=RecentSymbols)
    subscribers: set[Subscription] = attrs.field(factory=set)
    redis_url: str | None = None
    subscriber_queue: int = 256

    def trigger(self, reason: str, operation_id: str | None = None, started_at: float | None = None) -> None:
        try:
            self.triggers.send_nowait(Trigger(reason, operation_id, started_at))
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            self.metrics.switch_triggers_dropped.inc()

    def rules_applied(self, config: object, started_at: float) -> None:
        """A router listener: new rules may move symbols to other models; re-evaluate and announce."""
        self.trigger("rules_reload", started_at=started_at)

    def subscribe(self, feed_filter: FeedFilter) -> tuple[Subscription, trio.MemoryReceiveChannel[dict[str, Any]]]:
        send, receive = trio.open_memory_channel[dict[str, Any]](self.subscriber_queue)
        subscription = Subscription(feed_filter, send)
        self.subscribers.add(subscription)
        self.metrics.switch_subscribers.set(len(self.subscribers))
        return subscription, receive

    def unsubscribe(self, subscription: Subscription) -> None:
        self.subscribers.discard(subscription)
        subscription.send.close()
        self.metrics.switch_subscribers.set(len(self.subscribers))

    def broadcast(self, message: dict[str, Any]) -> None:
        for subscription in list(self.subscribers):
            if not subscription.filter.matches(message):
                continue
            try:
                subscription.send.send_nowait(message)
            except trio.WouldBlock:
                log.warning("dropping a slow switch-feed subscriber (queue of %d full)", self.subscriber_queue)
                subscription.dropped = True
                self.metrics.switch_subscribers_dropped.inc()
                self.unsubscribe(subscription)
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                self.unsubscribe(subscription)

    def read_since(self, since: str, limit: int = REPLAY_LIMIT) -> list[dict[str, Any]]:
        """Blocking (worker thread): stream entries after ``since``, oldest first."""
        if self.redis_url is None:
            raise RuntimeError("no Redis configured")
        client = redis.Redis.from_url(self.redis_url, socket_connect_timeout=1, socket_timeout=5,
                                      decode_responses=True)
        try:
            entries = client.xrange(STREAM, min=f"({since}", max="+", count=limit)
        finally:
            client.close()
        return [event_from_stream(entry_id, fields) for entry_id, fields in entries]


async def _append(outbox: RedisOutbox, event: SwitchEvent) -> str | None:
    """XADD through the bus; wait briefly for the id while Redis is up, never while it is down."""
    reply_send, reply_recv = trio.open_memory_channel[str](1)
    if not outbox.offer(RedisMessage("xadd", STREAM, event.fields(), maxlen=STREAM_MAXLEN, reply=reply_send)):
        return None
    if not outbox.state.connected:
        return None
    with trio.move_on_after(ID_WAIT_S):
        return await reply_recv.receive()
    return None


async def run(
    feed: SwitchFeed,
    triggers: trio.MemoryReceiveChannel[Trigger],
    outbox: RedisOutbox,
    serve: Callable[[SymbolRoute], str | None],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Turn triggers into switch events until cancelled; close every subscriber on the way out."""
    try:
        async with triggers:
            task_status.started()
            async for trigger in triggers:
                effective = time.perf_counter()
                changes = changed_routes(list(feed.recent), serve)
                for route, now_serving in changes:
                    feed.recent.reassign(route.symbol, now_serving)
                    started = trigger.started_at if trigger.started_at is not None else effective
                    event = SwitchEvent(time.time(), route.symbol, route.served, now_serving,
                                        max(0.0, (effective - started) * 1000), trigger.reason,
                                        trigger.operation_id, route.asset_class, uuid.uuid4().hex)
                    feed.metrics.switch_total.labels(reason=trigger.reason).inc()
                    stream_id = await _append(outbox, event) if outbox.enabled else None
                    feed.broadcast(event.message(stream_id))
                if changes:
                    log.info("%s: %d symbol(s) switched model", trigger.reason, len(changes))
    finally:
        for subscription in list(feed.subscribers):
            feed.unsubscribe(subscription)
