"""Membership decisions over heartbeat reports."""

from __future__ import annotations

from actors.core.membership import live, not_ready_for


def test_live_drops_stale_reports_and_orders_by_id() -> None:
    reports = [{"id": "b", "heartbeat_at": 100.0}, {"id": "a", "heartbeat_at": 99.0}, {"id": "c", "heartbeat_at": 90.0}]
    assert [r["id"] for r in live(reports, 101.0, 3.0)] == ["a", "b"]


def test_not_ready_for_says_why_per_replica() -> None:
    reports = [
        {"id": "r0", "loaded": ["m@2"], "catalog": {"m": ["1", "2"]}},
        {"id": "r1", "loaded": ["m@1"], "catalog": {"m": ["1"]}},
        {"id": "r2", "loaded": [], "catalog": {"m": ["1", "2"]}, "failures": {"m@2": "bad file"}},
        {"id": "r3", "loaded": [], "catalog": {"m": ["1", "2"]}},
    ]
    assert not_ready_for(reports, "m", "2") == {
        "r1": "its repository has no m@2", "r2": "cannot load m@2: bad file", "r3": "m@2 is not loaded yet"}
