"""The usage flush actor: periodic and final flushes, reload at start, counts kept when a flush fails."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import trio

from actors import usage_flusher
from actors.core.rate_limit import utc_day
from actors.core.usage import UsageBook
from actors.storage.usage_store import FileUsageStore

T0 = datetime(2026, 12, 2, 12, 0, tzinfo=timezone.utc).timestamp()
DAY = utc_day(T0)


def traffic(book: UsageBook, n: int = 1) -> None:
    book.record_prediction("desk-a", "engine", "tlob_tiny", n, T0)
    book.record_refusal("desk-a", "engine", "budget_exhausted", T0)


async def test_flusher_persists_periodically_and_at_exit_then_reloads(tmp_path: Path) -> None:
    path = tmp_path / "usage.json"
    book = UsageBook(DAY)
    clock = lambda: T0  # noqa: E731
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: usage_flusher.run(
            book, FileUsageStore(path), interval_s=0.05, clock=clock, task_status=task_status))
        traffic(book, 2)
        with trio.fail_after(2):
            while not path.exists():
                await trio.sleep(0.01)
        assert not book.delta
        traffic(book, 1)  # not flushed by the loop: the exit flush writes it
        nursery.cancel_scope.cancel()
    restarted = UsageBook(DAY)
    store = FileUsageStore(path)
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: usage_flusher.run(
            restarted, store, interval_s=60, clock=clock, task_status=task_status))
        assert restarted.totals(T0)[("p", "desk-a")] == 3
        nursery.cancel_scope.cancel()


async def test_failed_flush_keeps_the_counts(tmp_path: Path) -> None:
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the folder should be")
    book = UsageBook(DAY)
    traffic(book, 2)
    assert not await usage_flusher.flush_once(book, FileUsageStore(blocked / "usage.json"), lambda: T0)
    assert book.totals(T0)[("p", "desk-a")] == 2
    assert await usage_flusher.flush_once(book, FileUsageStore(tmp_path / "usage.json"), lambda: T0)
    assert book.totals(T0)[("p", "desk-a")] == 2 and not book.delta
