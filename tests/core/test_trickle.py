"""The slow-head read policy (actors/core/trickle.py)."""

from __future__ import annotations

import itertools

from actors.core.trickle import (
    DELAY_SPREAD,
    FIRST_DELAY_S,
    FREE_READS,
    HEADER_TIMEOUT_SPREAD,
    MAX_DELAY_S,
    spread_timeout,
    trickle_delay,
)


def test_a_head_in_a_few_segments_is_never_delayed() -> None:
    assert [trickle_delay(n) for n in range(FREE_READS + 1)] == [0.0] * (FREE_READS + 1)


def test_the_delay_doubles_then_stays_at_the_cap() -> None:
    delays = [trickle_delay(n) for n in range(FREE_READS + 1, FREE_READS + 12)]
    assert delays[0] == FIRST_DELAY_S
    assert all(b == min(MAX_DELAY_S, 2 * a) for a, b in itertools.pairwise(delays))
    assert delays[-1] == MAX_DELAY_S
    assert trickle_delay(10_000) == MAX_DELAY_S


def test_a_trickling_head_is_read_at_most_about_once_a_second() -> None:
    """Over a 20 s header timeout a slow client costs tens of reads, not one per byte sent."""
    elapsed, reads = 0.0, 0
    while elapsed < 20.0:
        reads += 1
        elapsed += max(trickle_delay(reads), 0.1)  # the client's own pace: a byte every 100 ms
    assert reads < 40


def test_the_spread_scales_delays_by_half_either_way_and_only_lengthens_timeouts() -> None:
    """Wide enough that 500 heads opened together read in a window twice their nominal delay."""
    n = FREE_READS + 3
    assert DELAY_SPREAD == 0.5
    assert trickle_delay(n, 0.0) == 0.5 * trickle_delay(n)
    assert 1.45 * trickle_delay(n) < trickle_delay(n, 0.999) < 1.5 * trickle_delay(n)
    assert trickle_delay(FREE_READS, 0.9) == 0.0
    assert spread_timeout(20.0, 0.0) == 20.0
    assert 20.0 < spread_timeout(20.0, 0.999) < 20.0 * (1 + HEADER_TIMEOUT_SPREAD) == 25.0
