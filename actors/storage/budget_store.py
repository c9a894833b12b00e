"""The daily prediction budget: one counter per workspace and UTC day, spent through leases.

A request may not wait for Redis (the access check has a few microseconds and never awaits),
yet replicas must never overspend together. So each process *leases* part of the budget:
a Lua script reserves a chunk atomically, never more than what is left, and returns what it
granted; the process spends that chunk locally with plain integer arithmetic (``try_spend``),
asks for the next chunk in the background when it runs low (``wanted``; actors/budget.py
does the asking), and gives back what it did not use at day change and at shutdown
(``release``). The counter in the store is therefore "reserved": granted to some process,
spent or about to be. The sum of what every process spent can never exceed the limit.

Without Redis, ``LocalBudgetStore`` plays the same role inside one process.

The ledger is touched only from the trio thread (``try_spend``, ``apply_grant``); the store
calls are blocking and run in worker threads.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Final, Protocol

import attrs
import redis

from actors.core.access import BUDGET_EXHAUSTED, Refusal
from actors.core.rate_limit import SECONDS_PER_DAY, day_label, iso_utc, next_reset, utc_day

KEY_PREFIX: Final = "model_router:budget"
KEY_TTL_S: Final = 3 * 86_400
MIN_CHUNK: Final = 100
#: A chunk covers about this many seconds of the workspace's recent spending rate.
CHUNK_SECONDS: Final = 2.0
#: Ask for more when the local lease falls below this share of the last chunk.
LOW_WATER: Final = 0.5

OK: Final = "ok"
EXHAUSTED: Final = BUDGET_EXHAUSTED
NEED_LEASE: Final = "need_lease"

# KEYS[1] counter; ARGV limit, want, ttl. Grants min(want, limit - reserved), never below 0.
RESERVE_LUA: Final = """
local reserved = tonumber(redis.call('GET', KEYS[1]) or '0')
local limit = tonumber(ARGV[1])
local want = tonumber(ARGV[2])
local left = limit - reserved
if left <= 0 or want <= 0 then
  return {0, reserved}
end
local grant = math.min(want, left)
reserved = redis.call('INCRBY', KEYS[1], grant)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
return {grant, reserved}
"""

# KEYS[1] counter; ARGV amount. Gives back an unused reservation, never below 0.
RELEASE_LUA: Final = """
local reserved = tonumber(redis.call('GET', KEYS[1]) or '0')
local back = math.min(tonumber(ARGV[1]), reserved)
if back <= 0 then
  return reserved
end
return redis.call('DECRBY', KEYS[1], back)
"""


class BudgetStore(Protocol):
    """Where reservations live: Redis (shared by replicas) or this process's memory."""

    def reserve(self, workspace: str, day: int, limit: int, want: int) -> tuple[int, int]:
        """Grant up to ``want`` of what is left under ``limit``: ``(granted, reserved_total_after)``."""
        ...

    def release(self, workspace: str, day: int, amount: int) -> int:
        """Give back ``amount`` unused; returns the reserved total after."""
        ...

    def reserved(self, workspace: str, day: int) -> int:
        ...


def budget_key(workspace: str, day: int) -> str:
    return f"{KEY_PREFIX}:{workspace}:{day_label(day)}"


@attrs.define
class LocalBudgetStore:
    """Reservations in this process only (no Redis configured); thread-safe.

    Bounded like the Redis keys' TTL: once a new UTC day is reserved, counters older than
    yesterday (a lease may still be released into yesterday) are dropped.
    """

    counters: dict[tuple[str, int], int] = attrs.field(factory=dict)
    lock: threading.Lock = attrs.field(factory=threading.Lock)
    newest_day: int = -1

    def reserve(self, workspace: str, day: int, limit: int, want: int) -> tuple[int, int]:
        with self.lock:
            if day > self.newest_day:
                self.newest_day = day
                for key in [k for k in self.counters if k[1] < day - 1]:
                    del self.counters[key]
            reserved = self.counters.get((workspace, day), 0)
            grant = max(0, min(want, limit - reserved))
            self.counters[(workspace, day)] = reserved + grant
            return grant, reserved + grant

    def release(self, workspace: str, day: int, amount: int) -> int:
        with self.lock:
            reserved = self.counters.get((workspace, day), 0)
            reserved -= max(0, min(amount, reserved))
            self.counters[(workspace, day)] = reserved
            return reserved

    def reserved(self, workspace: str, day: int) -> int:
        with self.lock:
            return self.counters.get((workspace, day), 0)

    def seed(self, workspace: str, day: int, used: int) -> None:
        """Start the day at ``used`` (today's predictions from the usage file), so a restart
        does not hand a workspace its whole budget again."""
        with self.lock:
            self.counters[(workspace, day)] = max(self.counters.get((workspace, day), 0), used)


@attrs.define
class RedisBudgetStore:
    """Reservations in Redis, shared by every process and replica; atomic through Lua scripts."""

    client: redis.Redis
    _reserve: Callable[..., object] = attrs.field(init=False)
    _release: Callable[..., object] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._reserve = self.client.register_script(RESERVE_LUA)
        self._release = self.client.register_script(RELEASE_LUA)

    @classmethod
    def from_url(cls, url: str) -> RedisBudgetStore:
        return cls(redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=1.0))

    def reserve(self, workspace: str, day: int, limit: int, want: int) -> tuple[int, int]:
        granted, reserved = self._reserve(keys=[budget_key(workspace, day)], args=[limit, want, KEY_TTL_S])  # type: ignore[misc]
        return int(granted), int(reserved)

    def release(self, workspace: str, day: int, amount: int) -> int:
        return int(self._release(keys=[budget_key(workspace, day)], args=[amount]))  # type: ignore[arg-type]

    def reserved(self, workspace: str, day: int) -> int:
        return int(self.client.get(budget_key(workspace, day)) or 0)


@attrs.frozen
class SpendResult:
    """``ok``; ``budget_exhausted`` (with the reset time, limit, used); or ``need_lease``.

    ``need_lease`` means this process holds no lease for today yet (start, day change) or
    the background refill has not kept up: the caller awaits ``BudgetActor.spend`` (the slow
    path) instead of refusing.
    """

    status: str
    reset_at: float = 0.0
    limit: int = 0
    used: int = 0

    @property
    def ok(self) -> bool:
        return self.status == OK

    def refusal(self, workspace: str) -> Refusal | None:
        """The ``budget_exhausted`` refusal (reset time, limit, used) for this result, or None."""
        if self.status != EXHAUSTED:
            return None
        return Refusal(EXHAUSTED, f"daily prediction budget of workspace {workspace!r} is spent",
                       {"workspace": workspace, "limit": self.limit, "used": self.used,
                        "reset_at": iso_utc(self.reset_at)}, reset_at=self.reset_at)


SPENT: Final = SpendResult(OK)
_NEED: Final = SpendResult(NEED_LEASE)


@attrs.define
class Lease:
    """This process's share of one workspace's budget for one UTC day."""

    workspace: str
    day: int
    limit: int
    left: int = 0                # granted and not yet spent
    spent: int = 0               # spent by this process today
    last_chunk: int = 0
    store_left: int | None = None  # what the store had left after the last grant
    exhausted: bool = False      # the store granted nothing: nothing left anywhere
    window_start: float = 0.0    # rate estimate: items spent since window_start
    window_spent: int = 0
    rate: float = 0.0
    need: int = 0                # the largest spend refused for want of a lease (a big batch)
    low_water: float = 0.0       # ask for more below this (LOW_WATER of the last chunk)
    day_start: float = attrs.field(init=False)  # the day as epoch bounds: two float compares per spend
    day_end: float = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.day_start = float(self.day * SECONDS_PER_DAY)
        self.day_end = self.day_start + SECONDS_PER_DAY


@attrs.define
class BudgetLedger:
    """Spends leases locally (sync, O(1)); tells its refill actor what to reserve next.

    ``notify`` is called (from the trio thread) when a workspace lands in ``wanted``; the
    actor sets it to wake itself. ``try_spend`` is the whole hot path.
    """

    store: BudgetStore
    leases: dict[str, Lease] = attrs.field(factory=dict)
    wanted: set[str] = attrs.field(factory=set)
    stale: list[Lease] = attrs.field(factory=list)
    notify: Callable[[], None] = lambda: None
    min_chunk: int = MIN_CHUNK

    def try_spend(self, workspace: str, limit: int | None, n: int, now: float) -> SpendResult:
        """Spend ``n`` items of ``workspace``'s budget for ``now``'s UTC day, without waiting."""
        if limit is None:
            return SPENT
        lease = self.leases.get(workspace)
        if lease is None or not lease.day_start <= now < lease.day_end or lease.limit != limit:
            self._renew(workspace, limit, now, lease)
            return _NEED
        if lease.left >= n:
            lease.left -= n
            lease.spent += n
            lease.window_spent += n
            if lease.left < lease.low_water and not lease.exhausted and workspace not in self.wanted:
                self.wanted.add(workspace)
                self.notify()
            return SPENT
        lease.need = max(lease.need, n)
        if lease.exhausted:
            return SpendResult(EXHAUSTED, next_reset(now), limit, lease.limit - (lease.store_left or 0) - lease.left)
        if workspace not in self.wanted:
            self.wanted.add(workspace)
            self.notify()
        return _NEED

    def _renew(self, workspace: str, limit: int, now: float, old: Lease | None) -> None:
        """A new day (or a new limit): the old lease's unused part goes back, a new one is wanted."""
        if old is not None and old.left:
            self.stale.append(old)
        day = utc_day(now)
        spent = old.spent if old is not None and old.day == day else 0
        self.leases[workspace] = Lease(workspace, day, limit, spent=spent, window_start=now)
        self.wanted.add(workspace)
        self.notify()

    def chunk_for(self, lease: Lease, now: float) -> int:
        """How much to ask for: about CHUNK_SECONDS of recent spending, at least ``min_chunk``,
        and near the end at most half of what the store has left (so replicas share the tail)."""
        elapsed = now - lease.window_start
        if elapsed >= 1.0:
            lease.rate = lease.window_spent / elapsed
            lease.window_start, lease.window_spent = now, 0
        want = max(self.min_chunk, int(lease.rate * CHUNK_SECONDS))
        if lease.store_left is not None and 0 < lease.store_left < 4 * want:
            want = max(1, (lease.store_left + 1) // 2)
        want = max(want, lease.need - lease.left)
        lease.need = 0
        return min(want, lease.limit)

    def apply_grant(self, workspace: str, day: int, limit: int, granted: int, reserved: int) -> None:
        """Credit a grant the store made; a grant for a lease that is gone meanwhile goes to ``stale``."""
        lease = self.leases.get(workspace)
        if lease is None or lease.day != day or lease.limit != limit:
            if granted:
                self.stale.append(Lease(workspace, day, limit, left=granted))
            return
        lease.left += granted
        lease.last_chunk = max(granted, 1)
        lease.low_water = lease.last_chunk * LOW_WATER
        lease.store_left = max(0, limit - reserved)
        lease.exhausted = granted == 0

    def take_stale(self) -> list[Lease]:
        stale, self.stale = self.stale, []
        return stale

    def close_all(self) -> list[Lease]:
        """Every lease with something unused (shutdown): their ``left`` goes back to the store."""
        leases = [Lease(lease.workspace, lease.day, lease.limit, left=lease.left)
                  for lease in self.leases.values() if lease.left]
        for lease in self.leases.values():
            lease.left = 0
            lease.exhausted = True  # nothing more is spent here after shutdown began
        return leases + self.take_stale()

    def spent_today(self, workspace: str, now: float) -> int:
        lease = self.leases.get(workspace)
        return lease.spent if lease is not None and lease.day == utc_day(now) else 0

    def refill_one(self, workspace: str, now: float) -> tuple[str, int, int, int] | None:
        """What ``workspace``'s lease should reserve now: ``(workspace, day, limit, want)`` or None."""
        lease = self.leases.get(workspace)
        if lease is None:
            return None
        return workspace, lease.day, lease.limit, self.chunk_for(lease, now)

    def retry_exhausted(self) -> None:
        """Ask again for exhausted leases: another replica may have given its share back."""
        for workspace, lease in self.leases.items():
            if lease.exhausted and workspace not in self.wanted:
                self.wanted.add(workspace)  # stays exhausted (refusing fast) until a grant arrives
        if self.wanted:
            self.notify()
