"""A circuit breaker per model version, as pure functions over an immutable state.

Why: a model version that keeps failing (corrupt file, runtime errors, timeouts) should stop
receiving requests quickly, so callers fall back to another version instead of queueing
behind a broken one. After ``open_seconds`` a limited number of *probe* requests test it
again; one success closes the breaker, one failure re-opens it for another period.

States::

    closed --(failure_threshold consecutive failures)--> open
    open --(open_seconds elapsed, next allow() is a probe)--> half_open
    half_open --(probe succeeds)--> closed
    half_open --(probe fails)--> open (timer restarts)

The owning actor keeps one :class:`Breaker` per version and replaces it with each
function's result; time is passed in as ``now`` so tests (and trio's autojump clock)
control it completely.
"""

from __future__ import annotations

import attrs

BREAKER_STATES = ("closed", "open", "half_open")
STATE_CODES = {"closed": 0, "half_open": 1, "open": 2}


@attrs.frozen
class BreakerSettings:
    """Thresholds: failures in a row to open, seconds to stay open, concurrent probes when half open."""

    failure_threshold: int = 5
    open_seconds: float = 30.0
    half_open_probes: int = 1


@attrs.frozen
class Breaker:
    """Breaker state for one model version."""

    state: str = "closed"
    consecutive_failures: int = 0
    opened_at: float | None = None
    probes_in_flight: int = 0


def _opened(now: float, failures: int) -> Breaker:
    """An open breaker whose timer starts at ``now``."""
    return Breaker(state="open", consecutive_failures=failures, opened_at=now, probes_in_flight=0)


def allow(b: Breaker, now: float, s: BreakerSettings) -> tuple[bool, Breaker]:
    """Whether a request may go to this version now, and the breaker to keep afterwards.

    An allowed request while half open counts as a probe: the caller must later report
    :func:`on_success`, :func:`on_failure` or :func:`release_probe` so the slot frees up.
    """
    if b.state == "closed":
        return True, b
    if b.state == "open":
        # An open breaker without a timestamp (hand-built, or persisted badly) must not stay shut forever.
        if b.opened_at is None or now - b.opened_at >= s.open_seconds:
            return True, attrs.evolve(b, state="half_open", probes_in_flight=1)
        return False, b
    if b.probes_in_flight < s.half_open_probes:
        return True, attrs.evolve(b, probes_in_flight=b.probes_in_flight + 1)
    return False, b


def on_success(b: Breaker, now: float, s: BreakerSettings) -> Breaker:
    """A request succeeded: closed resets its failure count; a successful probe closes the breaker.

    A success reported while open (a request admitted before the breaker opened) changes
    nothing: the open period still has to elapse before the version is trusted again.
    """
    if b.state == "open":
        return b
    return Breaker()


def on_failure(b: Breaker, now: float, s: BreakerSettings) -> Breaker:
    """A request failed: count it, open at the threshold; a failed probe re-opens with a fresh timer."""
    if b.state == "closed":
        failures = b.consecutive_failures + 1
        if failures >= s.failure_threshold:
            return _opened(now, failures)
        return attrs.evolve(b, consecutive_failures=failures)
    if b.state == "half_open":
        return _opened(now, b.consecutive_failures + 1)
    return b


def release_probe(b: Breaker) -> Breaker:
    """A probe ended without a verdict (cancelled, or rejected before reaching the model): free its slot."""
    return attrs.evolve(b, probes_in_flight=max(b.probes_in_flight - 1, 0))
