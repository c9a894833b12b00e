"""Redis killed (SIGKILL) and restarted under load, with the real app and a private redis-server.

While Redis is gone, predictions, config reloads and a model switch keep working; the
reload notices (``param.reload``) and switch events (``model.switch.log``) offered
meanwhile are buffered and arrive, one by one and in order, once Redis is back on the
same port. Past the buffer bound the oldest are dropped, counted and logged.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trio

from actors.build.demo_models import build_random_model
from actors.config_watcher import RELOAD_CHANNEL
from actors.core.rules import parse_config
from tests.conftest import FAST_FEATURES, RedisServer, Subscriber, render_config, running_app, wait_ready
from tests.faults.test_config_storms import reloaded
from tests.test_redis_bus import dropped, running_bus, xadd
from tests.test_switching import SYMBOLS, finished, next_events, steady_load, switch, switch_feed

SWITCH_STREAM = "model.switch.log"


def kill(server: RedisServer) -> None:
    assert server.process is not None
    server.process.kill()  # SIGKILL: no shutdown, clients see their connections reset
    server.process.wait(timeout=10)
    server.process = None


def stream_event_ids(server: RedisServer) -> list[str]:
    client = server.client()
    try:
        return [fields["event_id"] for _id, fields in client.xrange(SWITCH_STREAM)]
    finally:
        client.close()


async def test_redis_killed_and_restarted_under_load(config_path: Path, repo: Path,
                                                     redis_server: RedisServer) -> None:
    build_random_model(repo, "fast", "2", FAST_FEATURES, seed=21)
    tagged = [render_config(repo, redis_url=redis_server.url, config_extra=f"    max_batch_items: {100 + i}\n")
              for i in range(5)]
    config_path.write_text(render_config(repo, redis_url=redis_server.url))
    async with running_app(config_path) as h, steady_load(h) as load, switch_feed(h, "?model=fast") as ws:
        await wait_ready(h)
        kill(redis_server)
        # Reloads during the outage: each takes effect at once, its notice is buffered.
        for text in tagged:
            config_path.write_text(text)
            await reloaded(h, parse_config(text).config_hash)
        # A switch during the outage: it completes; its events reach WebSocket subscribers live.
        op = await switch(h, "fast", version="1", strategy="immediate")
        assert (await finished(h, op))["state"] == "completed"
        events = await next_events(ws, len(SYMBOLS))
        assert {e["operation_id"] for e in events} == {op}
        before = load.statuses[200]
        with trio.fail_after(5):
            while load.statuses[200] < before + 20:
                await trio.sleep(0.01)  # polls the load's counter: predictions go on without Redis
        # Redis returns on the same port; subscribe before the bus (on this loop) can write again.
        redis_server.start()
        subscriber = Subscriber(redis_server, RELOAD_CHANNEL)
        try:
            notices = [await subscriber.next_json(timeout=10) for _ in tagged]
        finally:
            subscriber.close()
        assert [n["config_hash"] for n in notices] == [parse_config(t).config_hash for t in tagged]
        wanted = {e["event_id"] for e in events}
        with trio.fail_after(10):
            while not wanted <= set(await trio.to_thread.run_sync(stream_event_ids, redis_server)):
                await trio.sleep(0.05)  # polls Redis until the buffered events are written
        ids = await trio.to_thread.run_sync(stream_event_ids, redis_server)
        assert sorted(i for i in ids if i in wanted) == sorted(wanted) and len(set(ids)) == len(ids)
        assert h.service.metrics.registry.get_sample_value(
            "model_router_redis_dropped_total", {"kind": "xadd"}) in (None, 0.0)
        with trio.fail_after(5):
            while not h.service.outbox.state.connected:
                await trio.sleep(0.01)
    assert set(load.statuses) == {200}, load.failures[:3]


async def test_buffer_overflow_during_an_outage_is_counted_and_logged(
        redis_server: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    """Above the bound the oldest messages are dropped: each counted in the metric, and logged."""
    caplog.set_level(logging.ERROR, logger="model_router.redis")
    kill(redis_server)
    async with running_bus(redis_server.url, buffer_limit=20) as bus:
        for seq in range(50):
            assert bus.outbox.offer(xadd(seq))
            await trio.sleep(0)
        with trio.fail_after(5):
            while dropped(bus.metrics, "xadd") < 30:
                await trio.sleep(0.01)
        assert dropped(bus.metrics, "xadd") == 30
        assert any("redis buffer full" in r.getMessage() for r in caplog.records)
        redis_server.start()
        client = redis_server.client()
        with trio.fail_after(10):
            while client.xlen("model_router.switch_events") < 20:
                await trio.sleep(0.05)
        seqs = [int(f["seq"]) for _id, f in client.xrange("model_router.switch_events")]
        client.close()
    assert seqs == list(range(30, 50))  # the newest survive, in order, one each
