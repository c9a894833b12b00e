"""Smooth weighted round robin over a remote version's endpoints."""

from __future__ import annotations

from collections import Counter

import pytest

from actors.core.endpoint_pick import failover_order, pick


def run(weights: list[float], eligible: list[bool], n: int) -> list[int | None]:
    credit: tuple[float, ...] = (0.0,) * len(weights)
    chosen = []
    for _ in range(n):
        index, credit = pick(weights, credit, eligible)
        chosen.append(index)
    return chosen


def test_weights_split_exactly_and_smoothly() -> None:
    picks = run([3.0, 1.0], [True, True], 8)
    assert picks == [0, 0, 1, 0, 0, 0, 1, 0]
    assert Counter(run([5.0, 1.0, 2.0], [True] * 3, 800)) == {0: 500, 1: 100, 2: 200}


def test_ineligible_endpoints_get_nothing_and_lose_their_credit() -> None:
    assert set(run([3.0, 1.0, 1.0], [True, False, True], 40)) == {0, 2}
    index, credit = pick([1.0, 1.0], (5.0, -3.0), [False, True])
    assert index == 1 and credit == (0.0, -3.0 + 1.0 - 1.0)


def test_nothing_eligible_picks_none() -> None:
    assert pick([1.0, 2.0], (1.0, 1.0), [False, False]) == (None, (0.0, 0.0))


def test_lengths_must_agree() -> None:
    with pytest.raises(ValueError):
        pick([1.0], (0.0, 0.0), [True])


def test_failover_tries_the_pick_then_the_heaviest_eligible() -> None:
    assert failover_order([1.0, 3.0, 2.0, 5.0], [True, True, True, False], 0) == (0, 1, 2)
    assert failover_order([2.0, 2.0, 2.0], [True, True, True], 1) == (1, 0, 2)
