"""The control bus: commands published by one worker reach the others through real Redis."""

from __future__ import annotations

import gc
import json
from functools import partial
from typing import Any

import pytest
import trio

from actors import control_bus, redis_bus
from actors.control_bus import ControlBus, _dispatch
from actors.core.commands import (
    AbortSwitch,
    Command,
    DeregisterVersion,
    PromoteSwitch,
    ReloadConfig,
    RollbackOperation,
    SwitchModel,
)
from actors.core.errors import Conflict
from actors.redis_bus import BusState, RedisMessage, RedisOutbox
from actors.serving.metrics import Metrics
from tests.conftest import RedisServer


def message(kind: str, origin: str, **args: Any) -> bytes:
    return json.dumps({"kind": kind, "origin": origin, "args": args}).encode()


class Recorder:
    """An executor that records what it is asked to run; ``fail_on`` commands raise a bug."""

    def __init__(self, fail_on: type | None = None) -> None:
        self.seen: list[Command] = []
        self.applied = trio.Event()
        self.fail_on = fail_on

    async def __call__(self, command: Command) -> Any:
        if self.fail_on is not None and isinstance(command, self.fail_on):
            raise RuntimeError("boom")
        self.seen.append(command)
        self.applied.set()
        return {"operation_id": "sw-from-here"} if isinstance(command, SwitchModel) else None


async def test_dispatch_ignores_own_unknown_and_malformed_messages() -> None:
    """Only other workers' well-formed commands of a known kind are applied; a failing one is contained."""
    recorder = Recorder(fail_on=PromoteSwitch)
    bus = ControlBus(RedisOutbox(None, Metrics()), recorder, enabled=True, origin="me")
    await _dispatch(bus, message("config_reload", "me"))
    await _dispatch(bus, message("nope", "other"))
    await _dispatch(bus, b"{not json")
    await _dispatch(bus, message("promote", "other", operation_id="sw-1"))
    await _dispatch(bus, message("abort", "other", wrong_field=1))
    assert recorder.seen == []
    await _dispatch(bus, message("config_reload", "other", trigger="api"))
    assert recorder.seen == [ReloadConfig("control")]


async def test_submit_runs_here_then_publishes_with_the_operation_id() -> None:
    """``submit`` is the one entry point: it runs the command, then mirrors it as settled."""
    send, receive = trio.open_memory_channel[RedisMessage](4)
    recorder = Recorder()
    bus = ControlBus(RedisOutbox(send, Metrics()), recorder, enabled=True, origin="o1")
    assert await bus.submit(SwitchModel("m", {"version": "2"})) == {"operation_id": "sw-from-here"}
    sent = receive.receive_nowait()
    assert (sent.kind, sent.target) == ("publish", control_bus.CHANNEL)
    assert sent.payload == {"origin": "o1", "kind": "switch", "args": {
        "model": "m", "params": {"version": "2"}, "operation_id": "sw-from-here", "reason": "switch"}}


async def test_a_refused_command_is_not_published() -> None:
    """A command that fails here (a domain error) is not mirrored."""
    send, receive = trio.open_memory_channel[RedisMessage](4)

    async def refuse(command: Command) -> Any:
        raise Conflict("version_serving", "no")

    bus = ControlBus(RedisOutbox(send, Metrics()), refuse, enabled=True, origin="o1")
    with pytest.raises(Conflict):
        await bus.submit(DeregisterVersion("m", "1"))
    assert receive.statistics().current_buffer_used == 0


def test_publish_only_when_enabled() -> None:
    """A single worker (or no Redis) publishes nothing."""
    send, receive = trio.open_memory_channel[RedisMessage](4)
    ControlBus(RedisOutbox(send, Metrics()), Recorder(), enabled=False).publish(ReloadConfig())
    assert receive.statistics().current_buffer_used == 0


async def test_command_travels_between_two_buses_over_real_redis(redis_server: RedisServer) -> None:
    """Worker A publishes; worker B runs the same command; A ignores its own message."""
    metrics = Metrics()
    on_a, on_b = Recorder(), Recorder()
    send, receive = trio.open_memory_channel[RedisMessage](16)
    outbox = RedisOutbox(send, metrics, BusState())
    bus_a = ControlBus(outbox, on_a, enabled=True, origin="a")
    bus_b = ControlBus(outbox, on_b, enabled=True, origin="b")
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(redis_bus.run, redis_server.url, receive, metrics, state=outbox.state))
        await nursery.start(control_bus.run, bus_a, redis_server.url)
        await nursery.start(control_bus.run, bus_b, redis_server.url)
        gc.collect()  # regression: a collected client used to drop the pub/sub connection silently
        await bus_a.submit(AbortSwitch("sw-42"))
        with trio.fail_after(5):
            await on_b.applied.wait()
        nursery.cancel_scope.cancel()
    assert on_a.seen == [AbortSwitch("sw-42")]  # run once, locally, by submit
    assert on_b.seen == [AbortSwitch("sw-42")]


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


async def test_submit_tells_the_audit_hook_with_the_caller_and_outcome() -> None:
    heard: list[tuple[Any, Any, Any, Any]] = []

    async def execute(command: Any) -> Any:
        if isinstance(command, AbortSwitch):
            raise Conflict("not_running", "nothing to abort")
        return {"done": True}

    bus = ControlBus(RedisOutbox(None, Metrics()), execute, audit=lambda *args: heard.append(args))
    assert await bus.submit(ReloadConfig("api"), "caller-1") == {"done": True}
    with pytest.raises(Conflict):
        await bus.submit(AbortSwitch("op-1"), "caller-2")
    assert heard[0] == (ReloadConfig("api"), {"done": True}, None, "caller-1")
    assert heard[1][0] == AbortSwitch("op-1") and isinstance(heard[1][2], Conflict) and heard[1][3] == "caller-2"


def test_automatic_commands_are_audited_without_a_caller_then_published() -> None:
    heard: list[tuple[Any, ...]] = []
    send, receive = trio.open_memory_channel[RedisMessage](4)
    bus = ControlBus(RedisOutbox(send, Metrics()), Recorder(), enabled=True, audit=lambda *args: heard.append(args))
    bus.automatic(RollbackOperation("op-9", "breaker open"))
    assert heard == [(RollbackOperation("op-9", "breaker open"), None, None, None)]
    assert receive.statistics().current_buffer_used == 1
