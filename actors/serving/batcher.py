"""Adaptive micro-batching of single predictions (the dynamic batcher of Triton, on one loop).

Concurrent requests for the same model version within a short window run as one
interpreter call. Batching pays only when a call is expensive: the batcher keeps a
moving average of each version's single-call cost, and versions cheaper than
``min_call_us`` always run inline (for a 2 µs MLP, waking the members of a batch costs
more than the calls it saves; for a 160 µs model, batches of 8 cut the cost per
prediction by half). Nothing waits when there is no contention either: a request that
finds no other request for its model version within the last ``max_queue_delay_us``
runs inline at once. Under load, such a request becomes the batch's *leader*: it yields to the
scheduler (a shielded checkpoint, so a cancelled leader never strands its followers)
while other requests join, and runs the batch when it is full (``max_batch_size``),
when ``max_queue_delay_us`` is up, or as soon as a whole scheduler pass added nobody —
then every member reads its own row of the result.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

import attrs
import numpy as np
import trio

from actors.core.errors import RouterError
from actors.core.versions import ModelKey
from actors.serving.metrics import Metrics
from actors.storage.tflite_backend import LoadedModel

COST_SAMPLES = 16
Runner = Callable[[LoadedModel, np.ndarray], np.ndarray]


@attrs.frozen
class BatchSettings:
    max_batch_size: int = 32
    max_queue_delay_us: float = 500.0
    min_call_us: float = 20.0


@attrs.define(eq=False)
class _Batch:
    rows: list[np.ndarray] = attrs.field(factory=list)
    done: trio.Event = attrs.field(factory=trio.Event)
    results: np.ndarray | None = None
    error: RouterError | None = None

    def outcome(self, index: int) -> np.ndarray:
        if self.error is not None:
            raise self.error
        assert self.results is not None
        return self.results[index]


@attrs.define
class Batcher:
    """Open batches per model version; used only from the event loop thread."""

    settings: BatchSettings
    metrics: Metrics
    open: dict[ModelKey, _Batch] = attrs.field(factory=dict)
    last_arrival: dict[ModelKey, float] = attrs.field(factory=dict)
    samples: dict[ModelKey, deque[float]] = attrs.field(factory=dict)
    call_us: dict[ModelKey, float] = attrs.field(factory=dict)

    def worth_batching(self, key: ModelKey) -> bool:
        return self.call_us.get(key, 0.0) >= self.settings.min_call_us

    def inline(self, key: ModelKey, model: LoadedModel, row: np.ndarray, run: Runner) -> np.ndarray:
        """Run alone and update the version's single-call cost.

        The cost is the minimum of the last COST_SAMPLES calls: the model's own cost, not
        a garbage collection or a context switch that happened to land inside one call.
        """
        started = time.perf_counter()
        out = run(model, row.reshape(1, -1))[0]
        recent = self.samples.get(key)
        if recent is None:
            recent = self.samples[key] = deque(maxlen=COST_SAMPLES)
        recent.append((time.perf_counter() - started) * 1e6)
        self.call_us[key] = min(recent)
        return out

    def contended(self, key: ModelKey) -> bool:
        """Did another request for this version arrive within the queue delay? (records this one)"""
        now = trio.current_time()
        previous = self.last_arrival.get(key)
        self.last_arrival[key] = now
        return previous is not None and now - previous < self.settings.max_queue_delay_us / 1e6

    async def submit(self, model: LoadedModel, row: np.ndarray, run: Runner) -> np.ndarray:
        """This request's output row, computed alone (no contention) or in a shared batch."""
        key = (model.name, model.version)
        batch = self.open.get(key)
        if batch is not None:
            index = len(batch.rows)
            batch.rows.append(row)
            if len(batch.rows) >= self.settings.max_batch_size:
                del self.open[key]
            await batch.done.wait()
            return batch.outcome(index)
        # Cost first: for a version cheaper than ``min_call_us`` arrivals need no bookkeeping at all.
        if not self.worth_batching(key) or not self.contended(key):
            return self.inline(key, model, row, run)
        return await self.lead(key, model, row, run)

    async def lead(self, key: ModelKey, model: LoadedModel, row: np.ndarray, run: Runner) -> np.ndarray:
        batch = self.open[key] = _Batch([row])
        deadline = trio.current_time() + self.settings.max_queue_delay_us / 1e6
        while self.open.get(key) is batch and trio.current_time() < deadline:
            members = len(batch.rows)
            await trio.lowlevel.cancel_shielded_checkpoint()  # every ready task runs before we resume
            if len(batch.rows) == members:
                break  # a whole pass added nobody: waiting longer would only add latency
        if self.open.get(key) is batch:
            del self.open[key]
        try:
            batch.results = run(model, np.stack(batch.rows))
        except RouterError as error:
            batch.error = error
        finally:
            batch.done.set()
        self.metrics.batch_rows.observe(len(batch.rows))
        return batch.outcome(0)
