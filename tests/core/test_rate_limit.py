"""Token buckets and the UTC-day arithmetic of budgets."""

from __future__ import annotations

import math
from datetime import datetime, timezone

import pytest

from actors.core.access import RATE_LIMITED, ApiKey, RateLimit, Role, Workspace
from actors.core.rate_limit import (
    DayCounters,
    TokenBuckets,
    bucket_take,
    day_label,
    iso_utc,
    next_reset,
    rate_refusal,
    retry_after_header,
    utc_day,
)

T0 = datetime(2026, 12, 2, 23, 59, 58, tzinfo=timezone.utc).timestamp()


def test_new_key_starts_with_a_full_burst_then_is_limited() -> None:
    buckets = TokenBuckets()
    limit = RateLimit(per_second=10, burst=3)
    results = [buckets.take("k", limit, 100.0) for _ in range(4)]
    assert results[:3] == [(True, 0.0)] * 3
    allowed, retry = results[3]
    assert not allowed and retry == pytest.approx(0.1)


def test_refill_follows_elapsed_time_and_caps_at_burst() -> None:
    buckets = TokenBuckets()
    limit = RateLimit(per_second=10, burst=3)
    for _ in range(3):
        buckets.take("k", limit, 0.0)
    assert buckets.take("k", limit, 0.05) == (False, pytest.approx(0.05))
    assert buckets.take("k", limit, 0.1)[0]
    # A long idle period refills only up to burst.
    assert [buckets.take("k", limit, 1000.0)[0] for _ in range(4)] == [True, True, True, False]


def test_keys_have_separate_buckets() -> None:
    buckets = TokenBuckets()
    limit = RateLimit(per_second=1, burst=1)
    assert buckets.take("a", limit, 0.0)[0]
    assert not buckets.take("a", limit, 0.0)[0]
    assert buckets.take("b", limit, 0.0)[0]


def test_taking_more_than_burst_never_passes() -> None:
    tokens, stamp, allowed, retry = bucket_take(5.0, 0.0, 1.0, 5.0, 10.0, n=6)
    assert (tokens, stamp, allowed) == (5.0, 10.0, False) and math.isinf(retry)
    assert retry_after_header(retry) == 86_400
    assert retry_after_header(0.01) == 1 and retry_after_header(2.2) == 3


def test_time_going_backwards_does_not_mint_tokens() -> None:
    buckets = TokenBuckets()
    limit = RateLimit(per_second=1, burst=1)
    assert buckets.take("k", limit, 10.0)[0]
    assert not buckets.take("k", limit, 5.0)[0]


def test_prune_forgets_idle_keys() -> None:
    buckets = TokenBuckets()
    limit = RateLimit(per_second=1, burst=1)
    buckets.take("old", limit, 0.0)
    buckets.take("new", limit, 1000.0)
    assert buckets.prune(1000.0, idle_s=600) == 1
    assert set(buckets.state) == {"new"}


def test_utc_day_and_next_reset() -> None:
    assert day_label(utc_day(T0)) == "2026-12-02"
    assert iso_utc(next_reset(T0)) == "2026-12-03T00:00:00Z"
    assert next_reset(T0) - T0 == pytest.approx(2.0)
    assert day_label(utc_day(T0 + 2.0)) == "2026-12-03"
    assert next_reset(T0 + 2.0) == next_reset(T0) + 86_400


def test_day_counters_count_items_and_start_over_at_midnight() -> None:
    counters = DayCounters()
    assert counters.try_add("w", 10, 6, T0)
    assert not counters.try_add("w", 10, 5, T0)  # a batch of 5 does not fit in the 4 left
    assert counters.try_add("w", 10, 4, T0)
    assert not counters.try_add("w", 10, 1, T0)
    assert counters.used("w", T0) == 10
    assert counters.try_add("w", None, 1000, T0)  # no limit
    assert counters.try_add("w", 10, 1, T0 + 2.0)  # the next UTC day
    counters.forget_before(T0 + 2.0)
    assert counters.used("w", T0) == 0 and counters.used("w", T0 + 2.0) == 1
    assert not counters.try_add("z", 0, 1, T0)  # a budget of 0 refuses everything


def test_rate_refusal_for_keys_of_limited_workspaces_only() -> None:
    buckets = TokenBuckets()
    limited = ApiKey("k", "0" * 64, frozenset({Role.PREDICT}), Workspace("w", rate_limit=RateLimit(2, 1)))
    free = ApiKey("f", "1" * 64, frozenset({Role.PREDICT}), Workspace("v"))
    admin = ApiKey("a", "2" * 64, frozenset({Role.ADMIN}))
    assert rate_refusal(buckets, limited, 0.0) is None
    refusal = rate_refusal(buckets, limited, 0.0)
    assert refusal is not None and refusal.code == RATE_LIMITED and refusal.retry_after_s == pytest.approx(0.5)
    assert refusal.details == {"workspace": "w", "key_id": "k", "per_second": 2, "burst": 1}
    assert rate_refusal(buckets, limited, 0.5) is None
    assert all(rate_refusal(buckets, key, 0.0) is None for key in (free, admin) for _ in range(100))
