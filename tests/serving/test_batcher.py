"""The dynamic batcher: inline without contention, one interpreter call for concurrent requests."""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np
import pytest
import trio
import trio.testing

from actors.core.errors import RouterError, Unavailable
from actors.serving.batcher import Batcher, BatchSettings
from actors.serving.metrics import Metrics


@attrs.frozen
class FakeModel:
    """Only what the batcher reads: the model's identity (a unit-level stand-in)."""

    name: str = "m"
    version: str = "1"


@attrs.define
class Runner:
    calls: list[int] = attrs.field(factory=list)
    fail: bool = False

    def __call__(self, model: Any, rows: np.ndarray) -> np.ndarray:
        self.calls.append(len(rows))
        if self.fail:
            raise Unavailable("inference_failed", "boom")
        return rows * 10


async def submit_all(batcher: Batcher, runner: Runner, count: int) -> dict[int, np.ndarray]:
    results: dict[int, np.ndarray] = {}

    async def one(i: int) -> None:
        results[i] = await batcher.submit(FakeModel(), np.array([float(i)], np.float32), runner)

    async with trio.open_nursery() as nursery:
        for i in range(count):
            nursery.start_soon(one, i)
    return results


async def test_no_contention_runs_inline() -> None:
    """A lone request is not delayed: one call with one row, no open batch left behind."""
    runner = Runner()
    batcher = Batcher(BatchSettings(), Metrics())
    out = await batcher.submit(FakeModel(), np.array([2.0], np.float32), runner)
    assert runner.calls == [1] and out.tolist() == [20.0] and batcher.open == {}


async def test_cheap_models_are_never_batched() -> None:
    """Below min_call_us a batch would cost more than it saves: every request runs inline."""
    runner = Runner()
    batcher = Batcher(BatchSettings(min_call_us=1e9), Metrics())
    results = await submit_all(batcher, runner, 12)
    assert runner.calls == [1] * 12 and len(results) == 12
    assert batcher.call_us[("m", "1")] < 1e9  # the cost was measured


async def test_concurrent_requests_share_one_call_and_get_their_own_rows() -> None:
    runner = Runner()
    metrics = Metrics()
    results = await submit_all(Batcher(BatchSettings(max_batch_size=32, min_call_us=0), metrics), runner, 12)
    assert sum(runner.calls) == 12 and len(runner.calls) < 12  # fewer calls than requests
    assert max(runner.calls) > 1
    assert {i: r.tolist() for i, r in results.items()} == {i: [i * 10.0] for i in range(12)}
    assert metrics.registry.get_sample_value("model_router_dynamic_batch_rows_count") >= 1


async def test_batches_never_exceed_max_batch_size() -> None:
    runner = Runner()
    results = await submit_all(Batcher(BatchSettings(max_batch_size=4, min_call_us=0), Metrics()), runner, 10)
    assert sum(runner.calls) == 10 and max(runner.calls) <= 4
    assert len(results) == 10


async def test_an_error_reaches_every_member() -> None:
    runner = Runner(fail=True)
    batcher = Batcher(BatchSettings(min_call_us=0), Metrics())
    errors: list[str] = []

    async def one(i: int) -> None:
        with pytest.raises(RouterError) as caught:
            await batcher.submit(FakeModel(), np.array([float(i)], np.float32), runner)
        errors.append(caught.value.code)

    async with trio.open_nursery() as nursery:
        for i in range(5):
            nursery.start_soon(one, i)
    assert errors == ["inference_failed"] * 5


async def test_cancelled_callers_never_strand_the_others() -> None:
    """Callers that give up (even one leading a batch: its wait is shielded) leave the rest answered."""
    runner = Runner()
    batcher = Batcher(BatchSettings(min_call_us=0), Metrics())
    batcher.last_arrival[("m", "1")] = trio.current_time()  # traffic just arrived: contention
    answered: dict[int, list[float]] = {}

    async def caller(i: int, give_up: bool) -> None:
        with trio.CancelScope() as scope:
            if give_up:
                scope.cancel()
            answered[i] = (await batcher.submit(FakeModel(), np.array([float(i)], np.float32), runner)).tolist()

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            for i in range(12):
                nursery.start_soon(caller, i, i % 3 == 0)
    live = {i for i in range(12) if i % 3}
    assert live <= set(answered)
    assert all(answered[i] == [i * 10.0] for i in answered)
    assert batcher.open == {}
