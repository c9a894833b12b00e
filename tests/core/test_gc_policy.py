"""The collector's thresholds, parsed strictly (applying them: tests/test_lifecycle.py)."""

from __future__ import annotations

import pytest

from actors.core.gc_policy import (
    DEFAULT_GC_THRESHOLDS,
    PYTHON_GC_THRESHOLDS,
    parse_gc_thresholds,
)


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
