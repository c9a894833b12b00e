"""Actors start in order (each only once the previous one is ready) and stop in reverse."""

from __future__ import annotations

from functools import partial

import trio
import trio.testing

from actors.lifecycle import ActorGroup


async def slow_actor(name: str, startup_s: float, log: list[str],
                     *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
    await trio.sleep(startup_s)  # virtual time: loading state, binding, warming up
    log.append(f"{name} ready at {trio.current_time():.0f}")
    task_status.started(f"{name}-handle")
    try:
        await trio.sleep_forever()
    finally:
        log.append(f"{name} stopped")


async def test_start_in_order_stop_in_reverse(autojump_clock: trio.testing.MockClock) -> None:
    log: list[str] = []
    async with trio.open_nursery() as nursery:
        group = ActorGroup(nursery)
        assert await group.start("first", partial(slow_actor, "first", 5, log)) == "first-handle"
        assert await group.start("second", partial(slow_actor, "second", 2, log)) == "second-handle"
        assert log == ["first ready at 5", "second ready at 7"]  # the second waited for the first
        await group.stop_all()
        assert log[2:] == ["second stopped", "first stopped"]


async def test_an_actor_that_fails_to_start_fails_the_start(autojump_clock: trio.testing.MockClock) -> None:
    """A start-up failure ends the service (the one case besides a signal)."""

    async def broken(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await trio.sleep(1)
        raise OSError("cannot bind")

    caught = None
    try:
        async with trio.open_nursery() as nursery:
            await ActorGroup(nursery).start("broken", broken)
    except BaseException as exc:  # trio wraps it in an ExceptionGroup
        caught = exc
    assert caught is not None and "cannot bind" in repr(caught)
