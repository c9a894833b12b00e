"""Rollout leadership decisions: fencing, adopting the recorded step, pooled health."""

from __future__ import annotations

import attrs

from actors.core.health_stats import HealthSnapshot
from actors.core.rollout import accepts_step, newer, pool_snapshots, snapshot_from, wait_before_step
from actors.core.switch_policy import Verdict, advance, begin, new_operation, parse_switch_params


def op_at(now: float = 100.0):
    params = parse_switch_params({"version": "2", "strategy": "gradual", "steps": [10, 50, 100], "interval_s": 5})
    return new_operation("sw-1", "m", "1", "2", params, now)


def test_fencing_refuses_steps_from_an_older_leader() -> None:
    assert accepts_step(0, 1) and accepts_step(3, 3) and not accepts_step(4, 3)


def test_a_new_leader_adopts_only_a_record_that_is_further_along() -> None:
    loading = op_at()
    running = begin(loading, 101.0)
    stepped = advance(running, Verdict(True, True, ()), 106.0)
    assert newer(running, loading) and newer(stepped, running)
    assert not newer(running, stepped) and not newer(stepped, stepped)
    assert wait_before_step(stepped, 107.0) == 4.0 and wait_before_step(stepped, 200.0) == 0.0


def snap(count: int, errors: int, p95: float | None, accuracy: float | None = None, outcomes: int = 0
         ) -> HealthSnapshot:
    return HealthSnapshot(count, errors, errors / count if count else 0.0, p95, p95, p95, accuracy, outcomes, 60.0)


def test_pooled_health_sums_counts_and_keeps_the_worst_latency() -> None:
    pooled = pool_snapshots([snap(100, 0, 5.0, 1.0, 10), snap(50, 25, 80.0, 0.5, 30), snap(0, 0, None)])
    assert (pooled.count, pooled.errors, pooled.p95_ms) == (150, 25, 80.0)
    assert pooled.error_rate == 25 / 150 and pooled.accuracy == (10 + 15) / 40
    assert snapshot_from(attrs.asdict(pooled)) == pooled
    assert pool_snapshots([]).count == 0
