"""The collector's thresholds: parsed strictly, applied once the service is ready."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from actors.core.gc_policy import (
    DEFAULT_GC_THRESHOLDS,
    PYTHON_GC_THRESHOLDS,
    parse_gc_thresholds,
    settle,
)


@pytest.fixture
def restored_thresholds() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)


@pytest.mark.parametrize(("text", "expected"), [
    ("20000,10,10", (20_000, 10, 10)),
    (" 5000 , 20 , 30 ", (5_000, 20, 30)),
    ("default", DEFAULT_GC_THRESHOLDS),
    ("Python", PYTHON_GC_THRESHOLDS),
])
def test_parse_accepts_three_counts_or_a_name(text: str, expected: tuple[int, int, int]) -> None:
    assert parse_gc_thresholds(text) == expected


@pytest.mark.parametrize(("text", "reason"), [
    ("1,2", "three positive integers"),
    ("a,b,c", "three positive integers"),
    ("-1,10,10", "three positive integers"),
    ("1.5,10,10", "three positive integers"),
    ("0,10,10", "at least 1"),
    ("700,0,10", "at least 1"),
    ("5000000,10,10", "pile up"),
    ("x" * 500, "not 'xxxx"),
])
def test_parse_refuses_what_would_switch_the_collector_off_or_is_malformed(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason) as caught:
        parse_gc_thresholds(text)
    assert len(str(caught.value)) < 200  # a huge value is not echoed whole


def test_the_default_keeps_the_older_generations_at_python_values() -> None:
    """Only the young threshold moves: cycles that reached the old generation are still collected."""
    assert DEFAULT_GC_THRESHOLDS[0] > PYTHON_GC_THRESHOLDS[0]
    assert DEFAULT_GC_THRESHOLDS[1:] == PYTHON_GC_THRESHOLDS[1:]


def test_settle_freezes_the_start_up_heap_and_applies_the_thresholds(restored_thresholds: None) -> None:
    survivor = [object() for _ in range(100)]  # start-up state: lives as long as the process
    frozen_before = gc.get_freeze_count()
    settle((12_345, 11, 12))
    assert gc.get_threshold() == (12_345, 11, 12)
    assert gc.get_freeze_count() >= frozen_before + 1  # the list, at least, left the collector's walks
    assert not any(obj is survivor for obj in gc.get_objects())
