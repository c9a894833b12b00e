"""Where a model call runs, so a hanging model cannot outlive the request's deadline.

A call that runs inline on the event loop cannot be cancelled: while ``predict`` runs,
no other task runs, and no timer fires. A call in a worker thread can be abandoned at
the deadline (``trio.to_thread.run_sync(abandon_on_cancel=True)``), but a thread hop
costs tens of microseconds, ten times a small TFLite call (2-4 µs inline). So each
model version earns the fast path:

* **probation**: the first ``PROBATION_CALLS`` calls of a version run in a worker thread
  under the deadline, and each call's own cost is measured inside the thread;
* **inline**: if the cheapest probation call cost less than ``SLOW_CALL_S`` (the
  cheapest: a first call that allocates, or a busy core, says nothing of the model),
  later calls run inline, exactly as before (one set lookup decides it);
* **threaded**: a version whose probation calls all cost more than ``SLOW_CALL_S``, whose
  inline calls stalled the loop for ``STALL_S`` ``STALL_STRIKES`` times in a row (one stall
  alone may be the host descheduling the process), that missed a deadline, or whose
  model object sets ``may_block = True``, runs every later call in a worker thread
  under the request's remaining deadline.

Threaded calls of one version run one at a time (a per-version ``CapacityLimiter(1)``):
a TFLite interpreter is not safe to call from two threads at once. Right after a version
moves to the inline path, probation calls may still hold or await its limiter: until
they drain, an inline call takes the limiter itself (``run_after_threads``), so it never
overlaps a threaded call; after that, inline calls touch no limiter at all. A call abandoned at the deadline keeps
its thread (Python cannot kill a thread) and its version's limiter until the model
returns: later calls of that version wait for it under their own deadline, so they fail
fast too, and the circuit breaker, which counts each miss as a failure, soon opens and
sends the traffic down the fallback chain. Because each version has its own limiter,
hung threads never take the tokens the rest of the service uses for its file I/O.

The limit, said plainly: a version that passed probation and *later* starts to hang
blocks the loop during its next ``STALL_STRIKES`` calls (inline calls cannot be
interrupted); they are measured as stalls and the version moves to threads, so it happens
once per version and load, not per request. A model that is known to block sets ``may_block``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import attrs
import numpy as np
import trio

from actors.core.errors import DeadlineExceeded
from actors.core.versions import ModelKey

log = logging.getLogger("model_router.model_calls")

PROBATION_CALLS = 4
SLOW_CALL_S = 0.002
STALL_S = 0.05
STALL_STRIKES = 2


@attrs.define
class _Version:
    limiter: trio.CapacityLimiter = attrs.field(factory=lambda: trio.CapacityLimiter(1))
    probation_left: int = PROBATION_CALLS
    cheapest_s: float = float("inf")
    threaded: bool = False
    # Calls of this version awaiting or running in a worker thread, and an event set whenever
    # that count drops to zero: inline calls wait on it (they never take the limiter themselves).
    threads: int = 0
    drained: trio.Event = attrs.field(factory=trio.Event)


@attrs.define
class ModelCalls:
    """Per-version choice between the inline fast path and a bounded worker-thread call."""

    slow_call_s: float = SLOW_CALL_S
    stall_s: float = STALL_S
    probation_calls: int = PROBATION_CALLS
    versions: dict[ModelKey, _Version] = attrs.field(factory=dict)
    # Versions that passed probation, and those of them seen with no thread holding them:
    # after promotion no new threaded call starts, so once idle a version stays idle.
    fast: set[ModelKey] = attrs.field(factory=set)
    settled: set[ModelKey] = attrs.field(factory=set)
    stall_strikes: int = STALL_STRIKES
    # Inline versions whose last calls stalled, and how many in a row.
    stalls: dict[ModelKey, int] = attrs.field(factory=dict)

    def ready(self, key: ModelKey) -> bool:
        """May this version's call run inline right now? (the hot path: one set lookup once settled)"""
        if key in self.settled:
            return True
        if key in self.fast and self.idle(key):
            self.settled.add(key)
            return True
        return False

    def inline(self, key: ModelKey) -> bool:
        """True when this version's next call may run on the event loop (the hot path: one set lookup)."""
        return key in self.fast

    def idle(self, key: ModelKey) -> bool:
        """No thread holds or awaits this version's interpreter: an inline call may run right now."""
        state = self.versions[key]
        return state.threads == 0 and state.limiter.borrowed_tokens == 0

    async def run_after_threads(self, key: ModelKey, call: Callable[[], np.ndarray], deadline: float) -> np.ndarray:
        """An inline call that waits (bounded by ``deadline``) for the version's threaded calls to drain.

        It waits for the count of threaded calls to reach zero rather than taking the limiter:
        an inline call that held the limiter across a checkpoint would keep the version from
        ever looking idle under steady concurrency, and every call would take this slow path.
        """
        state = self.versions[key]
        with trio.move_on_at(deadline):
            while state.threads:
                await state.drained.wait()
            return call()
        raise deadline_exceeded(key)

    def version(self, key: ModelKey, model: object) -> _Version:
        state = self.versions.get(key)
        if state is None:
            state = self.versions[key] = _Version(probation_left=self.probation_calls)
            if getattr(model, "may_block", False):
                state.threaded = True
        return state

    def measured(self, key: ModelKey, seconds: float) -> None:
        """An inline call's wall time: ``stall_strikes`` stalls in a row move the version to worker threads for good.

        One stall alone proves nothing: the time is wall time, and a process descheduled by a
        busy host (or a noisy neighbour) for 60 ms makes a 3 µs call look like a 60 ms one;
        demoting on it would cost every later call a thread hop. A model that really hangs
        stalls every call, so the next call confirms it.
        """
        if seconds > self.stall_s:
            if key not in self.fast:
                return
            strikes = self.stalls[key] = self.stalls.get(key, 0) + 1
            if strikes < self.stall_strikes:
                log.warning("%s@%s: an inline call took %.1f ms (a model stall or a descheduled process); "
                            "%d more in a row move its calls to worker threads",
                            key[0], key[1], seconds * 1000, self.stall_strikes - strikes)
                return
            del self.stalls[key]
            self.fast.discard(key)
            self.settled.discard(key)
            self.versions[key].threaded = True
            log.warning("%s@%s: %d inline calls in a row took over %.0f ms (last %.1f ms); its calls run in "
                        "worker threads from now on", key[0], key[1], strikes, self.stall_s * 1000, seconds * 1000)
        elif self.stalls:
            self.stalls.pop(key, None)  # a normal call ends the run of stalls

    async def in_thread(self, key: ModelKey, model: object, call: Callable[[np.ndarray], np.ndarray],
                        rows: np.ndarray, deadline: float) -> tuple[np.ndarray, float]:
        """``call(rows)`` and its cost, run in a worker thread; DeadlineExceeded at ``deadline`` (trio clock)."""
        state = self.version(key, model)
        state.threads += 1
        try:
            with trio.move_on_at(deadline):
                result, seconds = await trio.to_thread.run_sync(_timed, call, rows, limiter=state.limiter,
                                                                 abandon_on_cancel=True)
                self._settle(key, state, seconds)
                return result, seconds
        finally:
            state.threads -= 1
            if state.threads == 0:
                state.drained.set()
                state.drained = trio.Event()
        state.threaded = True
        self.fast.discard(key)
        self.settled.discard(key)
        raise deadline_exceeded(key)

    def _settle(self, key: ModelKey, state: _Version, seconds: float) -> None:
        if state.threaded:
            return
        state.cheapest_s = min(state.cheapest_s, seconds)
        state.probation_left -= 1
        if state.probation_left > 0:
            return
        if state.cheapest_s < self.slow_call_s:
            self.fast.add(key)
            return
        state.threaded = True
        log.warning("%s@%s: calls cost at least %.1f ms; they run in worker threads", key[0], key[1],
                    state.cheapest_s * 1000)


def _timed(call: Callable[[np.ndarray], np.ndarray], rows: np.ndarray) -> tuple[np.ndarray, float]:
    """In the worker thread: the call and its own cost (not the wait for the thread)."""
    started = time.perf_counter()
    result = call(rows)
    return result, time.perf_counter() - started


def deadline_exceeded(key: ModelKey) -> DeadlineExceeded:
    return DeadlineExceeded("deadline_exceeded", f"{key[0]}@{key[1]} did not answer within the request deadline",
                            {"model": key[0], "version": key[1]})
