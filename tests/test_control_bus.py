"""The control bus: commands published by one worker reach the others through real Redis."""

from __future__ import annotations

import gc
import json
from functools import partial
from typing import Any

import trio

from actors import control_bus, redis_bus
from actors.control_bus import ControlBus, _dispatch
from actors.redis_bus import BusState, RedisMessage, RedisOutbox
from actors.serving.metrics import Metrics
from tests.conftest import RedisServer


def message(kind: str, origin: str, **args: Any) -> bytes:
    return json.dumps({"kind": kind, "origin": origin, "args": args}).encode()


async def test_dispatch_ignores_own_unknown_and_malformed_messages() -> None:
    """Only other workers' well-formed commands of a known kind are applied; a failing handler is contained."""
    bus = ControlBus(RedisOutbox(None, Metrics()), enabled=True, origin="me")
    seen: list[dict[str, Any]] = []

    async def record(args: dict[str, Any]) -> None:
        seen.append(args)

    async def explode(args: dict[str, Any]) -> None:
        raise RuntimeError("boom")

    handlers = {"config_reload": record, "bad": explode}
    await _dispatch(bus, handlers, message("config_reload", "me"))
    await _dispatch(bus, handlers, message("nope", "other"))
    await _dispatch(bus, handlers, b"{not json")
    await _dispatch(bus, handlers, message("bad", "other"))
    assert seen == []
    await _dispatch(bus, handlers, message("config_reload", "other", x=1))
    assert seen == [{"x": 1}]


def test_publish_only_when_enabled() -> None:
    """A single worker (or no Redis) publishes nothing."""
    send, receive = trio.open_memory_channel[RedisMessage](4)
    ControlBus(RedisOutbox(send, Metrics()), enabled=False).publish("config_reload")
    bus = ControlBus(RedisOutbox(send, Metrics()), enabled=True, origin="o1")
    bus.publish("switch", name="m", operation_id="sw-1")
    sent = receive.receive_nowait()
    assert (sent.kind, sent.target) == ("publish", control_bus.CHANNEL)
    assert sent.payload == {"origin": "o1", "kind": "switch", "args": {"name": "m", "operation_id": "sw-1"}}
    assert receive.statistics().current_buffer_used == 0


async def test_command_travels_between_two_buses_over_real_redis(redis_server: RedisServer) -> None:
    """Worker A publishes; worker B's handler runs with the same arguments; A ignores its own message."""
    metrics = Metrics()
    applied_b = trio.Event()
    received: dict[str, list[dict[str, Any]]] = {"a": [], "b": []}

    async def on_a(args: dict[str, Any]) -> None:
        received["a"].append(args)

    async def on_b(args: dict[str, Any]) -> None:
        received["b"].append(args)
        applied_b.set()

    send, receive = trio.open_memory_channel[RedisMessage](16)
    outbox = RedisOutbox(send, metrics, BusState())
    bus_a = ControlBus(outbox, enabled=True, origin="a")
    bus_b = ControlBus(outbox, enabled=True, origin="b")
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(redis_bus.run, redis_server.url, receive, metrics, state=outbox.state))
        await nursery.start(control_bus.run, bus_a, redis_server.url, {"abort": on_a})
        await nursery.start(control_bus.run, bus_b, redis_server.url, {"abort": on_b})
        gc.collect()  # regression: a collected client used to drop the pub/sub connection silently
        bus_a.publish("abort", operation_id="sw-42")
        with trio.fail_after(5):
            await applied_b.wait()
        nursery.cancel_scope.cancel()
    assert received == {"a": [], "b": [{"operation_id": "sw-42"}]}


def test_subscription_keeps_its_connection_open(redis_server: RedisServer) -> None:
    """The subscribed connection stays open after subscribing (and after a collection).

    Regression: the client used to be dropped once subscribed, which disconnected its pool
    at once; redis-py re-subscribed on the next poll, losing what was published meanwhile.
    """
    subscription = control_bus._subscribe(redis_server.url)
    try:
        gc.collect()
        assert subscription.pubsub.connection is not None
        assert subscription.pubsub.connection._sock is not None
        assert redis_server.client().pubsub_numsub(control_bus.CHANNEL) == [(control_bus.CHANNEL, 1)]
    finally:
        subscription.close()
