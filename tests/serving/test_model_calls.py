"""ModelCalls: which calls run inline, which run bounded in a worker thread, and the deadline."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import trio
import trio.testing

from actors.core.errors import DeadlineExceeded
from actors.serving.model_calls import ModelCalls

KEY = ("m", "1")
ROWS = np.zeros((1, 3), dtype=np.float32)


def quick(rows: np.ndarray) -> np.ndarray:
    return rows + 1


class MayBlock:
    may_block = True


async def test_a_fast_version_earns_the_inline_path_after_probation() -> None:
    calls = ModelCalls(probation_calls=3)
    for _ in range(3):
        assert not calls.inline(KEY)
        out, seconds = await calls.in_thread(KEY, object(), quick, ROWS, trio.current_time() + 5)
        assert out.tolist() == [[1.0, 1.0, 1.0]] and seconds >= 0
    assert calls.inline(KEY) and calls.idle(KEY) and calls.ready(KEY) and KEY in calls.settled


async def test_a_slow_version_stays_in_threads_and_a_stall_demotes_an_inline_one() -> None:
    calls = ModelCalls(probation_calls=2, slow_call_s=0.0)  # every call counts as slow
    for _ in range(2):
        await calls.in_thread(KEY, object(), quick, ROWS, trio.current_time() + 5)
    assert not calls.inline(KEY)
    fast = ModelCalls(probation_calls=1)
    await fast.in_thread(KEY, object(), quick, ROWS, trio.current_time() + 5)
    assert fast.inline(KEY)
    fast.measured(KEY, 0.001)
    assert fast.inline(KEY)
    assert fast.ready(KEY)
    fast.measured(KEY, fast.stall_s * 2)  # an inline call that held the loop: one strike
    assert fast.inline(KEY)
    fast.measured(KEY, fast.stall_s * 2)  # a second in a row: the model really stalls
    assert not fast.inline(KEY) and not fast.ready(KEY)


async def test_one_stall_between_normal_calls_never_demotes() -> None:
    """A descheduled process makes one call look like a stall; normal calls in between reset the count."""
    calls = ModelCalls(probation_calls=1)
    await calls.in_thread(KEY, object(), quick, ROWS, trio.current_time() + 5)
    for _ in range(5):
        calls.measured(KEY, calls.stall_s * 3)
        calls.measured(KEY, 0.000_01)
    assert calls.inline(KEY) and calls.ready(KEY)
    assert calls.stalls == {}


async def test_may_block_models_never_run_inline() -> None:
    calls = ModelCalls(probation_calls=1)
    await calls.in_thread(KEY, MayBlock(), quick, ROWS, trio.current_time() + 5)
    assert not calls.inline(KEY)


async def test_a_hung_call_raises_deadline_exceeded_and_holds_only_its_version() -> None:
    calls = ModelCalls()
    release = threading.Event()

    def hang(rows: np.ndarray) -> np.ndarray:
        release.wait(10)
        return rows

    try:
        started = trio.current_time()
        with pytest.raises(DeadlineExceeded) as info:
            await calls.in_thread(KEY, object(), hang, ROWS, started + 0.1)
        assert 0.1 <= trio.current_time() - started < 1.0
        assert info.value.details == {"model": "m", "version": "1"}
        assert not calls.idle(KEY)  # the abandoned thread still holds the interpreter
        # The next call of that version waits behind it, bounded by its own deadline...
        with pytest.raises(DeadlineExceeded):
            await calls.in_thread(KEY, object(), quick, ROWS, trio.current_time() + 0.05)
        # ...while another version runs at once.
        out, _ = await calls.in_thread(("other", "1"), object(), quick, ROWS, trio.current_time() + 5)
        assert out.tolist() == [[1.0, 1.0, 1.0]]
    finally:
        release.set()
    with trio.fail_after(5):
        while not calls.idle(KEY):
            await trio.sleep(0.01)  # the released thread hands the limiter back


async def test_inline_calls_wait_for_threads_still_holding_the_version() -> None:
    calls = ModelCalls(probation_calls=1)
    await calls.in_thread(KEY, object(), quick, ROWS, trio.current_time() + 5)
    assert calls.inline(KEY)
    release = threading.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(calls.in_thread, KEY, object(), lambda rows: (release.wait(5), rows)[1], ROWS,
                           trio.current_time() + 5)
        await trio.testing.wait_all_tasks_blocked()
        assert not calls.idle(KEY) and not calls.ready(KEY)  # promoted, but a thread holds it
        with pytest.raises(DeadlineExceeded):
            await calls.run_after_threads(KEY, lambda: ROWS, trio.current_time() + 0.05)
        release.set()
    assert (await calls.run_after_threads(KEY, lambda: ROWS + 2, trio.current_time() + 1)).tolist() == [[2.0] * 3]
    assert calls.ready(KEY)  # drained: settled on the inline path
