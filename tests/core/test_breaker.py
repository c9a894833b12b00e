"""Per-version circuit breaker as pure functions over explicit time (actors/core/breaker.py)."""

from __future__ import annotations

from actors.core.breaker import (
    STATE_CODES,
    Breaker,
    BreakerSettings,
    allow,
    on_failure,
    on_success,
    release_probe,
)

S = BreakerSettings(failure_threshold=3, open_seconds=10.0, half_open_probes=1)


def _open_at(now: float, s: BreakerSettings = S) -> Breaker:
    """Drive a fresh breaker open with ``failure_threshold`` failures at ``now``."""
    b = Breaker()
    for _ in range(s.failure_threshold):
        b = on_failure(b, now, s)
    return b


def test_defaults_and_state_codes() -> None:
    """A new breaker is closed; gauge codes order closed < half_open < open."""
    assert Breaker() == Breaker(state="closed", consecutive_failures=0, opened_at=None, probes_in_flight=0)
    assert BreakerSettings() == BreakerSettings(failure_threshold=5, open_seconds=30.0, half_open_probes=1)
    assert STATE_CODES == {"closed": 0, "half_open": 1, "open": 2}


def test_closed_allows_and_is_unchanged() -> None:
    """Closed lets everything through without changing state."""
    b = Breaker(consecutive_failures=2)
    assert allow(b, 0.0, S) == (True, b)


def test_failures_below_threshold_stay_closed_and_success_resets() -> None:
    """Failures count up; a success in between resets the count (they must be consecutive)."""
    b = on_failure(Breaker(), 1.0, S)
    b = on_failure(b, 2.0, S)
    assert b == Breaker(consecutive_failures=2)
    b = on_success(b, 3.0, S)
    assert b == Breaker()
    b = on_failure(on_failure(b, 4.0, S), 5.0, S)
    assert b.state == "closed"


def test_full_cycle_closed_open_half_open_closed() -> None:
    """Threshold opens; requests are refused until open_seconds; one probe; its success closes."""
    b = _open_at(100.0)
    assert b.state == "open"
    assert b.opened_at == 100.0
    assert b.consecutive_failures == 3

    allowed, b2 = allow(b, 109.999, S)
    assert not allowed
    assert b2 == b

    allowed, b = allow(b, 110.0, S)
    assert allowed
    assert b.state == "half_open"
    assert b.probes_in_flight == 1

    b = on_success(b, 110.5, S)
    assert b == Breaker()
    assert allow(b, 110.6, S) == (True, b)


def test_half_open_failure_reopens_with_fresh_timer() -> None:
    """A failed probe re-opens the breaker; the open period restarts from the failure."""
    b = _open_at(0.0)
    _, b = allow(b, 10.0, S)
    b = on_failure(b, 12.0, S)
    assert b.state == "open"
    assert b.opened_at == 12.0
    assert b.probes_in_flight == 0
    assert not allow(b, 21.0, S)[0]
    allowed, b = allow(b, 22.0, S)
    assert allowed
    assert b.state == "half_open"


def test_probe_limit() -> None:
    """Half open admits only ``half_open_probes`` concurrent probes."""
    s = BreakerSettings(failure_threshold=1, open_seconds=5.0, half_open_probes=2)
    b = on_failure(Breaker(), 0.0, s)
    first, b = allow(b, 5.0, s)
    second, b = allow(b, 5.1, s)
    third, b3 = allow(b, 5.2, s)
    assert (first, second, third) == (True, True, False)
    assert b.probes_in_flight == 2
    assert b3 == b


def test_release_probe_frees_a_slot_with_floor_zero() -> None:
    """A probe that ended without a result frees its slot; releasing never goes negative."""
    b = _open_at(0.0)
    _, b = allow(b, 10.0, S)
    assert not allow(b, 10.1, S)[0]
    b = release_probe(b)
    assert b.probes_in_flight == 0
    assert b.state == "half_open"
    allowed, b = allow(b, 10.2, S)
    assert allowed
    assert b.probes_in_flight == 1
    assert release_probe(release_probe(b)).probes_in_flight == 0


def test_open_ignores_late_results() -> None:
    """Results of requests admitted before opening do not change an open breaker."""
    b = _open_at(0.0)
    assert on_failure(b, 1.0, S) == b
    assert on_success(b, 1.0, S) == b


def test_open_without_timestamp_allows_a_probe() -> None:
    """A malformed open breaker (no opened_at) does not stay shut forever."""
    allowed, b = allow(Breaker(state="open"), 0.0, S)
    assert allowed
    assert b.state == "half_open"
