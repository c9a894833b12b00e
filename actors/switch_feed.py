"""The switch feed actor: detects switch events and streams them live.

Anything that can change which model version serves a symbol — a rules reload, a switch
step, a rollback, a breaker opening or closing, a model reload — sends a :class:`Trigger`.
The feed re-evaluates every recently active symbol (bounded), and for each one whose
serving ``name@version`` changed it emits a :class:`SwitchEvent`:

- appended to the Redis stream ``model.switch.log`` (``MAXLEN ~``) through the Redis
  bus, which buffers while Redis is down; the entry id comes back and travels with the
  live message so a client can resume from it (``GET /ws/switches?since=ID``);
- published to the WebSocket subscribers whose filters match: each event is encoded to
  JSON once, into a shared log of frames, and each subscriber's own task writes the
  frames to its socket, paced by turns so that a burst to thousands of subscribers never
  holds the event loop (see :class:`SwitchFeed`). A subscriber whose socket stops taking
  data is dropped once it is a bounded number of events behind (counted; its connection
  closed), rather than slowing anybody else or holding memory;
- counted in ``model_switch_total{reason}``.

One trigger's events form one burst: their XADDs are offered together and they are
published together.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

import attrs
import orjson
import redis
import trio

from actors.core.recent_symbols import RecentSymbols, SymbolRoute, changed_routes
from actors.core.ws_frame import text_frame
from actors.redis_bus import RedisMessage, RedisOutbox
from actors.serving.metrics import Metrics

log = logging.getLogger("model_router.switch_feed")

STREAM = "model.switch.log"
STREAM_MAXLEN = 100_000
ID_WAIT_S = 0.1
STREAM_ID = re.compile(r"^\d{1,20}(-\d{1,20})?$")
REPLAY_LIMIT = 10_000
LOG_LIMIT = 4096  # frames kept for lagging subscribers: a whole burst (RecentSymbols' bound) fits
PASSES_PER_TURN = 2  # scheduler passes per subscriber write: the fan-out leaves every other pass alone


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


@attrs.frozen
class Frame:
    """One live event, encoded once and shared by every subscriber.

    ``text`` is the JSON (for an ASGI ``websocket.send``), ``wire`` the same JSON as a
    complete WebSocket text frame (for writing straight to a socket). ``seq`` numbers
    frames in publishing order; ``message`` is kept for the filters and for the
    de-duplication against a replay (``id``).
    """

    seq: int
    message: dict[str, Any]
    text: str
    wire: bytes


def encode(seq: int, message: dict[str, Any]) -> Frame:
    """The one JSON encoding of a live message (module level so a test can count the calls)."""
    payload = orjson.dumps(message)
    return Frame(seq, message, payload.decode(), text_frame(payload))


@attrs.define(eq=False)
class Subscriber:
    """One WebSocket's place in the feed: a cursor into the shared frame log, not a queue of its own.

    ``sending`` is true while the subscriber's task holds frames it has not finished writing:
    a subscriber that falls behind while ``sending`` is behind because its own socket does
    not take data, not because it is waiting for its turn. ``gone`` is set when it is
    dropped or the feed stops, so its socket can be closed even under a write that cannot
    finish.
    """

    filter: FeedFilter
    cursor: int
    sending: bool = False
    dropped: bool = False
    closed: bool = False
    gone: trio.Event = attrs.field(factory=trio.Event)


@attrs.define
class SwitchFeed:
    """The handle: the request path notes symbols, anything may trigger, WebSockets subscribe.

    Fan-out: :meth:`publish` appends each event once, encoded once (JSON and WebSocket
    frame), to a shared log of frames and returns at once (no per-subscriber work beyond a
    lag check). Each subscriber's own task takes its pending frames with
    :meth:`next_frames` and writes them to its socket in one write; each take is one
    *turn*, and the pump (:meth:`pump`) grants one turn every ``passes_per_turn`` passes
    of the Trio scheduler. So however many subscribers a burst wakes, a scheduler pass
    carries at most one subscriber's write, and request tasks interleave with the fan-out
    instead of waiting behind thousands of writes (every pass adds the cost of a write to
    the latency of each request in flight: bench/fanout.py measured 2 passes per turn
    better than 1 for predictions, at the price of slower delivery under load). The
    subscribers a publish finds idle get their first turn before anyone gets another,
    then turns go round in FIFO order.

    Bounds: a subscriber more than ``subscriber_queue`` frames behind while its own socket
    is not taking data (``sending``) is dropped, as is any subscriber more than
    ``log_limit`` frames behind (lag that is the fan-out's own: a burst bigger than the
    queue still reaches everybody); its task then closes the connection
    (``actors/web/websockets.py``). The log keeps only the frames some subscriber still
    needs (trimmed at each publish and unsubscribe), never more than ``log_limit`` past
    the slowest one. Drops count in ``model_router_switch_subscribers_dropped_total``.
    """

    triggers: trio.MemorySendChannel[Trigger]
    metrics: Metrics
    recent: RecentSymbols = attrs.field(factory=RecentSymbols)
    subscribers: set[Subscriber] = attrs.field(factory=set)
    redis_url: str | None = None
    subscriber_queue: int = 256
    log_limit: int = LOG_LIMIT
    passes_per_turn: int = attrs.field(default=PASSES_PER_TURN, validator=attrs.validators.ge(1))
    log: list[Frame] = attrs.field(factory=list)
    base: int = 0  # seq of log[0]
    # Subscribers with frames to take wait for a turn in ``_turns``; idle ones (nothing new
    # for them) park in ``_idle``. A publish retires ``_idle`` to ``_stale`` (everybody in
    # it now has frames to take) instead of moving or waking its tasks one by one.
    _turns: trio.lowlevel.ParkingLot = attrs.field(factory=trio.lowlevel.ParkingLot)
    _idle: trio.lowlevel.ParkingLot = attrs.field(factory=trio.lowlevel.ParkingLot)
    _stale: deque[trio.lowlevel.ParkingLot] = attrs.field(factory=deque)
    _pump_wakeup: trio.Event = attrs.field(factory=trio.Event)

    @property
    def head(self) -> int:
        """The seq the next published frame gets."""
        return self.base + len(self.log)

    def trigger(self, reason: str, operation_id: str | None = None, started_at: float | None = None) -> None:
        try:
            self.triggers.send_nowait(Trigger(reason, operation_id, started_at))
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            self.metrics.switch_triggers_dropped.inc()

    def rules_applied(self, config: object, started_at: float) -> None:
        """A router listener: new rules may move symbols to other models; re-evaluate and announce."""
        self.trigger("rules_reload", started_at=started_at)

    def subscribe(self, feed_filter: FeedFilter) -> Subscriber:
        """A new subscriber gets the frames published from now on."""
        subscriber = Subscriber(feed_filter, self.head)
        self.subscribers.add(subscriber)
        self.metrics.switch_subscribers.set(len(self.subscribers))
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        if self._remove(subscriber):
            self._trim()

    def _remove(self, subscriber: Subscriber) -> bool:
        subscriber.closed = True
        subscriber.gone.set()
        if subscriber not in self.subscribers:
            return False
        self.subscribers.discard(subscriber)
        self.metrics.switch_subscribers.set(len(self.subscribers))
        return True

    def publish(self, messages: list[dict[str, Any]]) -> None:
        """Append a burst of live messages (each encoded once) and hand it to the pump; never blocks."""
        if not messages:
            return
        for message in messages:
            self.log.append(encode(self.head, message))
        head = self.head
        for subscriber in list(self.subscribers):
            behind = head - subscriber.cursor
            if behind > self.log_limit or (behind > self.subscriber_queue and subscriber.sending):
                log.warning("dropping a slow switch-feed subscriber (%d events behind)", behind)
                subscriber.dropped = True
                self.metrics.switch_subscribers_dropped.inc()
                self._remove(subscriber)
        self._trim()
        if len(self._idle):
            self._stale.append(self._idle)
            self._idle = trio.lowlevel.ParkingLot()
        self._pump_wakeup.set()

    def _trim(self) -> None:
        """Forget the frames every subscriber is past (all of them when nobody listens)."""
        oldest = min((s.cursor for s in self.subscribers), default=self.head)
        if oldest > self.base:
            del self.log[:oldest - self.base]
            self.base = oldest
        self.metrics.switch_feed_backlog.set(len(self.log))

    async def next_frames(self, subscriber: Subscriber, most: int = 1) -> list[Frame] | None:
        """The subscriber's next matching frames (at most ``most``), once it is its turn.

        None once it is closed or dropped. Calling again says the previous frames were
        written. Cancellable while waiting.
        """
        subscriber.sending = False
        while not subscriber.closed:
            if subscriber.cursor < self.head:
                self._pump_wakeup.set()
                await self._turns.park()
            else:
                await self._idle.park()
            # A turn was granted (or the feed closed: then ``closed`` is set).
            frames = []
            while not subscriber.closed and subscriber.cursor < self.head and len(frames) < most:
                frame = self.log[subscriber.cursor - self.base]
                subscriber.cursor += 1
                if subscriber.filter.matches(frame.message):
                    frames.append(frame)
            if frames and not subscriber.closed:
                subscriber.sending = True
                return frames
        return None

    async def pump(self) -> None:
        """Grant one turn, then let ``passes_per_turn`` scheduler passes go by; sleep when nobody waits."""
        while True:
            granted = 0
            while not granted and self._stale:  # first turns of a new burst before anyone's next turn
                granted = len(self._stale[0].unpark(count=1))
                if not len(self._stale[0]):
                    self._stale.popleft()
            if not granted:
                granted = len(self._turns.unpark(count=1))
            if granted:
                for _ in range(self.passes_per_turn):
                    await trio.lowlevel.checkpoint()
            else:
                self._pump_wakeup = trio.Event()
                await self._pump_wakeup.wait()

    def close_all(self) -> None:
        """The feed stops: every subscriber's task gets None from :meth:`next_frames`."""
        for subscriber in list(self.subscribers):
            self._remove(subscriber)
        self._trim()
        for lot in (self._turns, self._idle, *self._stale):
            lot.unpark_all()
        self._stale.clear()

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


async def _append_all(outbox: RedisOutbox, events: list[SwitchEvent]) -> list[str | None]:
    """XADD a burst through the bus; wait briefly (once, for all) for the ids while Redis is up."""
    replies: list[trio.MemoryReceiveChannel[str] | None] = []
    for event in events:
        reply_send, reply_recv = trio.open_memory_channel[str](1)
        offered = outbox.offer(RedisMessage("xadd", STREAM, event.fields(), maxlen=STREAM_MAXLEN, reply=reply_send))
        replies.append(reply_recv if offered else None)
    ids: list[str | None] = [None] * len(events)
    if not outbox.state.connected:
        return ids
    with trio.move_on_after(ID_WAIT_S):
        for index, reply in enumerate(replies):
            if reply is not None:
                ids[index] = await reply.receive()
    return ids


async def run(
    feed: SwitchFeed,
    triggers: trio.MemoryReceiveChannel[Trigger],
    outbox: RedisOutbox,
    serve: Callable[[SymbolRoute], str | None],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Turn triggers into switch events until cancelled; close every subscriber on the way out.

    One trigger's events go out as one burst: XADDs offered together, one publish.
    """
    try:
        async with trio.open_nursery() as nursery, triggers:
            nursery.start_soon(feed.pump)
            task_status.started()
            async for trigger in triggers:
                effective = time.perf_counter()
                changes = changed_routes(list(feed.recent), serve)
                events = []
                for route, now_serving in changes:
                    feed.recent.reassign(route.symbol, now_serving)
                    started = trigger.started_at if trigger.started_at is not None else effective
                    events.append(SwitchEvent(time.time(), route.symbol, route.served, now_serving,
                                              max(0.0, (effective - started) * 1000), trigger.reason,
                                              trigger.operation_id, route.asset_class, uuid.uuid4().hex))
                    feed.metrics.switch_total.labels(reason=trigger.reason).inc()
                if not events:
                    continue
                ids = await _append_all(outbox, events) if outbox.enabled else [None] * len(events)
                feed.publish([event.message(stream_id) for event, stream_id in zip(events, ids, strict=True)])
                log.info("%s: %d symbol(s) switched model", trigger.reason, len(events))
            nursery.cancel_scope.cancel()  # the triggers are closed: stop the pump too
    finally:
        feed.close_all()
