"""The usage flush actor: writes the usage book's deltas to its store every few seconds.

Counting happens on the request path (``UsageBook.record_*``, plain dict arithmetic); this
actor moves the deltas to Redis or the local file in a worker thread, at most once per
``interval_s``, reads the totals back so ``GET /usage`` shows every replica, and flushes
once more on the way out so a graceful restart loses nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import redis
import trio

from actors.core.rate_limit import utc_day
from actors.core.usage import UsageBook
from actors.storage.usage_store import UsageStore

log = logging.getLogger("model_router.usage")

FLUSH_INTERVAL_S = 2.0


async def load_today(book: UsageBook, store: UsageStore, clock: Callable[[], float] = time.time) -> None:
    """Read today's totals at start so counts survive a restart."""
    day = utc_day(clock())
    totals = await trio.to_thread.run_sync(store.load, day)
    book.absorb(day, totals)


async def flush_once(book: UsageBook, store: UsageStore, clock: Callable[[], float] = time.time) -> bool:
    """One flush; on failure the deltas go back into the book for the next try."""
    delta = book.take_delta()
    today = utc_day(clock())
    try:
        totals = await trio.to_thread.run_sync(store.flush, delta, today)
    except (redis.RedisError, OSError) as exc:
        book.restore_delta(delta)
        log.warning("usage not persisted (will retry): %s", exc)
        return False
    book.absorb(today, totals)
    return True


async def run(book: UsageBook, store: UsageStore, *, interval_s: float = FLUSH_INTERVAL_S,
              clock: Callable[[], float] = time.time,
              task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Load today's totals, then flush every ``interval_s`` until cancelled, and once more at exit."""
    try:
        await load_today(book, store, clock)
    except (redis.RedisError, OSError) as exc:
        log.warning("usage totals not loaded (counting from zero): %s", exc)
    task_status.started()
    try:
        while True:
            await trio.sleep(interval_s)
            if book.delta:
                await flush_once(book, store, clock)
    finally:
        with trio.move_on_after(2.0) as scope:
            scope.shield = True
            if book.delta:
                await flush_once(book, store, clock)
