"""Bounded reload history, its statistics and the ``param.reload`` wire form (actors/core/reload_history.py)."""

from __future__ import annotations

import pytest

from actors.core.reload_history import ReloadEvent, ReloadHistory

PUBSUB_KEYS = {"component", "timestamp", "config_hash", "rules_count", "latency_ms", "success"}


def ok(latency_ms: float = 1.0, *, ts: float = 0.0, rules: int = 3) -> ReloadEvent:
    return ReloadEvent(ts, True, "abc123", rules, latency_ms, "file")


def bad(latency_ms: float = 50.0, *, ts: float = 0.0, error: str = "boom") -> ReloadEvent:
    return ReloadEvent(ts, False, "abc123", 3, latency_ms, "file", error, ({"path": "x", "message": "y"},))


def test_record_returns_a_new_history() -> None:
    """``record`` never mutates: the original stays empty."""
    empty = ReloadHistory()
    after = empty.record(ok())
    assert empty.events == () and empty.load_count == 0
    assert len(after.events) == 1 and after.load_count == 1


def test_history_is_bounded_to_limit_keeping_newest() -> None:
    """Past ``limit`` the oldest events fall off; totals keep counting beyond the window."""
    history = ReloadHistory(limit=3)
    for i in range(5):
        history = history.record(ok(float(i + 1), ts=float(i)))
    assert [e.timestamp for e in history.events] == [2.0, 3.0, 4.0]
    assert history.load_count == 5
    assert history.total_load_ms == pytest.approx(15.0)


def test_load_count_and_average_only_count_successes() -> None:
    """Failures enter the events but not load_count or avg_load_time_ms."""
    history = ReloadHistory()
    for event in (ok(2.0), bad(1000.0), ok(4.0), bad(500.0)):
        history = history.record(event)
    stats = history.stats(current_rules_count=7)
    assert stats["load_count"] == 2
    assert stats["avg_load_time_ms"] == pytest.approx(3.0)
    assert stats["current_rules_count"] == 7
    assert len(history.events) == 4


def test_success_rate_over_recent_window_only() -> None:
    """Old failures outside ``recent_window`` do not lower the rate."""
    history = ReloadHistory()
    for _ in range(5):
        history = history.record(bad())
    for _ in range(3):
        history = history.record(ok())
    history = history.record(bad())
    assert history.stats(1, recent_window=4)["recent_reload_success_rate"] == pytest.approx(0.75)
    assert history.stats(1, recent_window=9)["recent_reload_success_rate"] == pytest.approx(round(3 / 9, 4))


def test_empty_history_stats() -> None:
    """No attempts: rate 1.0, average 0, no events."""
    stats = ReloadHistory().stats(0)
    assert stats == {"load_count": 0, "avg_load_time_ms": 0.0, "current_rules_count": 0,
                     "recent_reload_success_rate": 1.0, "recent_events": []}


def test_stats_recent_events_newest_first_and_bounded() -> None:
    """``recent_events`` are dicts, newest first, at most ``recent_window``."""
    history = ReloadHistory()
    for i in range(4):
        history = history.record(ok(ts=float(i)))
    events = history.stats(1, recent_window=2)["recent_events"]
    assert [e["timestamp"] for e in events] == [3.0, 2.0]
    assert events[0]["trigger"] == "file" and events[0]["details"] == []


def test_recent_newest_first() -> None:
    """``recent(n)`` returns the n newest events, newest first; n <= 0 returns nothing."""
    history = ReloadHistory()
    for i in range(5):
        history = history.record(ok(ts=float(i)))
    assert [e.timestamp for e in history.recent(3)] == [4.0, 3.0, 2.0]
    assert [e.timestamp for e in history.recent(50)] == [4.0, 3.0, 2.0, 1.0, 0.0]
    assert history.recent(0) == ()
    assert history.recent(-1) == ()


def test_to_pubsub_success_has_exactly_seed_keys() -> None:
    """A success carries exactly the six seed fields (no error, trigger, details, warnings)."""
    event = ReloadEvent(12.5, True, "deadbeef0123", 4, 1.23456, "file", warnings=("w",))
    message = event.to_pubsub()
    assert set(message) == PUBSUB_KEYS
    assert message == {"component": "router", "timestamp": 12.5, "config_hash": "deadbeef0123",
                       "rules_count": 4, "latency_ms": 1.235, "success": True}


def test_to_pubsub_failure_adds_only_error() -> None:
    """A failure adds ``error`` and nothing else; the component is configurable."""
    message = bad(error="invalid YAML").to_pubsub(component="router-2")
    assert set(message) == PUBSUB_KEYS | {"error"}
    assert message["error"] == "invalid YAML"
    assert message["success"] is False
    assert message["component"] == "router-2"


def test_to_dict_includes_diagnostics() -> None:
    """The API form carries trigger, details and warnings as lists."""
    data = bad().to_dict()
    assert data["trigger"] == "file"
    assert data["details"] == [{"path": "x", "message": "y"}]
    assert data["warnings"] == []
    assert data["error"] == "boom"
