"""Usage persistence: a local JSON file (atomic, 0644) or a Redis hash per day; both survive a restart."""

from __future__ import annotations

import json
import stat
from datetime import datetime, timezone
from pathlib import Path

from actors.core.rate_limit import utc_day
from actors.core.usage import UsageBook, usage_report
from actors.storage.usage_store import FileUsageStore, RedisUsageStore
from tests.conftest import RedisServer

T0 = datetime(2026, 12, 2, 12, 0, tzinfo=timezone.utc).timestamp()
DAY = utc_day(T0)


def traffic(book: UsageBook, n: int = 1) -> None:
    book.record_prediction("desk-a", "engine", "tlob_tiny", n, T0)
    book.record_refusal("desk-a", "engine", "budget_exhausted", T0)


def test_file_store_accumulates_and_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "state" / "usage.json"
    store = FileUsageStore(path)
    book = UsageBook(DAY)
    traffic(book, 5)
    totals = store.flush(book.take_delta(), DAY)
    assert totals[("p", "desk-a")] == 5
    traffic(book, 2)
    store.flush(book.take_delta(), DAY)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in path.parent.iterdir()] == ["usage.json"]  # no temporary file left behind

    restarted = UsageBook(DAY)
    restarted.absorb(DAY, FileUsageStore(path).load(DAY))
    report = usage_report(restarted.totals(T0), T0, ["desk-a"])["workspaces"]["desk-a"]
    assert report["predictions"] == 7
    assert report["keys"]["engine"] == {"predictions": 7, "rejections": {"budget_exhausted": 2}}
    document = json.loads(path.read_text())
    assert list(document["days"]) == ["2026-12-02"]


def test_file_store_keeps_only_recent_days(tmp_path: Path) -> None:
    store = FileUsageStore(tmp_path / "usage.json")
    store.flush({DAY - 5: {("p", "w"): 1}, DAY - 1: {("p", "w"): 2}, DAY: {("p", "w"): 3}}, DAY)
    assert sorted(json.loads((tmp_path / "usage.json").read_text())["days"]) == ["2026-12-01", "2026-12-02"]


def test_a_corrupt_file_is_set_aside_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "usage.json"
    path.write_text('{"days": {"2026-12-02": [[["p", "w"], 1]')  # cut short
    store = FileUsageStore(path)
    assert store.load(DAY) == {}
    assert (tmp_path / "usage.json.corrupt").exists()
    assert store.flush({DAY: {("p", "w"): 4}}, DAY) == {("p", "w"): 4}


def test_redis_store_adds_every_replicas_deltas(redis_server: RedisServer) -> None:
    one, two = RedisUsageStore.from_url(redis_server.url), RedisUsageStore.from_url(redis_server.url)
    a, b = UsageBook(DAY), UsageBook(DAY)
    traffic(a, 3)
    traffic(b, 4)
    one.flush(a.take_delta(), DAY)
    totals = two.flush(b.take_delta(), DAY)
    assert totals[("p", "desk-a")] == 7 and totals[("r", "desk-a", "budget_exhausted")] == 2
    assert RedisUsageStore.from_url(redis_server.url).load(DAY) == totals
    client = redis_server.client()
    assert client.ttl("model_router:usage:2026-12-02") > 7 * 86_400
    assert client.hget("model_router:usage:2026-12-02", '["pm","desk-a","tlob_tiny"]') == "7"
