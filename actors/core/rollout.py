"""One leader per rollout, as pure decisions: fencing, adopting the recorded step, pooled health.

A gradual or canary switch is stepped by the one replica that holds its Redis lease; each
lease acquisition gets a fencing token larger than any before it. The leader records each
step (the whole operation) in Redis and on the command stream, both guarded by the lease,
and the other replicas follow. These functions decide, without I/O or clocks:

* whether a step may be applied (:func:`accepts_step`): never one from an older fence;
* whether a new leader adopts the recorded operation (:func:`newer`): it continues from
  the last recorded step, never restarting or repeating one;
* how long the leader waits before the next step (:func:`wait_before_step`), so a
  takeover keeps the interval the rollout was using;
* the health of a candidate over every replica's window (:func:`pool_snapshots`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from actors.core.health_stats import HealthSnapshot
from actors.core.switch_policy import Operation


def accepts_step(highest_fence: int, fence: int) -> bool:
    """A step is applied only from the newest leader seen so far (fencing)."""
    return fence >= highest_fence


def progress(op: Operation) -> tuple[int, int, float]:
    """How far an operation went: terminal last, then log length, then time of the last change."""
    return (1 if op.is_terminal else 0, len(op.log), op.updated_at)


def newer(recorded: Operation, local: Operation) -> bool:
    """The recorded operation is further along than this replica's copy (adopt it)."""
    return progress(recorded) > progress(local)


def wait_before_step(op: Operation, now: float) -> float:
    """Seconds until the next step is due: one interval after the last recorded change."""
    return max(0.0, op.updated_at + op.params.interval_s - now)


def pool_snapshots(snapshots: Iterable[HealthSnapshot]) -> HealthSnapshot:
    """One window for all replicas: counts summed, the worst latency kept, accuracy pooled.

    Latency percentiles do not add up; keeping the worst replica's is deliberately strict:
    a candidate that is slow on one replica is slow for the traffic that replica serves.
    """
    items = [s for s in snapshots if s.count > 0 or s.outcomes > 0]
    count = sum(s.count for s in items)
    errors = sum(s.errors for s in items)
    outcomes = sum(s.outcomes for s in items)

    def worst(field: str) -> float | None:
        values = [getattr(s, field) for s in items if getattr(s, field) is not None and s.count > 0]
        return max(values) if values else None

    correct = sum((s.accuracy or 0.0) * s.outcomes for s in items if s.accuracy is not None)
    return HealthSnapshot(count=count, errors=errors, error_rate=errors / count if count else 0.0,
                          p50_ms=worst("p50_ms"), p95_ms=worst("p95_ms"), p99_ms=worst("p99_ms"),
                          accuracy=correct / outcomes if outcomes else None, outcomes=outcomes,
                          window_s=max((s.window_s for s in items), default=0.0))


def snapshot_from(data: Mapping[str, Any]) -> HealthSnapshot:
    """A snapshot from its JSON form (a peer's heartbeat)."""
    return HealthSnapshot(
        count=int(data.get("count", 0)), errors=int(data.get("errors", 0)),
        error_rate=float(data.get("error_rate", 0.0)), p50_ms=_opt(data.get("p50_ms")),
        p95_ms=_opt(data.get("p95_ms")), p99_ms=_opt(data.get("p99_ms")), accuracy=_opt(data.get("accuracy")),
        outcomes=int(data.get("outcomes", 0)), window_s=float(data.get("window_s", 0.0)))


def _opt(value: Any) -> float | None:
    return None if value is None else float(value)
