"""Token buckets per key and the UTC-day arithmetic of daily budgets.

Pure and O(1): a bucket is a ``(tokens, stamp)`` tuple replaced in a dict on every take,
so the per-request cost is one lookup, a few float operations and one store, with no
await and no lock (the trio thread is the only writer). Time is passed in as ``now``
(seconds, any monotonic or wall clock, as long as one caller uses one clock).
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Final

import attrs

from actors.core.access import RATE_LIMITED, ApiKey, RateLimit, Refusal

SECONDS_PER_DAY: Final = 86_400
#: Keys idle this long are dropped by ``prune`` (a full bucket carries no state worth keeping).
IDLE_FORGET_S: Final = 600.0
_ALLOWED: Final = (True, 0.0)


def bucket_take(tokens: float, stamp: float, per_second: float, burst: float, now: float, n: float = 1
                ) -> tuple[float, float, bool, float]:
    """One take from a bucket: ``(tokens, stamp, allowed, retry_after_s)`` after it.

    A refused take leaves the tokens as refilled and says how long until ``n`` are there;
    ``n`` above ``burst`` can never pass and gets ``math.inf``.
    """
    if now > stamp:
        tokens = min(burst, tokens + (now - stamp) * per_second)
        stamp = now
    if tokens >= n:
        return tokens - n, stamp, True, 0.0
    if n > burst:
        return tokens, stamp, False, math.inf
    return tokens, stamp, False, (n - tokens) / per_second


@attrs.define
class TokenBuckets:
    """One bucket per key id; a new key starts full (``burst`` tokens)."""

    state: dict[str, tuple[float, float]] = attrs.field(factory=dict)

    def take(self, key_id: str, limit: RateLimit, now: float, n: float = 1) -> tuple[bool, float]:
        """``(allowed, retry_after_s)``: 0.0 when allowed, else seconds until ``n`` tokens are there."""
        # bucket_take inlined: this runs on every request and a call costs as much as the arithmetic.
        state = self.state.get(key_id)
        burst = limit.burst
        if state is None:
            tokens, stamp = burst, now
        else:
            tokens, stamp = state
            if now > stamp:
                tokens += (now - stamp) * limit.per_second
                if tokens > burst:
                    tokens = burst
                stamp = now
        if tokens >= n:
            self.state[key_id] = (tokens - n, stamp)
            return _ALLOWED
        self.state[key_id] = (tokens, stamp)
        return False, (math.inf if n > burst else (n - tokens) / limit.per_second)

    def prune(self, now: float, idle_s: float = IDLE_FORGET_S) -> int:
        """Forget keys not seen for ``idle_s`` (revoked keys, rotated tokens); returns how many."""
        stale = [key for key, (_, stamp) in self.state.items() if now - stamp > idle_s]
        for key in stale:
            del self.state[key]
        return len(stale)


def rate_refusal(buckets: TokenBuckets, key: ApiKey, now: float, n: float = 1) -> Refusal | None:
    """``rate_limited`` (with ``retry_after_s``) when ``key``'s workspace bucket is empty, else None.

    Keys without a workspace or whose workspace has no rate limit are never limited.
    """
    workspace = key.workspace
    if workspace is None or workspace.rate_limit is None:
        return None
    allowed, retry = buckets.take(key.id, workspace.rate_limit, now, n)
    if allowed:
        return None
    return Refusal(RATE_LIMITED, f"rate limit of workspace {workspace.name!r} reached",
                   {"workspace": workspace.name, "key_id": key.id, "per_second": workspace.rate_limit.per_second,
                    "burst": workspace.rate_limit.burst}, retry_after_s=retry)


def retry_after_header(retry_after_s: float) -> int:
    """Whole seconds for a ``Retry-After`` header: at least 1, rounded up."""
    return max(1, math.ceil(retry_after_s)) if math.isfinite(retry_after_s) else SECONDS_PER_DAY


# --------------------------------------------------------------------------- UTC days and budgets


def utc_day(now: float) -> int:
    """Days since the epoch of the UTC day ``now`` (epoch seconds) falls in."""
    return int(now // SECONDS_PER_DAY)


def day_label(day: int) -> str:
    """``2026-12-02`` for a day index: names Redis keys and usage files."""
    return datetime.fromtimestamp(day * SECONDS_PER_DAY, tz=timezone.utc).strftime("%Y-%m-%d")


def next_reset(now: float) -> float:
    """Epoch seconds of the next UTC midnight after ``now``: when daily budgets start over."""
    return float((utc_day(now) + 1) * SECONDS_PER_DAY)


def iso_utc(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@attrs.define
class DayCounters:
    """Predictions counted per (workspace, UTC day); a batch of n items counts n.

    The per-process view of a budget: with Redis the shared ledger decides, this counts what
    the process itself let through (and serves the budget check when there is no Redis).
    """

    counts: dict[tuple[str, int], int] = attrs.field(factory=dict)

    def used(self, workspace: str, now: float) -> int:
        return self.counts.get((workspace, utc_day(now)), 0)

    def try_add(self, workspace: str, limit: int | None, n: int, now: float) -> bool:
        """Count ``n`` items if they fit under ``limit`` (None: no limit); False leaves the count as is."""
        key = (workspace, utc_day(now))
        used = self.counts.get(key, 0)
        if limit is not None and used + n > limit:
            return False
        self.counts[key] = used + n
        return True

    def forget_before(self, now: float) -> None:
        """Drop days before today (called now and then; old days are never asked again)."""
        today = utc_day(now)
        for key in [k for k in self.counts if k[1] < today]:
            del self.counts[key]
