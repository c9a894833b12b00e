"""The control bus: commands appended by one replica reach the others through a real Redis stream."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from actors import control_bus, redis_bus
from actors.control_bus import ControlBus, apply_entry
from actors.core.command_log import entry_fields
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
from actors.storage import cursor_store
from tests.conftest import RedisServer


class Recorder:
    """An executor that records what it is asked to run; ``fail_on`` commands raise a bug."""

    def __init__(self, fail_on: type | None = None) -> None:
        self.seen: list[Command] = []
        self.fail_on = fail_on

    async def __call__(self, command: Command) -> Any:
        if self.fail_on is not None and isinstance(command, self.fail_on):
            raise RuntimeError("boom")
        self.seen.append(command)
        return {"operation_id": "sw-from-here"} if isinstance(command, SwitchModel) else None


def fields(command: Command, command_id: str) -> dict[str, str]:
    return entry_fields(command, command_id=command_id, origin="other")


async def test_apply_entry_skips_seen_old_and_malformed_entries_and_contains_failures() -> None:
    recorder = Recorder(fail_on=PromoteSwitch)
    bus = ControlBus(RedisOutbox(None, Metrics()), recorder, enabled=True, origin="me")
    await apply_entry(bus, "5-0", {"kind": "nope", "args": "{}", "command_id": "x"})
    await apply_entry(bus, "6-0", {"kind": "abort"})
    await apply_entry(bus, "7-0", fields(PromoteSwitch("sw-1"), "c1"))  # fails here: contained
    assert bus.cursor.last_id == "7-0"
    await apply_entry(bus, "8-0", fields(ReloadConfig("api"), "c2"))
    await apply_entry(bus, "9-0", fields(ReloadConfig("api"), "c2"))  # the same submission twice
    await apply_entry(bus, "3-0", fields(AbortSwitch("sw-9"), "c3"))  # before the cursor
    assert recorder.seen == [ReloadConfig("control")]
    assert bus.cursor.last_id == "9-0"


async def test_submit_runs_here_then_appends_with_the_operation_id() -> None:
    send, receive = trio.open_memory_channel[RedisMessage](4)
    bus = ControlBus(RedisOutbox(send, Metrics()), Recorder(), enabled=True, origin="o1")
    assert await bus.submit(SwitchModel("m", {"version": "2"})) == {"operation_id": "sw-from-here"}
    sent = receive.receive_nowait()
    assert (sent.kind, sent.target) == ("xadd", control_bus.STREAM)
    assert sent.payload["kind"] == "switch" and sent.payload["origin"] == "o1"
    assert json.loads(sent.payload["args"]) == {"model": "m", "params": {"version": "2"},
                                                "operation_id": "sw-from-here", "reason": "switch"}
    assert bus.cursor.seen(sent.payload["command_id"])  # its own entry will not be applied again


async def test_a_refused_command_is_not_appended() -> None:
    send, receive = trio.open_memory_channel[RedisMessage](4)

    async def refuse(command: Command) -> Any:
        raise Conflict("version_serving", "no")

    bus = ControlBus(RedisOutbox(send, Metrics()), refuse, enabled=True, origin="o1")
    with pytest.raises(Conflict):
        await bus.submit(DeregisterVersion("m", "1"))
    assert receive.statistics().current_buffer_used == 0


def test_nothing_is_appended_without_redis() -> None:
    send, receive = trio.open_memory_channel[RedisMessage](4)
    assert ControlBus(RedisOutbox(send, Metrics()), Recorder(), enabled=False).publish(ReloadConfig()) is None
    assert receive.statistics().current_buffer_used == 0


async def test_a_replica_that_was_away_replays_what_it_missed_once(redis_server: RedisServer,
                                                                  tmp_path: Path) -> None:
    """B is down while A submits; B starts from its saved cursor, replays in order, exactly once."""
    metrics = Metrics()
    on_a, on_b = Recorder(), Recorder()
    send, receive = trio.open_memory_channel[RedisMessage](16)
    outbox = RedisOutbox(send, metrics, BusState())
    bus_a = ControlBus(outbox, on_a, enabled=True, origin="a")
    cursor_b = tmp_path / "b.cursor.json"
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(redis_bus.run, redis_server.url, receive, metrics, state=outbox.state))
        await nursery.start(partial(control_bus.run, bus_a, redis_server.url, cursor_path=tmp_path / "a.json"))
        bus_b = ControlBus(outbox, on_b, enabled=True, origin="b")
        async with trio.open_nursery() as b_nursery:
            await b_nursery.start(partial(control_bus.run, bus_b, redis_server.url, cursor_path=cursor_b))
            await bus_a.submit(AbortSwitch("sw-1"))
            with trio.fail_after(5):
                await bus_b.wait_until(lambda b: b.applied_count == 1)
            b_nursery.cancel_scope.cancel()  # B goes away, its cursor saved
        assert cursor_store.load(cursor_b).last_id == bus_b.cursor.last_id
        await bus_a.submit(AbortSwitch("sw-2"))
        await bus_a.submit(PromoteSwitch("sw-3"))
        with trio.fail_after(5):
            await bus_a.wait_until(lambda a: len(redis_server.client().xrange(control_bus.STREAM)) == 3)
        # A retried XADD writes the same submission twice: it must still apply once.
        last = redis_server.client().xrange(control_bus.STREAM)[-1][1]
        redis_server.client().xadd(control_bus.STREAM, last)
        on_b2 = Recorder()
        bus_b2 = ControlBus(outbox, on_b2, enabled=True, origin="b2")
        await nursery.start(partial(control_bus.run, bus_b2, redis_server.url, cursor_path=cursor_b))
        # Ready only once caught up: the replay happened before start returned.
        assert on_b2.seen == [AbortSwitch("sw-2"), PromoteSwitch("sw-3")]
        nursery.cancel_scope.cancel()
    assert on_a.seen == [AbortSwitch("sw-1"), AbortSwitch("sw-2"), PromoteSwitch("sw-3")]  # never its own twice
    assert on_b.seen == [AbortSwitch("sw-1")]


async def test_commands_submitted_while_redis_is_down_arrive_once_it_is_back(redis_server: RedisServer,
                                                                             tmp_path: Path) -> None:
    metrics = Metrics()
    on_b = Recorder()
    send, receive = trio.open_memory_channel[RedisMessage](16)
    outbox = RedisOutbox(send, metrics, BusState())
    bus_a = ControlBus(outbox, Recorder(), enabled=True, origin="a")
    bus_b = ControlBus(outbox, on_b, enabled=True, origin="b")
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(redis_bus.run, redis_server.url, receive, metrics, state=outbox.state))
        await nursery.start(partial(control_bus.run, bus_a, redis_server.url))
        await nursery.start(partial(control_bus.run, bus_b, redis_server.url, cursor_path=tmp_path / "b.json"))
        await bus_a.submit(AbortSwitch("sw-1"))
        with trio.fail_after(5):
            await bus_b.wait_until(lambda b: b.applied_count == 1)
        await trio.to_thread.run_sync(redis_server.stop)
        await bus_a.submit(AbortSwitch("sw-2"))
        await trio.to_thread.run_sync(redis_server.start)
        with trio.fail_after(15):
            await bus_b.wait_until(lambda b: b.applied_count == 2)
        nursery.cancel_scope.cancel()
    assert on_b.seen == [AbortSwitch("sw-1"), AbortSwitch("sw-2")]


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
