"""Horizon ranges: the ``*``/``<N``/``>=N & <M`` expressions rules match ``horizon_ms`` with.

Kept apart from validation because the snapshot buckets horizons by the same bounds and the
shadow check compares them; all three must agree on what a bound means.
"""

from __future__ import annotations

import functools
import math
import re

import attrs

from actors.core.rules.problems import _echo

_HORIZON_TERM_RE = re.compile(r"^\s*(<=|>=|<|>)\s*(\d+(?:\.\d+)?)\s*$")


def _fmt_number(value: float) -> str:
    """Render bounds without a spurious ``.0`` so labels read like the config."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


@attrs.frozen
class HorizonRange:
    """An interval of horizons in ms; ``None`` bounds are unbounded (``*`` has both None)."""

    lo: float | None
    lo_inclusive: bool
    hi: float | None
    hi_inclusive: bool
    text: str

    def contains(self, v: float) -> bool:
        """True when ``v`` lies in the interval (the reference semantics for buckets)."""
        lo, hi = self.lo, self.hi
        if lo is not None and not (v > lo or (self.lo_inclusive and v == lo)):
            return False
        return hi is None or v < hi or (self.hi_inclusive and v == hi)

    def covers(self, other: HorizonRange) -> bool:
        """True when every value in ``other`` is also in ``self`` (used for shadow warnings)."""
        return self._lo_covers(other) and self._hi_covers(other)

    def _lo_covers(self, other: HorizonRange) -> bool:
        if self.lo is None:
            return True
        if other.lo is None or other.lo < self.lo:
            return False
        return other.lo > self.lo or self.lo_inclusive or not other.lo_inclusive

    def _hi_covers(self, other: HorizonRange) -> bool:
        if self.hi is None:
            return True
        if other.hi is None or other.hi > self.hi:
            return False
        return other.hi < self.hi or self.hi_inclusive or not other.hi_inclusive

    def is_empty(self) -> bool:
        """True when no value can satisfy the range, which is always a config mistake."""
        if self.lo is None or self.hi is None:
            return False
        if self.lo != self.hi:
            return self.lo > self.hi
        return not (self.lo_inclusive and self.hi_inclusive)

    def points(self) -> tuple[float, ...]:
        """Finite bounds; the snapshot buckets horizons by these critical points."""
        return tuple(p for p in (self.lo, self.hi) if p is not None)


def _tighter_lo(cur: tuple[float | None, bool], new: tuple[float, bool]) -> tuple[float | None, bool]:
    """Intersect two lower bounds: the larger wins, exclusive wins a tie."""
    if cur[0] is None or new[0] > cur[0]:
        return new
    if new[0] == cur[0]:
        return (cur[0], cur[1] and new[1])
    return cur


def _tighter_hi(cur: tuple[float | None, bool], new: tuple[float, bool]) -> tuple[float | None, bool]:
    """Intersect two upper bounds: the smaller wins, exclusive wins a tie."""
    if cur[0] is None or new[0] < cur[0]:
        return new
    if new[0] == cur[0]:
        return (cur[0], cur[1] and new[1])
    return cur


def parse_horizon(expr: str) -> HorizonRange:
    """Parse ``*``, ``<N``, ``<=N``, ``>N``, ``>=N`` or an ``&`` conjunction of those.

    Raises ValueError for anything else, including empty ranges, because a rule that can
    never match is always a typo rather than intent.
    """
    if not isinstance(expr, str):
        raise ValueError(f"horizon expression must be a string, got {type(expr).__name__}")
    text = expr.strip()
    if text == "*":
        return HorizonRange(None, False, None, False, text)
    if not text:
        raise ValueError("empty horizon expression (use '*' for any horizon)")
    lo: tuple[float | None, bool] = (None, False)
    hi: tuple[float | None, bool] = (None, False)
    for term in text.split("&"):
        m = _HORIZON_TERM_RE.match(term)
        if m is None:
            raise ValueError(
                f"invalid horizon term {_echo(term.strip())} in {_echo(text)}: expected '*' alone or "
                "terms like '<N', '<=N', '>N', '>=N' (N a non-negative number) joined by '&'"
            )
        op, value = m.group(1), float(m.group(2))
        if op[0] == ">":
            lo = _tighter_lo(lo, (value, op == ">="))
        else:
            hi = _tighter_hi(hi, (value, op == "<="))
    rng = HorizonRange(lo[0], lo[1], hi[0], hi[1], text)
    if rng.is_empty():
        raise ValueError(f"horizon expression {_echo(text)} is an empty range and can never match")
    return rng


#: HorizonRange is immutable, so equal expressions share one parsed range (errors are not cached).
_cached_horizon = functools.lru_cache(maxsize=4096)(parse_horizon)
_ANY_HORIZON = parse_horizon("*")

_NO_LO = (-math.inf, -1)
_NO_HI = (math.inf, 2)


def _bound_keys(h: HorizonRange) -> tuple[tuple[float, int], tuple[float, int]]:
    """Bounds as tuples so ``a.covers(b)`` is ``a_lo <= b_lo and a_hi >= b_hi``.

    Lower bound: (value, 0 inclusive / 1 exclusive), unbounded sorts below every bound;
    upper bound: (value, 1 inclusive / 0 exclusive), unbounded sorts above every bound
    (including an infinite one).  This is exactly HorizonRange.covers.
    """
    lo = _NO_LO if h.lo is None else (h.lo, 0 if h.lo_inclusive else 1)
    hi = _NO_HI if h.hi is None else (h.hi, 1 if h.hi_inclusive else 0)
    return lo, hi
