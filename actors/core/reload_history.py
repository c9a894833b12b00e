"""Reload attempts and the statistics derived from them (pure, no I/O).

The history is an immutable tuple bounded to ``limit`` entries; appending returns a new
history, so the config watcher can rebind one reference and HTTP handlers read it
without locks.
"""

from __future__ import annotations

from typing import Any

import attrs


@attrs.frozen
class ReloadEvent:
    """One reload attempt, successful or not, as published on ``param.reload``."""

    timestamp: float
    success: bool
    config_hash: str | None
    rules_count: int
    latency_ms: float
    trigger: str
    error: str | None = None
    details: tuple[dict[str, Any], ...] = ()
    warnings: tuple[str, ...] = ()

    def to_pubsub(self, component: str = "router") -> dict[str, Any]:
        """The wire form of seed 000: exactly these fields, plus ``error`` on failure."""
        message: dict[str, Any] = {
            "component": component,
            "timestamp": self.timestamp,
            "config_hash": self.config_hash,
            "rules_count": self.rules_count,
            "latency_ms": round(self.latency_ms, 3),
            "success": self.success,
        }
        if not self.success:
            message["error"] = self.error
        return message

    def to_dict(self) -> dict[str, Any]:
        return {
            "timestamp": self.timestamp,
            "success": self.success,
            "config_hash": self.config_hash,
            "rules_count": self.rules_count,
            "latency_ms": round(self.latency_ms, 3),
            "trigger": self.trigger,
            "error": self.error,
            "details": list(self.details),
            "warnings": list(self.warnings),
        }


@attrs.frozen
class ReloadHistory:
    """The last ``limit`` attempts plus running totals that outlive the window."""

    limit: int = 100
    events: tuple[ReloadEvent, ...] = ()
    load_count: int = 0
    total_load_ms: float = 0.0

    def record(self, event: ReloadEvent) -> ReloadHistory:
        events = (*self.events, event)[-self.limit :]
        if event.success:
            return attrs.evolve(
                self,
                events=events,
                load_count=self.load_count + 1,
                total_load_ms=self.total_load_ms + event.latency_ms,
            )
        return attrs.evolve(self, events=events)

    def recent(self, limit: int) -> tuple[ReloadEvent, ...]:
        """Newest first, at most ``limit``."""
        return tuple(reversed(self.events[-limit:])) if limit > 0 else ()

    def stats(self, current_rules_count: int, recent_window: int = 10) -> dict[str, Any]:
        """Seed 000's ``get_performance_stats`` shape."""
        window = self.events[-recent_window:]
        success_rate = sum(e.success for e in window) / len(window) if window else 1.0
        average = self.total_load_ms / self.load_count if self.load_count else 0.0
        return {
            "load_count": self.load_count,
            "avg_load_time_ms": round(average, 3),
            "current_rules_count": current_rules_count,
            "recent_reload_success_rate": round(success_rate, 4),
            "recent_events": [e.to_dict() for e in self.recent(recent_window)],
        }
