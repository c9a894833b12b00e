"""The budget actor: keeps every workspace's budget lease topped up, off the request path.

Requests spend with ``BudgetLedger.try_spend`` (sync, no await). When a lease runs low the
ledger wakes this actor, which reserves the next chunk from the store in a worker thread
(Redis calls block). Only a request that finds no lease at all (first request of the day
for a workspace, or a refill that has not kept up) takes the slow path ``spend``, which
waits for the reservation, bounded. On the way out every unused reservation goes back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final

import attrs
import redis
import trio

from actors.storage.budget_store import NEED_LEASE, BudgetLedger, Lease, SpendResult

log = logging.getLogger("model_router.budget")

#: A spend that found no lease waits at most this long for one before it is refused.
SPEND_WAIT_S: Final = 0.5
#: Exhausted leases ask again this often (another replica may have given its share back).
RETRY_EXHAUSTED_S: Final = 1.0
MAX_BACKOFF_S: Final = 5.0
#: ``spend``'s answer when the store cannot be reached and this process holds no lease.
UNAVAILABLE: Final = "budget_unavailable"


@attrs.define
class BudgetActor:
    """The ledger plus what waiting needs: a wake-up event and per-workspace "answered" events."""

    ledger: BudgetLedger
    clock: Callable[[], float] = time.time
    wake: trio.Event = attrs.field(factory=trio.Event)
    answered: dict[str, trio.Event] = attrs.field(factory=dict)
    store_ok: bool = True
    reservations: int = 0

    def __attrs_post_init__(self) -> None:
        self.ledger.notify = self._notify  # a method, not wake.set: wake is replaced after each wake-up

    def _notify(self) -> None:
        self.wake.set()

    def try_spend(self, workspace: str, limit: int | None, n: int) -> SpendResult:
        """The hot path: ``ledger.try_spend`` at the actor's clock."""
        return self.ledger.try_spend(workspace, limit, n, self.clock())

    async def spend(self, workspace: str, limit: int | None, n: int, wait_s: float = SPEND_WAIT_S) -> SpendResult:
        """Spend, waiting (bounded) for a lease when there is none; ``budget_unavailable`` if none comes."""
        result = self.ledger.try_spend(workspace, limit, n, self.clock())
        if result.status != NEED_LEASE:
            return result
        with trio.move_on_after(wait_s):
            while result.status == NEED_LEASE:
                if not self.store_ok:
                    break
                event = self.answered.setdefault(workspace, trio.Event())
                await event.wait()
                result = self.ledger.try_spend(workspace, limit, n, self.clock())
        return result if result.status != NEED_LEASE else SpendResult(UNAVAILABLE)

    def _answer(self, workspace: str) -> None:
        event = self.answered.pop(workspace, None)
        if event is not None:
            event.set()

    async def _reserve_wanted(self) -> None:
        ledger = self.ledger
        while ledger.wanted:
            workspace = ledger.wanted.pop()
            request = ledger.refill_one(workspace, self.clock())
            if request is None:
                self._answer(workspace)
                continue
            _, day, limit, want = request
            try:
                # Shielded: a grant made in Redis must be credited (and so given back at shutdown),
                # never lost to a cancellation; the socket timeout bounds the wait.
                with trio.CancelScope(shield=True):
                    granted, reserved = await trio.to_thread.run_sync(
                        ledger.store.reserve, workspace, day, limit, want)
                    self.reservations += 1
                    ledger.apply_grant(workspace, day, limit, granted, reserved)
            except (redis.RedisError, OSError):
                ledger.wanted.add(workspace)
                raise
            self._answer(workspace)
            await trio.lowlevel.checkpoint()

    async def _release(self, leases: list[Lease]) -> None:
        for lease in leases:
            if lease.left:
                await trio.to_thread.run_sync(self.ledger.store.release, lease.workspace, lease.day, lease.left)
                lease.left = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Reserve what the ledger wants until cancelled; then give back every unused reservation."""
        backoff = 0.1
        last_retry = trio.current_time()
        task_status.started()
        try:
            while True:
                with trio.move_on_after(RETRY_EXHAUSTED_S):
                    await self.wake.wait()
                self.wake = trio.Event()
                if trio.current_time() - last_retry >= RETRY_EXHAUSTED_S:
                    last_retry = trio.current_time()
                    self.ledger.retry_exhausted()
                try:
                    await self._release(self.ledger.take_stale())
                    await self._reserve_wanted()
                except (redis.RedisError, OSError) as exc:
                    if self.store_ok:
                        log.warning("budget store unreachable (%s); spending only the leases held", exc)
                    self.store_ok = False
                    for workspace in list(self.answered):
                        self._answer(workspace)  # waiters give up now instead of at their bound
                    await trio.sleep(backoff)
                    backoff = min(backoff * 2, MAX_BACKOFF_S)
                    self.wake.set()
                    continue
                if not self.store_ok:
                    log.info("budget store reachable again")
                self.store_ok = True
                backoff = 0.1
        finally:
            with trio.move_on_after(2.0) as scope:
                scope.shield = True
                leases = self.ledger.close_all()
                try:
                    await self._release(leases)
                except (redis.RedisError, OSError) as exc:
                    unreturned = sum(lease.left for lease in leases)
                    log.warning("budget: %d reserved item(s) not returned at shutdown: %s", unreturned, exc)


async def run(actor: BudgetActor, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """The actor's entry point, like every actor's: keep budget leases topped up until cancelled."""
    await actor.run(task_status=task_status)
