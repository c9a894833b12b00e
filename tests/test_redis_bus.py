"""The Redis bus actor against a real private redis-server (actors/redis_bus.py).

Waiting is event-driven: pub/sub reads and ``XREAD BLOCK`` run in worker threads with
timeouts, and write attempts are observed through a spy around ``_write_batch``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import attrs
import pytest
import redis
import trio
import trio.testing

from actors import redis_bus
from actors.redis_bus import RedisMessage, RedisOutbox, _redact, disabled_outbox
from actors.serving.metrics import Metrics
from tests.conftest import RedisServer, Subscriber

STREAM = "model_router.switch_events"
REAL_WRITE_BATCH = redis_bus._write_batch


@attrs.define
class Bus:
    outbox: RedisOutbox
    metrics: Metrics


@asynccontextmanager
async def running_bus(url: str, *, buffer_limit: int = 10_000) -> AsyncIterator[Bus]:
    """Start ``redis_bus.run`` with ``nursery.start``; cancel it on exit."""
    metrics = Metrics()
    send, recv = trio.open_memory_channel[RedisMessage](64)
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(redis_bus.run, url, recv, metrics, buffer_limit=buffer_limit))
        yield Bus(RedisOutbox(send, metrics), metrics)
        nursery.cancel_scope.cancel()


@attrs.define
class WriteSpy:
    """Wraps ``_write_batch``: records batches, signals failures, can hold the first write at a gate."""

    batches: list[list[RedisMessage]] = attrs.field(factory=list)
    entered: threading.Event = attrs.field(factory=threading.Event)
    failed: threading.Event = attrs.field(factory=threading.Event)
    gate: threading.Event = attrs.field(factory=threading.Event)

    def __call__(self, client: redis.Redis, batch: list[RedisMessage]) -> list[Any]:
        self.batches.append(list(batch))
        self.entered.set()
        assert self.gate.wait(timeout=10), "test never opened the write gate"
        try:
            return REAL_WRITE_BATCH(client, batch)
        except redis.RedisError:
            self.failed.set()
            raise


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> WriteSpy:
    writes = WriteSpy()
    writes.gate.set()
    monkeypatch.setattr(redis_bus, "_write_batch", writes)
    return writes


async def wait_event(event: threading.Event, what: str, timeout: float = 5.0) -> None:
    assert await trio.to_thread.run_sync(event.wait, timeout), f"timed out waiting for {what}"


def xadd(seq: int, maxlen: int | None = 1000, **extra: Any) -> RedisMessage:
    return RedisMessage("xadd", STREAM, {"seq": seq, **extra}, maxlen=maxlen)


def _read_stream_until(server: RedisServer, stream: str, last_seq: int, timeout: float) -> list[dict[str, str]]:
    """Blocking: XREAD BLOCK from the start until an entry with ``seq == last_seq`` is seen."""
    client = server.client()
    seen: list[dict[str, str]] = []
    cursor = "0-0"
    deadline = time.monotonic() + timeout
    try:
        while not any(e.get("seq") == str(last_seq) for e in seen):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"seq {last_seq} not in stream {stream} after {timeout}s; got {seen}")
            reply = client.xread({stream: cursor}, block=max(1, int(min(remaining, 1.0) * 1000)), count=10_000)
            for _name, entries in reply or []:
                for entry_id, fields in entries:
                    seen.append(fields)
                    cursor = entry_id
        return seen
    finally:
        client.close()


async def read_stream_until(server: RedisServer, last_seq: int, timeout: float = 5.0) -> list[dict[str, str]]:
    return await trio.to_thread.run_sync(_read_stream_until, server, STREAM, last_seq, timeout)


def dropped(metrics: Metrics, kind: str) -> float:
    return metrics.registry.get_sample_value("model_router_redis_dropped_total", {"kind": kind}) or 0.0


def connected(metrics: Metrics) -> float | None:
    return metrics.registry.get_sample_value("model_router_redis_connected")


# ------------------------------------------------------------------ publish / xadd ----


async def test_published_messages_arrive_as_json(redis_server: RedisServer) -> None:
    """PUBLISH messages reach a real subscriber as compact JSON, in order."""
    subscriber = Subscriber(redis_server, "param.reload")
    try:
        async with running_bus(redis_server.url) as bus:
            first = {"component": "router", "success": True, "latency_ms": 1.5, "config_hash": None}
            assert bus.outbox.enabled
            assert bus.outbox.offer(RedisMessage("publish", "param.reload", first))
            assert bus.outbox.offer(RedisMessage("publish", "param.reload", {"n": 2}))
            assert await subscriber.next_json() == first
            assert await subscriber.next_json() == {"n": 2}
            with trio.fail_after(5):
                while connected(bus.metrics) != 1:
                    await trio.testing.wait_all_tasks_blocked()
    finally:
        subscriber.close()


async def test_xadd_writes_fields_and_trims_to_maxlen(redis_server: RedisServer) -> None:
    """XADD entries land in the stream (None dropped, nested values as JSON), trimmed near MAXLEN."""
    admin = redis_server.client()
    admin.config_set("stream-node-max-entries", 4)  # lets approximate (~) trimming act on small streams
    async with running_bus(redis_server.url) as bus:
        assert bus.outbox.offer(xadd(0, maxlen=10, nested={"k": [1, 2]}, missing=None, text="hi"))
        for seq in range(1, 60):
            assert bus.outbox.offer(xadd(seq, maxlen=10))
        seen = await read_stream_until(redis_server, 59)
    length = admin.xlen(STREAM)
    assert 10 <= length <= 14, length
    assert seen[-1]["seq"] == "59"
    first = admin.xrange(STREAM, count=1)[0][1]
    assert first["seq"] != "0"  # the oldest entries were trimmed
    admin.close()


async def test_xadd_field_encoding(redis_server: RedisServer) -> None:
    """Strings and numbers are written as-is, dicts/lists as JSON, None fields are omitted."""
    async with running_bus(redis_server.url) as bus:
        bus.outbox.offer(xadd(0, nested={"k": [1, 2]}, items=[1, "a"], missing=None, text="hi", ratio=0.25))
        seen = await read_stream_until(redis_server, 0)
    compact = {"separators": (",", ":")}
    assert seen == [{"seq": "0", "nested": json.dumps({"k": [1, 2]}, **compact),
                     "items": json.dumps([1, "a"], **compact), "text": "hi", "ratio": "0.25"}]


async def test_bool_field_does_not_poison_the_backlog(redis_server: RedisServer) -> None:
    """A payload with a boolean (e.g. ``success: true``) must be written, and must not block later messages.

    Known bug (reported): ``_write_batch`` passes ``bool`` through (it is an ``int``), redis-py
    raises ``DataError`` (a ``RedisError``), the writer treats it as "Redis unreachable" and
    retries the same batch forever, so nothing queued after it is ever written.
    """
    async with running_bus(redis_server.url) as bus:
        bus.outbox.offer(xadd(0, success=True))
        bus.outbox.offer(xadd(1))
        seen = await read_stream_until(redis_server, 1, timeout=3.0)
    assert [e["seq"] for e in seen] == ["0", "1"]


# ------------------------------------------------------------------ outbox ----


def test_offer_never_blocks_and_counts_drops() -> None:
    """A full channel makes ``offer`` return False immediately and count the drop by kind."""
    metrics = Metrics()
    send, recv = trio.open_memory_channel[RedisMessage](1)
    outbox = RedisOutbox(send, metrics)
    assert outbox.offer(RedisMessage("publish", "c", {"n": 1}))
    assert not outbox.offer(RedisMessage("publish", "c", {"n": 2}))
    assert not outbox.offer(RedisMessage("xadd", "s", {"n": 3}))
    assert dropped(metrics, "publish") == 1
    assert dropped(metrics, "xadd") == 1
    assert recv.receive_nowait().payload == {"n": 1}
    recv.close()
    assert not outbox.offer(RedisMessage("publish", "c", {"n": 4}))  # actor gone: dropped, no raise
    assert dropped(metrics, "publish") == 2


def test_disabled_outbox_offers_return_false() -> None:
    """Without Redis the outbox is disabled: offers are refused and not counted as drops."""
    metrics = Metrics()
    outbox = disabled_outbox(metrics)
    assert not outbox.enabled
    assert outbox.offer(RedisMessage("publish", "c", {})) is False
    assert dropped(metrics, "publish") == 0


# ------------------------------------------------------------------ outages ----


async def test_buffers_while_down_and_flushes_after_restart(redis_server: RedisServer, spy: WriteSpy) -> None:
    """With Redis stopped messages are kept; once it is back on the same port they are written in order."""
    redis_server.stop()
    async with running_bus(redis_server.url) as bus:
        for seq in range(5):
            assert bus.outbox.offer(xadd(seq))
        await wait_event(spy.failed, "a failed write while Redis is down")
        assert connected(bus.metrics) == 0
        await trio.to_thread.run_sync(redis_server.start)
        seen = await read_stream_until(redis_server, 4)
        assert [e["seq"] for e in seen] == ["0", "1", "2", "3", "4"]
        with trio.fail_after(5):
            while connected(bus.metrics) != 1:
                await trio.testing.wait_all_tasks_blocked()
        assert dropped(bus.metrics, "xadd") == 0


async def test_backlog_overflow_drops_oldest_while_down(redis_server: RedisServer, spy: WriteSpy) -> None:
    """Past ``buffer_limit`` the oldest buffered messages are dropped and counted; the newest survive."""
    redis_server.stop()
    spy.gate.clear()
    async with running_bus(redis_server.url, buffer_limit=3) as bus:
        for seq in range(6):
            assert bus.outbox.offer(xadd(seq))
        await wait_event(spy.entered, "the first write attempt")
        await trio.testing.wait_all_tasks_blocked()  # the collector has buffered all six
        spy.entered.clear()
        spy.gate.set()
        await wait_event(spy.failed, "the first write to fail")
        await wait_event(spy.entered, "the retry, which comes after the failure was handled")
        assert dropped(bus.metrics, "xadd") == 3
        await trio.to_thread.run_sync(redis_server.start)
        seen = await read_stream_until(redis_server, 5)
    assert [e["seq"] for e in seen] == ["3", "4", "5"]


async def test_overflow_during_inflight_write_keeps_newest(redis_server: RedisServer, spy: WriteSpy) -> None:
    """Overflow while a write is in flight: drop-oldest still holds, and nothing is miscounted.

    Message 0 is dropped from the backlog while it is being written; the write succeeds, so
    0 was not lost and is not counted. The writer removes exactly what it wrote, so 1 and
    2 are written next instead of being silently discarded.
    """
    spy.gate.clear()
    async with running_bus(redis_server.url, buffer_limit=2) as bus:
        bus.outbox.offer(xadd(0))
        await wait_event(spy.entered, "the first write")  # batch [0] is in flight, held at the gate
        bus.outbox.offer(xadd(1))
        bus.outbox.offer(xadd(2))  # backlog [0, 1] is full: pushing 2 drops 0, which is being written
        await trio.testing.wait_all_tasks_blocked()
        spy.gate.set()
        seen = await read_stream_until(redis_server, 2)
        assert dropped(bus.metrics, "xadd") == 0
    written = [int(e["seq"]) for e in seen]
    assert written == [0, 1, 2]


# ------------------------------------------------------------------ redaction ----


@pytest.mark.parametrize(("url", "expected"), [
    ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    ("redis://:s3cret@cache:6379/0", "redis://***@cache:6379/0"),
    ("rediss://user:pw@cache.example:6380/2", "rediss://***@cache.example:6380/2"),
])
def test_redact_hides_credentials(url: str, expected: str) -> None:
    """Credentials before the host are replaced by ***; URLs without them are unchanged."""
    assert _redact(url) == expected


def test_redact_password_containing_at_sign() -> None:
    """A raw '@' inside the password (which redis-py accepts) must not leak the rest of it.

    Known bug (reported): ``_redact`` splits at the first '@', so ``:p@ss@host`` logs ``***@ss@host``.
    """
    url = "redis://:p@ssw0rd@cache:6379/0"
    assert redis.Redis.from_url(url).connection_pool.connection_kwargs["password"] == "p@ssw0rd"
    redacted = _redact(url)
    assert "ssw0rd" not in redacted
    assert redacted == "redis://***@cache:6379/0"
