"""Budget stores and the ledger: atomic leases in a real Redis (or in memory), spent locally."""

from __future__ import annotations

from datetime import datetime, timezone

from actors.core.rate_limit import next_reset, utc_day
from actors.storage.budget_store import (
    EXHAUSTED,
    NEED_LEASE,
    OK,
    BudgetLedger,
    LocalBudgetStore,
    RedisBudgetStore,
    budget_key,
)
from tests.conftest import RedisServer

T0 = datetime(2026, 12, 2, 23, 59, 0, tzinfo=timezone.utc).timestamp()
DAY = utc_day(T0)


def test_reserve_never_grants_more_than_is_left(redis_server: RedisServer) -> None:
    store = RedisBudgetStore.from_url(redis_server.url)
    assert store.reserve("w", DAY, 250, 100) == (100, 100)
    assert store.reserve("w", DAY, 250, 100) == (100, 200)
    assert store.reserve("w", DAY, 250, 100) == (50, 250)
    assert store.reserve("w", DAY, 250, 100) == (0, 250)
    assert store.release("w", DAY, 30) == 220
    assert store.reserve("w", DAY, 250, 100) == (30, 250)
    assert store.release("w", DAY, 10_000) == 0  # never below zero
    assert store.reserved("w", DAY) == 0
    assert store.reserve("w", DAY + 1, 250, 10) == (10, 10)  # each day its own counter
    assert redis_server.client().ttl(budget_key("w", DAY + 1)) > 86_400
    assert budget_key("w", DAY) == "model_router:budget:w:2026-12-02"


def test_local_store_has_the_same_contract() -> None:
    store = LocalBudgetStore()
    assert store.reserve("w", DAY, 150, 100) == (100, 100)
    assert store.reserve("w", DAY, 150, 100) == (50, 150)
    assert store.reserve("w", DAY, 150, 100) == (0, 150)
    assert store.release("w", DAY, 500) == 0
    store.seed("w", DAY, 140)  # restarted: today's predictions from the usage file
    assert store.reserve("w", DAY, 150, 100) == (10, 150)


def test_local_store_forgets_days_before_yesterday() -> None:
    """A process that runs for months keeps two days of counters, not one per day it ran."""
    store = LocalBudgetStore()
    for day in range(DAY, DAY + 30):
        for workspace in ("a", "b"):
            store.reserve(workspace, day, 100, 10)
    assert sorted(store.counters) == [("a", DAY + 28), ("a", DAY + 29), ("b", DAY + 28), ("b", DAY + 29)]
    assert store.release("a", DAY + 28, 5) == 5  # yesterday's lease can still come back


def test_ledger_spends_a_lease_locally_and_asks_for_more_when_low() -> None:
    ledger = BudgetLedger(LocalBudgetStore(), min_chunk=10)
    wakes: list[int] = []
    ledger.notify = lambda: wakes.append(1)
    assert ledger.try_spend("w", 1000, 1, T0).status == NEED_LEASE  # no lease yet: the slow path
    assert ledger.wanted == {"w"} and wakes
    _, day, limit, want = ledger.refill_one("w", T0)  # type: ignore[misc]
    granted, reserved = ledger.store.reserve("w", day, limit, want)
    ledger.wanted.clear()
    ledger.apply_grant("w", day, limit, granted, reserved)
    assert granted == 10
    assert all(ledger.try_spend("w", 1000, 1, T0).ok for _ in range(5))
    assert ledger.wanted == set()
    assert ledger.try_spend("w", 1000, 1, T0).ok  # 4 left < half of the chunk: ask in the background
    assert ledger.wanted == {"w"}
    assert ledger.spent_today("w", T0) == 6
    assert ledger.try_spend("w", None, 10**9, T0).ok  # a workspace without a budget


def test_chunk_adapts_to_rate_and_shrinks_near_the_end() -> None:
    ledger = BudgetLedger(LocalBudgetStore(), min_chunk=100)
    ledger.try_spend("w", 1_000_000, 1, T0)
    lease = ledger.leases["w"]
    assert ledger.chunk_for(lease, T0) == 100
    lease.window_spent = 5_000  # 5000 items in the last 2 s: 2500/s
    assert ledger.chunk_for(lease, T0 + 2.0) == 5_000
    lease.store_left = 1_000  # close to the end: at most half of what is left
    assert ledger.chunk_for(lease, T0 + 2.0) == 500
    lease.need, lease.left = 800, 0  # a large batch waiting: enough for it
    assert ledger.chunk_for(lease, T0 + 2.0) == 800


def test_exhausted_answers_with_reset_time() -> None:
    ledger = BudgetLedger(LocalBudgetStore(), min_chunk=10)
    ledger.try_spend("w", 3, 1, T0)
    ledger.apply_grant("w", DAY, 3, *ledger.store.reserve("w", DAY, 3, 10))
    assert [ledger.try_spend("w", 3, 1, T0).status for _ in range(3)] == [OK] * 3
    ledger.apply_grant("w", DAY, 3, *ledger.store.reserve("w", DAY, 3, 10))
    result = ledger.try_spend("w", 3, 1, T0)
    assert (result.status, result.reset_at, result.limit, result.used) == (EXHAUSTED, next_reset(T0), 3, 3)
    refusal = result.refusal("w")
    assert refusal is not None and refusal.code == "budget_exhausted" and refusal.reset_at == next_reset(T0)
    assert refusal.details == {"workspace": "w", "limit": 3, "used": 3, "reset_at": "2026-12-03T00:00:00Z"}
    assert ledger.try_spend("w", None, 1, T0).refusal("w") is None
