"""Starting and stopping the actors: in dependency order, and back in reverse.

Each actor is started with ``nursery.start`` so the next one (and finally the HTTP
listeners) starts only once it reported ready. Stopping cancels them last-started-first
and waits for each, so an actor never outlives one it depends on.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

log = logging.getLogger("model_router")


@attrs.define
class ActorGroup:
    """Starts actors in order and stops them in reverse order."""

    nursery: trio.Nursery
    running: list[tuple[str, trio.CancelScope, trio.Event]] = attrs.field(factory=list)

    async def start(self, name: str, actor: Callable[..., Awaitable[Any]]) -> Any:
        return await self.nursery.start(self._run, name, actor)

    async def _run(self, name: str, actor: Callable[..., Awaitable[Any]],
                   *, task_status: trio.TaskStatus[Any]) -> None:
        done = trio.Event()
        try:
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:
                    value = await nursery.start(actor)
                    self.running.append((name, scope, done))
                    log.debug("actor %s ready", name)
                    task_status.started(value)
        finally:
            done.set()

    async def stop_all(self) -> None:
        for name, scope, done in reversed(self.running):
            scope.cancel()
            await done.wait()
            log.debug("actor %s stopped", name)


async def stop_on_signals(stop: trio.Event) -> None:
    """SIGINT or SIGTERM: set ``stop`` (the service drains HTTP, then stops the actors)."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("received %s: draining HTTP, then stopping actors", signal.Signals(signum).name)
            stop.set()
            return
