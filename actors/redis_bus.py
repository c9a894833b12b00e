"""The Redis bus actor: publishes reload notices and appends switch events.

redis-py's asyncio client does not run under Trio, so every Redis call runs in a worker
thread with short socket timeouts. Producers never wait for Redis: they drop a message
into a bounded memory channel (``RedisOutbox.offer``); the actor buffers messages in a
bounded queue while Redis is unreachable, reconnects with exponential backoff, and
writes the backlog in order once Redis answers again. Overflow drops the oldest message,
counts it in ``model_router_redis_dropped_total`` and logs it (the first drop of an
outage, then every ``DROP_LOG_EVERY``-th), so a loss is never silent.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections import deque
from typing import Any

import attrs
import redis
import trio

from actors.serving.metrics import Metrics

log = logging.getLogger("model_router.redis")

INITIAL_BACKOFF_S = 0.1
MAX_BACKOFF_S = 5.0
WRITE_BATCH = 256
DROP_LOG_EVERY = 1000


@attrs.frozen(eq=False)
class RedisMessage:
    """A PUBLISH on ``target`` (kind "publish") or an XADD to stream ``target`` (kind "xadd").

    ``reply``, for an XADD, receives the entry id Redis assigned once it is written (which
    may be long after the offer, if Redis was down meanwhile).
    """

    kind: str
    target: str
    payload: dict[str, Any]
    maxlen: int | None = None
    reply: trio.MemorySendChannel[str] | None = None


@attrs.define
class BusState:
    """Whether the last Redis write succeeded; producers use it to skip waiting for replies."""

    connected: bool = False


@attrs.frozen
class RedisOutbox:
    """The producers' end: never blocks, never raises; a full channel drops and counts."""

    send_channel: trio.MemorySendChannel[RedisMessage] | None
    metrics: Metrics
    state: BusState = attrs.field(factory=BusState)

    @property
    def enabled(self) -> bool:
        return self.send_channel is not None

    def offer(self, message: RedisMessage) -> bool:
        if self.send_channel is None:
            return False
        try:
            self.send_channel.send_nowait(message)
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            self.metrics.redis_dropped.labels(kind=message.kind).inc()
            return False
        return True


def disabled_outbox(metrics: Metrics) -> RedisOutbox:
    return RedisOutbox(None, metrics)


def stream_fields(payload: dict[str, Any]) -> dict[str, str | int | float]:
    """Stream entries hold flat strings/numbers: booleans become "true"/"false", others JSON."""
    fields: dict[str, str | int | float] = {}
    for key, value in payload.items():
        if value is None:
            continue
        if isinstance(value, bool):
            fields[key] = "true" if value else "false"
        elif isinstance(value, (str, int, float)):
            fields[key] = value
        else:
            fields[key] = json.dumps(value, separators=(",", ":"))
    return fields


def _write_batch(client: redis.Redis, batch: list[RedisMessage]) -> list[Any]:
    """Blocking: one pipeline round trip for the whole batch (runs in a worker thread)."""
    pipe = client.pipeline(transaction=False)
    for message in batch:
        if message.kind == "publish":
            pipe.publish(message.target, json.dumps(message.payload, separators=(",", ":")))
        else:
            pipe.xadd(message.target, stream_fields(message.payload), maxlen=message.maxlen, approximate=True)
    return list(pipe.execute())


def _deliver_ids(batch: list[RedisMessage], results: list[Any] | None) -> None:
    """Tell XADD producers their entry ids; a producer that stopped waiting is fine."""
    for message, result in zip(batch, results or (), strict=False):
        if message.reply is None:
            continue
        entry_id = result.decode() if isinstance(result, bytes) else str(result)
        with contextlib.suppress(trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            message.reply.send_nowait(entry_id)  # the producer may have stopped waiting


@attrs.define
class _Backlog:
    """Messages accepted but not yet written, bounded, oldest dropped first.

    Each message carries a sequence number so the writer removes exactly what it wrote,
    even when overflow dropped part of its batch meanwhile. A dropped message that was
    in flight is counted only if that write then fails: if it succeeds, nothing was lost.
    """

    limit: int
    metrics: Metrics
    items: deque[tuple[int, RedisMessage]] = attrs.field(factory=deque)
    ready: trio.Event = attrs.field(factory=trio.Event)
    next_seq: int = 0
    in_flight_upto: int | None = None
    dropped_in_flight: list[str] = attrs.field(factory=list)
    overflowed: int = 0

    def push(self, message: RedisMessage) -> None:
        if len(self.items) >= self.limit:
            seq, dropped = self.items.popleft()
            if self.overflowed % DROP_LOG_EVERY == 0:
                log.error("redis buffer full (%d messages): dropping the oldest (%s to %s); %d dropped so far",
                          self.limit, dropped.kind, dropped.target, self.overflowed + 1)
            self.overflowed += 1
            if self.in_flight_upto is not None and seq <= self.in_flight_upto:
                self.dropped_in_flight.append(dropped.kind)
            else:
                self.metrics.redis_dropped.labels(kind=dropped.kind).inc()
        self.items.append((self.next_seq, message))
        self.next_seq += 1
        self.ready.set()

    def take(self, limit: int) -> list[RedisMessage]:
        batch = [self.items[i] for i in range(min(limit, len(self.items)))]
        self.in_flight_upto = batch[-1][0]
        return [message for _, message in batch]

    def written(self) -> None:
        """The batch reached Redis: remove what is left of it; in-flight drops were not losses."""
        upto = self.in_flight_upto
        while self.items and upto is not None and self.items[0][0] <= upto:
            self.items.popleft()
        self.in_flight_upto = None
        self.dropped_in_flight.clear()

    def failed(self, *, discard: bool) -> None:
        """The batch did not reach Redis: keep it for a retry, or discard (and count) it."""
        upto = self.in_flight_upto
        while discard and self.items and upto is not None and self.items[0][0] <= upto:
            self.dropped_in_flight.append(self.items.popleft()[1].kind)
        for kind in self.dropped_in_flight:
            self.metrics.redis_dropped.labels(kind=kind).inc()
        self.in_flight_upto = None
        self.dropped_in_flight.clear()


async def _collect(inbox: trio.MemoryReceiveChannel[RedisMessage], backlog: _Backlog) -> None:
    async with inbox:
        async for message in inbox:
            backlog.push(message)


async def _write_forever(client: redis.Redis, backlog: _Backlog, metrics: Metrics, url: str,
                         state: BusState) -> None:
    backoff = INITIAL_BACKOFF_S
    connected: bool | None = None
    while True:
        if not backlog.items:
            backlog.ready = trio.Event()
            await backlog.ready.wait()
        batch = backlog.take(WRITE_BATCH)
        try:
            results = await trio.to_thread.run_sync(_write_batch, client, batch, abandon_on_cancel=True)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            backlog.failed(discard=False)
            state.connected = False
            if connected is not False:
                log.warning("redis unreachable (%s); buffering %d message(s)", exc, len(backlog.items))
            connected = False
            metrics.redis_connected.set(0)
            await trio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)
            continue
        except redis.RedisError as exc:
            # Redis answered but refused the batch (bad data, wrong type, OOM): retrying the
            # same batch would block everything behind it, so it is dropped and counted.
            log.error("redis rejected %d message(s), dropping them: %s", len(batch), exc)
            backlog.failed(discard=True)
            continue
        backlog.written()
        backlog.overflowed = 0  # a new outage logs its first drop again
        _deliver_ids(batch, results)
        state.connected = True
        if connected is not True:
            log.info("redis connected at %s", _redact(url))
        connected = True
        metrics.redis_connected.set(1)
        backoff = INITIAL_BACKOFF_S


def _redact(url: str) -> str:
    """Never log a password embedded in the URL."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.rpartition('@')[2]}"


def make_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(
        url, socket_connect_timeout=0.5, socket_timeout=1.0, health_check_interval=10
    )


async def run(
    url: str,
    inbox: trio.MemoryReceiveChannel[RedisMessage],
    metrics: Metrics,
    *,
    state: BusState | None = None,
    buffer_limit: int = 10_000,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Drain ``inbox`` into Redis until cancelled; flush what is left for up to 1 s on the way out."""
    client = make_client(url)
    backlog = _Backlog(buffer_limit, metrics)
    metrics.redis_connected.set(0)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_collect, inbox, backlog)
            nursery.start_soon(_write_forever, client, backlog, metrics, url, state or BusState())
            task_status.started()
    finally:
        with trio.move_on_after(1.0) as scope:
            scope.shield = True
            if backlog.items:
                try:
                    await trio.to_thread.run_sync(
                        _write_batch, client, [m for _, m in backlog.items], abandon_on_cancel=True
                    )
                except redis.RedisError as exc:
                    log.warning("redis: %d message(s) not written at shutdown: %s", len(backlog.items), exc)
        client.close()
