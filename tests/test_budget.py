"""The budget actor: leases kept topped up; two ledgers or two processes never overspend together."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import datetime, timezone

import pytest
import trio

from actors.budget import UNAVAILABLE, BudgetActor
from actors.core.rate_limit import utc_day
from actors.storage.budget_store import EXHAUSTED, NEED_LEASE, OK, BudgetLedger, LocalBudgetStore, RedisBudgetStore
from tests.conftest import RedisServer

T0 = datetime(2026, 12, 2, 23, 59, 0, tzinfo=timezone.utc).timestamp()
DAY = utc_day(T0)


async def hammer(actor: BudgetActor, workspace: str, limit: int, sizes: list[int]) -> int:
    """Spend batches until the budget says exhausted; returns the items let through."""
    spent = 0
    i = 0
    while True:
        n = sizes[i % len(sizes)]
        i += 1
        result = actor.try_spend(workspace, limit, n)
        if result.status == NEED_LEASE:
            result = await actor.spend(workspace, limit, n, wait_s=5.0)
        if result.status == OK:
            spent += n
        elif result.status == EXHAUSTED and n == 1:
            return spent
        elif result.status == UNAVAILABLE:
            raise AssertionError("the store was reachable")
        if i % 50 == 0:
            await trio.sleep(0)  # let the other ledger and the refill actors run


async def test_two_ledgers_never_overspend_together(redis_server: RedisServer) -> None:
    limit = 5_000
    actors = [BudgetActor(BudgetLedger(RedisBudgetStore.from_url(redis_server.url), min_chunk=50))
              for _ in range(2)]
    totals: list[int] = []

    async def one(actor: BudgetActor, sizes: list[int]) -> None:
        totals.append(await hammer(actor, "shared", limit, sizes))

    with trio.fail_after(30):
        async with trio.open_nursery() as outer:
            for actor in actors:
                await outer.start(actor.run)
            async with trio.open_nursery() as inner:
                inner.start_soon(one, actors[0], [1, 3, 1, 7])
                inner.start_soon(one, actors[1], [2, 1, 5])
            outer.cancel_scope.cancel()  # the actors give back what they hold on the way out
    assert sum(totals) == limit  # everything spent, nothing more
    assert all(t > 0 for t in totals)
    store = RedisBudgetStore.from_url(redis_server.url)
    assert store.reserved("shared", utc_day(actors[0].clock())) == sum(totals)


async def test_unused_leases_go_back_at_shutdown(redis_server: RedisServer) -> None:
    store = RedisBudgetStore.from_url(redis_server.url)
    actor = BudgetActor(BudgetLedger(store, min_chunk=100))
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        assert (await actor.spend("w", 10_000, 7, wait_s=5.0)).ok
        day = utc_day(actor.clock())
        assert store.reserved("w", day) == 100  # a whole chunk leased for 7 items
        nursery.cancel_scope.cancel()
    assert store.reserved("w", day) == 7


async def test_day_change_returns_yesterdays_lease_and_leases_anew() -> None:
    now = [T0]
    store = LocalBudgetStore()
    actor = BudgetActor(BudgetLedger(store, min_chunk=100), clock=lambda: now[0])
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        assert (await actor.spend("w", 1_000, 10, wait_s=5.0)).ok
        assert store.reserved("w", DAY) == 100
        now[0] = T0 + 120  # past midnight UTC
        assert actor.try_spend("w", 1_000, 1).status == NEED_LEASE
        assert (await actor.spend("w", 1_000, 1, wait_s=5.0)).ok
        with trio.fail_after(2):
            while store.reserved("w", DAY) != 10:  # the stale lease is given back by the actor
                await trio.sleep(0.01)
        assert store.reserved("w", DAY + 1) == 100
        nursery.cancel_scope.cancel()
    assert store.reserved("w", DAY + 1) == 1


async def test_unreachable_store_refuses_waiters_quickly_but_spends_what_is_held(tmp_path) -> None:
    server = RedisServer(tmp_path)
    server.start()
    actor = BudgetActor(BudgetLedger(RedisBudgetStore.from_url(server.url), min_chunk=100))
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(actor.run)
            assert (await actor.spend("held", 10_000, 1, wait_s=5.0)).ok
            server.stop()
            assert actor.try_spend("held", 10_000, 1).ok  # the lease in hand still serves
            with trio.fail_after(5):
                result = await actor.spend("new", 10_000, 1, wait_s=3.0)
            assert result.status == UNAVAILABLE
            assert not actor.store_ok
            nursery.cancel_scope.cancel()
    finally:
        server.stop()


WORKER = textwrap.dedent("""\
    import sys, trio
    from actors.budget import BudgetActor
    from actors.storage.budget_store import BudgetLedger, RedisBudgetStore, OK, EXHAUSTED, NEED_LEASE

    async def main(url, limit, sizes):
        actor = BudgetActor(BudgetLedger(RedisBudgetStore.from_url(url), min_chunk=20))
        spent = 0
        async with trio.open_nursery() as nursery:
            await nursery.start(actor.run)
            i = 0
            while True:
                n = sizes[i % len(sizes)]
                i += 1
                result = actor.try_spend("proc", limit, n)
                if result.status == NEED_LEASE:
                    result = await actor.spend("proc", limit, n, wait_s=5.0)
                if result.status == OK:
                    spent += n
                elif result.status == EXHAUSTED and n == 1:
                    break
                if i % 25 == 0:
                    await trio.sleep(0)
            nursery.cancel_scope.cancel()
        print(spent)

    trio.run(main, sys.argv[1], int(sys.argv[2]), [int(x) for x in sys.argv[3].split(",")])
    """)


@pytest.mark.parametrize("limit", [3_001])
def test_two_processes_never_overspend_together(redis_server: RedisServer, limit: int) -> None:
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, redis_server.url, str(limit), sizes],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for sizes in ("1,2,1,4", "3,1,1")]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outputs]
    spent = [int(out.strip()) for out, _ in outputs]
    assert sum(spent) == limit
    reserved = sum(int(v) for k, v in ((k, redis_server.client().get(k))
                                       for k in redis_server.client().keys("model_router:budget:proc:*")))
    assert reserved == limit


async def test_an_exhausted_ledger_picks_up_what_another_gives_back(redis_server: RedisServer) -> None:
    limit = 300
    first = BudgetActor(BudgetLedger(RedisBudgetStore.from_url(redis_server.url), min_chunk=200))
    second = BudgetActor(BudgetLedger(RedisBudgetStore.from_url(redis_server.url), min_chunk=200))
    async with trio.open_nursery() as nursery:
        await nursery.start(first.run)
        async with trio.open_nursery() as inner:
            await inner.start(second.run)
            assert (await second.spend("w", limit, 1, wait_s=5.0)).ok  # second leases 200 of 300
            spent = await hammer(first, "w", limit, [1])
            assert spent == 100  # the 100 not leased to second
            inner.cancel_scope.cancel()  # second stops: 199 unused go back
        with trio.fail_after(5):  # first asks again (every second) and spends them
            while not first.try_spend("w", limit, 1).ok:
                await trio.sleep(0.05)
        assert await hammer(first, "w", limit, [1]) == 198
        nursery.cancel_scope.cancel()
