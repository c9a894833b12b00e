"""The bounded index of predictions feedback can refer to (actors/core/feedback_index.py)."""

from __future__ import annotations

import gc
import time
import tracemalloc

import pytest

from actors.core.feedback_index import FeedbackIndex, FeedbackTarget

LABELS = ("SELL", "HOLD", "BUY")


def _cid(i: int) -> str:
    """Shaped like a generated correlation id: 12 hex digits of prefix, 20 of counter."""
    return f"0123456789ab{i:020x}"


def _fill(index: FeedbackIndex, start: int, count: int, *, version: str = "1", batch: int = 32) -> None:
    for first in range(start, start + count, batch):
        rows = [(_cid(i), LABELS[i % 3]) for i in range(first, min(first + batch, start + count))]
        index.add("tlob", version, LABELS, None, rows)


def test_lookup_gives_who_answered_what_it_said_and_the_valid_outcomes() -> None:
    index = FeedbackIndex(limit=10)
    index.add("tlob", "2", LABELS, "op1", [("a", "BUY"), ("b", "SELL")])
    assert index.get("a") == FeedbackTarget("tlob", "2", "BUY", LABELS, "op1")
    assert index.get("b") is not None and index.get("b").label == "SELL"  # type: ignore[union-attr]
    assert index.get("nobody") is None
    index.forget("a")
    assert index.get("a") is None and len(index) == 1


def test_never_more_than_the_limit_and_the_newest_are_kept() -> None:
    """Past the limit the oldest go a generation at a time: between 7/8 of the limit and all of it stay."""
    index = FeedbackIndex(limit=1000)
    for step in range(50):
        _fill(index, step * 97, 97)
        assert len(index) <= 1000
        if (step + 1) * 97 >= 1000:
            assert len(index) >= 1000 - 1000 // 8
    total = 50 * 97
    kept = [int(cid[12:], 16) for cid in index]
    assert kept == list(range(total - len(index), total))  # exactly the most recent, oldest first
    assert index.get(_cid(total - 875)) is not None and index.get(_cid(total - 1001)) is None


@pytest.mark.parametrize("limit", [1, 2, 7, 9, 100])
def test_small_limits_keep_exactly_their_bound_at_most(limit: int) -> None:
    index = FeedbackIndex(limit=limit)
    for i in range(5 * limit):
        index.add("tlob", "1", LABELS, None, [(_cid(i), "BUY")])
        assert len(index) <= limit
        assert index.get(_cid(i)) is not None  # the newest is always there
    assert len(index) >= limit - max(1, limit // 8)


def test_entries_share_one_target_per_version_label_and_operation() -> None:
    """An entry is only a key and a reference: equal targets are the same object."""
    index = FeedbackIndex(limit=100)
    _fill(index, 0, 30)
    _fill(index, 30, 30, version="2")
    targets = {id(index.get(cid)) for cid in index}
    assert len(targets) == 6  # 2 versions x 3 labels
    assert index.get(_cid(0)) is index.get(_cid(3))


def test_a_repeated_correlation_id_answers_with_its_newest_prediction() -> None:
    index = FeedbackIndex(limit=16)
    index.add("tlob", "1", LABELS, None, [("a", "BUY"), ("b", "BUY"), ("c", "BUY")])
    index.add("tlob", "2", LABELS, None, [("a", "SELL")])
    assert index.get("a") == FeedbackTarget("tlob", "2", "SELL", LABELS, None)
    index.forget("a")
    assert index.get("a") is None  # the shadowed older entry goes too


def test_resize_drops_the_oldest_at_once_and_zero_keeps_none() -> None:
    index = FeedbackIndex(limit=100)
    _fill(index, 0, 100)
    index.resize(10)
    assert len(index) <= 10 and index.get(_cid(99)) is not None and index.get(_cid(0)) is None
    _fill(index, 100, 25, batch=1)
    assert len(index) <= 10 and index.get(_cid(124)) is not None
    index.resize(0)
    assert len(index) == 0
    _fill(index, 100, 5)
    assert len(index) == 0


def test_a_full_index_costs_little_memory_per_entry() -> None:
    """~115 bytes an entry once it has churned at its bound, key string included (an OrderedDict of
    5-tuples took ~250, a single dict evicting its oldest ~160)."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        index = FeedbackIndex(limit=40_000)
        _fill(index, 0, 160_000)
        per_entry = (tracemalloc.get_traced_memory()[0] - before) / len(index)
    finally:
        tracemalloc.stop()
    assert len(index) >= 35_000
    assert per_entry < 140, per_entry


def test_eviction_stays_cheap_when_full() -> None:
    """Adding past the limit costs about what adding below it does.

    Dropping the first key of a dict one at a time rescans the deleted prefix (quadratic: ~70 µs
    a prediction at 100,000 entries, 17x the cost of filling measured); generations drop whole
    dicts. Compared with the fill on the same machine, so a busy machine slows both alike.
    """
    index = FeedbackIndex(limit=100_000)
    started = time.perf_counter()
    _fill(index, 0, 100_000, batch=1)  # single predictions: one add each
    filling = time.perf_counter() - started
    started = time.perf_counter()
    _fill(index, 100_000, 100_000, batch=1)
    evicting = time.perf_counter() - started
    assert evicting < 3 * filling, (evicting, filling)
    assert len(index) <= 100_000
