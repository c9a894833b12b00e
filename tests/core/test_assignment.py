"""Sticky, process-independent traffic assignment (actors/core/assignment.py)."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

from actors.core.assignment import BASIS_POINTS, assignment_bucket, goes_to_candidate, new_salt

REPO_ROOT = Path(__file__).resolve().parent.parent
KEYS = [f"account-{i}" for i in range(200)]


def test_bucket_matches_documented_formula() -> None:
    """The bucket is exactly the documented SHA-1 formula, so other services can reproduce it."""
    for key in ("a", "BTC-USD", "account-17", ""):
        digest = hashlib.sha1(f"op-1:{key}".encode()).digest()
        assert assignment_bucket("op-1", key) == int.from_bytes(digest[:8], "big") % 10_000


def test_bucket_range() -> None:
    """Buckets lie in [0, 10000)."""
    buckets = [assignment_bucket("s", f"k{i}") for i in range(5000)]
    assert min(buckets) >= 0
    assert max(buckets) < BASIS_POINTS
    assert BASIS_POINTS == 10_000


def test_stable_across_processes_with_different_hash_seeds() -> None:
    """A fresh interpreter with another PYTHONHASHSEED computes the same buckets (no hash() anywhere)."""
    code = (
        "import json; from actors.core.assignment import assignment_bucket; "
        f"print(json.dumps([assignment_bucket('op-x', k) for k in {KEYS!r}]))"
    )
    here = [assignment_bucket("op-x", k) for k in KEYS]
    for seed in ("1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(REPO_ROOT)}
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=True
        )
        assert json.loads(out.stdout) == here


def test_weight_respected_within_statistical_bounds() -> None:
    """20,000 keys at 25 %: the candidate fraction is 0.25 +- 0.015 (about 5 standard deviations)."""
    n = 20_000
    hits = sum(goes_to_candidate("op-weights", f"key-{i}", 2500) for i in range(n))
    assert abs(hits / n - 0.25) < 0.015


def test_weight_extremes() -> None:
    """0 bp sends nobody to the candidate; 10000 bp sends everybody."""
    keys = [f"k{i}" for i in range(1000)]
    assert not any(goes_to_candidate("s", k, 0) for k in keys)
    assert all(goes_to_candidate("s", k, BASIS_POINTS) for k in keys)


def test_monotonic_in_weight() -> None:
    """A key on the candidate at weight w stays there at every larger weight."""
    keys = [f"k{i}" for i in range(2000)]
    weights = [0, 1, 500, 2500, 5000, 7500, 9999, 10_000]
    for low, high in itertools.pairwise(weights):
        at_low = {k for k in keys if goes_to_candidate("op-m", k, low)}
        at_high = {k for k in keys if goes_to_candidate("op-m", k, high)}
        assert at_low <= at_high


def test_different_salts_are_independent() -> None:
    """The 50 % sets under two salts overlap about as much as independent coin flips (25 %)."""
    keys = [f"k{i}" for i in range(10_000)]
    a = {k for k in keys if goes_to_candidate("op-a", k, 5000)}
    b = {k for k in keys if goes_to_candidate("op-b", k, 5000)}
    assert abs(len(a & b) / len(keys) - 0.25) < 0.02
    assert a != b


def test_new_salt_is_deterministic_and_distinct() -> None:
    """The salt depends only on the operation id."""
    assert new_salt("123") == new_salt("123") == "op-123"
    assert new_salt("123") != new_salt("124")
