"""Weighted load balancing over a remote version's endpoints (pure: no clock, no I/O).

Why smooth weighted round robin (nginx's algorithm) and not weighted random: it is
deterministic, spreads an endpoint's turns evenly (weights 3:1 give A A B A, never A A A
then a burst of B) and needs no random source, so tests assert exact splits. Only the
eligible endpoints (health check up, breaker admitting a call) take part; an endpoint
that comes back starts from zero credit instead of bursting with what it saved while down.

The caller tries the picked endpoint first and, if that call fails, the other eligible
ones in ``failover_order`` (heaviest first), so one endpoint dying costs no request.
"""

from __future__ import annotations

from collections.abc import Sequence


def pick(weights: Sequence[float], credit: Sequence[float],
         eligible: Sequence[bool]) -> tuple[int | None, tuple[float, ...]]:
    """The next endpoint (None when none is eligible) and the credit to keep for the next pick.

    Each eligible endpoint gains its weight; the one with most credit wins and pays the
    total eligible weight. Ineligible endpoints are reset to zero credit.
    """
    if not (len(weights) == len(credit) == len(eligible)):
        raise ValueError("weights, credit and eligible must have the same length")
    total = sum(w for w, ok in zip(weights, eligible, strict=True) if ok)
    if total <= 0:
        return None, tuple(0.0 for _ in weights)
    updated = [c + w if ok else 0.0 for w, c, ok in zip(weights, credit, eligible, strict=True)]
    chosen = max((i for i, ok in enumerate(eligible) if ok), key=lambda i: (updated[i], -i))
    updated[chosen] -= total
    return chosen, tuple(updated)


def failover_order(weights: Sequence[float], eligible: Sequence[bool], first: int) -> tuple[int, ...]:
    """``first``, then the other eligible endpoints, heaviest first (ties by position)."""
    rest = sorted((i for i, ok in enumerate(eligible) if ok and i != first), key=lambda i: (-weights[i], i))
    return (first, *rest)
