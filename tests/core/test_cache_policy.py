"""LRU eviction under a count and a byte budget, never evicting pinned models (actors/core/cache_policy.py)."""

from __future__ import annotations

from actors.core.cache_policy import EvictionPlan, Resident, plan_evictions

BIG = 10**12


def test_empty_cache_fits_without_eviction() -> None:
    """Nothing resident: nothing to evict, and a model within budget fits."""
    assert plan_evictions([], incoming_bytes=10, max_models=1, max_bytes=10) == EvictionPlan((), True)


def test_empty_cache_incoming_larger_than_budget_does_not_fit() -> None:
    """An incoming model bigger than the byte budget never fits, even in an empty cache."""
    assert plan_evictions([], incoming_bytes=11, max_models=4, max_bytes=10) == EvictionPlan((), False)


def test_under_limits_evicts_nothing() -> None:
    """Room for one more: the plan is empty."""
    resident = [Resident("a", 1, 1.0), Resident("b", 1, 2.0)]
    plan = plan_evictions(resident, incoming_bytes=1, max_models=3, max_bytes=BIG)
    assert plan == EvictionPlan((), True)


def test_count_limit_evicts_least_recently_used_first() -> None:
    """At the count limit the oldest ``last_used`` goes, regardless of input order."""
    resident = [Resident("mid", 1, 5.0), Resident("old", 1, 1.0), Resident("new", 1, 9.0)]
    plan = plan_evictions(resident, incoming_bytes=1, max_models=3, max_bytes=BIG)
    assert plan == EvictionPlan(("old",), True)


def test_count_limit_evicts_several_in_lru_order() -> None:
    """Over the count by two: the two oldest go, oldest first."""
    resident = [Resident(k, 1, t) for k, t in [("c", 3.0), ("a", 1.0), ("d", 4.0), ("b", 2.0)]]
    plan = plan_evictions(resident, incoming_bytes=1, max_models=3, max_bytes=BIG)
    assert plan.evict == ("a", "b") and plan.fits


def test_byte_limit_evicts_until_the_incoming_fits() -> None:
    """Under the count limit but over bytes: LRU models go until the total fits."""
    resident = [Resident("a", 40, 1.0), Resident("b", 40, 2.0), Resident("c", 40, 3.0)]
    plan = plan_evictions(resident, incoming_bytes=50, max_models=100, max_bytes=100)
    assert plan == EvictionPlan(("a", "b"), True)


def test_byte_limit_stops_as_soon_as_it_fits() -> None:
    """Evicting a large old model can be enough; younger ones stay."""
    resident = [Resident("huge", 90, 1.0), Resident("small", 5, 2.0)]
    plan = plan_evictions(resident, incoming_bytes=10, max_models=100, max_bytes=100)
    assert plan.evict == ("huge",) and plan.fits


def test_both_limits_at_once() -> None:
    """Count satisfied after one eviction, bytes need a second: both limits are honoured."""
    resident = [Resident("a", 10, 1.0), Resident("b", 60, 2.0), Resident("c", 30, 3.0)]
    plan = plan_evictions(resident, incoming_bytes=30, max_models=3, max_bytes=70)
    # count: 4 -> after a: 3 OK; bytes: 130 -> 120 (a) -> 60 (b)
    assert plan == EvictionPlan(("a", "b"), True)


def test_pinned_are_never_evicted() -> None:
    """A pinned model is skipped even when it is the least recently used."""
    resident = [Resident("default", 1, 0.0, pinned=True), Resident("x", 1, 5.0), Resident("y", 1, 6.0)]
    plan = plan_evictions(resident, incoming_bytes=1, max_models=3, max_bytes=BIG)
    assert plan == EvictionPlan(("x",), True)


def test_fits_false_when_pinned_fill_the_count() -> None:
    """Pinned models alone fill the count: every unpinned one is evicted and it still does not fit."""
    resident = [Resident("p1", 1, 0.0, pinned=True), Resident("p2", 1, 0.0, pinned=True),
                Resident("u", 1, 9.0)]
    plan = plan_evictions(resident, incoming_bytes=1, max_models=2, max_bytes=BIG)
    assert plan.evict == ("u",)
    assert plan.fits is False


def test_fits_false_when_pinned_fill_the_bytes() -> None:
    """Pinned bytes alone exceed the budget: nothing pinned is evicted and ``fits`` is False."""
    resident = [Resident("p", 95, 0.0, pinned=True)]
    plan = plan_evictions(resident, incoming_bytes=10, max_models=10, max_bytes=100)
    assert plan == EvictionPlan((), False)


def test_ties_keep_input_order() -> None:
    """Equal ``last_used``: the stable sort evicts in the given order."""
    resident = [Resident("first", 1, 1.0), Resident("second", 1, 1.0)]
    plan = plan_evictions(resident, incoming_bytes=1, max_models=2, max_bytes=BIG)
    assert plan.evict == ("first",)


def test_accepts_any_iterable() -> None:
    """A generator of residents works like a list (it is consumed once)."""
    plan = plan_evictions((Resident(k, 1, float(i)) for i, k in enumerate("abc")),
                          incoming_bytes=1, max_models=2, max_bytes=BIG)
    assert plan == EvictionPlan(("a", "b"), True)
