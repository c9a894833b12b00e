"""Switch detection, fan-out to subscribers and the Redis switch log (actors/switch_feed.py)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from actors import redis_bus, switch_feed
from actors.core.recent_symbols import SymbolRoute
from actors.redis_bus import BusState, RedisMessage, RedisOutbox, disabled_outbox
from actors.serving.metrics import Metrics
from actors.switch_feed import STREAM, FeedFilter, SwitchEvent, SwitchFeed, Trigger
from tests.conftest import RedisServer

SEED_FIELDS = ("timestamp", "symbol", "old_model", "new_model", "latency_ms")


def _message(**fields: Any) -> dict[str, Any]:
    base = {"symbol": "BTC", "asset_class": "crypto", "old_model": "fast@1", "new_model": "backup@1"}
    return {**base, **fields}


# --------------------------------------------------------------------------- filters and fan-out


@pytest.mark.parametrize(
    ("feed_filter", "matches"),
    [
        (FeedFilter(), True),
        (FeedFilter(symbol="BTC"), True),
        (FeedFilter(symbol="ETH"), False),
        (FeedFilter(asset_class="crypto"), True),
        (FeedFilter(asset_class="fx"), False),
        (FeedFilter(model="fast"), True),  # old side
        (FeedFilter(model="backup"), True),  # new side
        (FeedFilter(model="windowed"), False),
        (FeedFilter(model="fast@1"), False),  # a model name, not name@version
        (FeedFilter(symbol="BTC", asset_class="crypto", model="backup"), True),
        (FeedFilter(symbol="BTC", asset_class="fx", model="backup"), False),
    ],
)
def test_feed_filter_matching(feed_filter: FeedFilter, matches: bool) -> None:
    """Every given filter must match exactly; ``model`` matches the model name on either side."""
    assert feed_filter.matches(_message()) is matches


def _feed(queue: int = 256) -> tuple[SwitchFeed, trio.MemoryReceiveChannel[Trigger], Metrics]:
    metrics = Metrics()
    send, recv = trio.open_memory_channel[Trigger](64)
    return SwitchFeed(send, metrics, subscriber_queue=queue), recv, metrics


def _subscribers(metrics: Metrics) -> float | None:
    return metrics.registry.get_sample_value("model_router_switch_subscribers")


def test_subscribe_broadcast_unsubscribe() -> None:
    """Subscribers get matching messages only; after unsubscribing their channel is closed."""
    feed, _, metrics = _feed()
    everything, all_recv = feed.subscribe(FeedFilter())
    eth_only, eth_recv = feed.subscribe(FeedFilter(symbol="ETH"))
    assert _subscribers(metrics) == 2
    feed.broadcast(_message())
    assert all_recv.receive_nowait()["symbol"] == "BTC"
    with pytest.raises(trio.WouldBlock):
        eth_recv.receive_nowait()
    feed.unsubscribe(everything)
    assert _subscribers(metrics) == 1
    feed.broadcast(_message(symbol="ETH"))
    assert eth_recv.receive_nowait()["symbol"] == "ETH"
    with pytest.raises(trio.EndOfChannel):
        all_recv.receive_nowait()
    assert feed.subscribers == {eth_only}


def test_a_slow_subscriber_is_dropped_without_affecting_others() -> None:
    """A full queue drops that subscriber (marked and counted); the others keep receiving."""
    feed, _, metrics = _feed(queue=2)
    slow, _slow_recv = feed.subscribe(FeedFilter())
    fast, fast_recv = feed.subscribe(FeedFilter())
    received = []
    for i in range(4):
        feed.broadcast(_message(symbol=f"S{i}"))
        received.append(fast_recv.receive_nowait()["symbol"])
    assert received == ["S0", "S1", "S2", "S3"]
    assert slow.dropped is True
    assert fast.dropped is False
    assert feed.subscribers == {fast}
    assert metrics.registry.get_sample_value("model_router_switch_subscribers_dropped_total") == 1


def test_a_subscriber_whose_receiver_is_gone_is_removed_quietly() -> None:
    """A closed receiving end unsubscribes without counting as slow."""
    feed, _, metrics = _feed()
    gone, gone_recv = feed.subscribe(FeedFilter())
    gone_recv.close()
    feed.broadcast(_message())
    assert feed.subscribers == set()
    assert gone.dropped is False
    assert metrics.registry.get_sample_value("model_router_switch_subscribers_dropped_total") == 0


def test_trigger_on_a_full_queue_is_counted_not_raised() -> None:
    """trigger never blocks its caller."""
    metrics = Metrics()
    send, _recv = trio.open_memory_channel[Trigger](1)
    feed = SwitchFeed(send, metrics)
    feed.trigger("a")
    feed.trigger("b")
    assert metrics.registry.get_sample_value("model_router_switch_triggers_dropped_total") == 1


def test_event_fields_and_stream_round_trip() -> None:
    """The stream entry converts back to the live message shape, with numbers restored."""
    event = SwitchEvent(1700000000.5, "BTC", "fast@1", "fast@2", 12.34567, "switch_step", None, "crypto", "e1")
    fields = redis_bus.stream_fields(event.fields())
    back = switch_feed.event_from_stream("1-0", {k: str(v) for k, v in fields.items()})
    assert back == {**event.message("1-0", replay=True), "latency_ms": 12.346}


# --------------------------------------------------------------------------- the actor


@attrs.define
class Serving:
    """A fake serve(): what each symbol would be served now."""

    now: dict[str, str | None] = attrs.field(factory=dict)

    def __call__(self, route: SymbolRoute) -> str | None:
        return self.now.get(route.symbol, route.served)


@attrs.define
class FeedActor:
    feed: SwitchFeed
    metrics: Metrics
    serving: Serving
    outbox: RedisOutbox


@asynccontextmanager
async def running_feed(outbox_factory: Any = None, redis_url: str | None = None) -> AsyncIterator[FeedActor]:
    metrics = Metrics()
    send, recv = trio.open_memory_channel[Trigger](64)
    feed = SwitchFeed(send, metrics, redis_url=redis_url)
    serving = Serving()
    async with trio.open_nursery() as nursery:
        outbox = await outbox_factory(nursery, metrics) if outbox_factory else disabled_outbox(metrics)
        await nursery.start(switch_feed.run, feed, recv, outbox, serving)
        yield FeedActor(feed, metrics, serving, outbox)
        nursery.cancel_scope.cancel()


def _note(feed: SwitchFeed, symbol: str, served: str, asset_class: str = "crypto") -> None:
    feed.recent.note(SymbolRoute(symbol, asset_class, 1000.0, served.split("@")[0], served))


async def test_trigger_emits_events_only_for_symbols_whose_serving_version_changed() -> None:
    """Only changed symbols produce events, with the seed fields, reason and operation id."""
    async with running_feed() as actor:
        feed = actor.feed
        _note(feed, "BTC", "fast@1")
        _note(feed, "ETH", "fast@1")
        _note(feed, "EUR", "backup@1", asset_class="fx")
        _, recv = feed.subscribe(FeedFilter())
        actor.serving.now.update({"BTC": "fast@2", "EUR": None})  # EUR unservable now: not a switch
        feed.trigger("switch_step", "sw-1")
        with trio.fail_after(5):
            message = await recv.receive()
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.WouldBlock):
            recv.receive_nowait()
    assert message["type"] == "switch"
    assert message["id"] is None  # no Redis configured
    assert message["replay"] is False
    assert (message["symbol"], message["old_model"], message["new_model"]) == ("BTC", "fast@1", "fast@2")
    assert (message["reason"], message["operation_id"], message["asset_class"]) == ("switch_step", "sw-1", "crypto")
    assert len(message["event_id"]) == 32
    assert message["timestamp"] == pytest.approx(time.time(), abs=30)
    assert feed.recent.routes["BTC"].served == "fast@2"
    assert feed.recent.routes["ETH"].served == "fast@1"


async def test_a_second_identical_trigger_emits_nothing_and_switches_are_counted_by_reason() -> None:
    """Recent routes are updated, so repeating the trigger finds no change; model_switch_total counts events."""
    async with running_feed() as actor:
        feed = actor.feed
        for symbol in ("A", "B", "C"):
            _note(feed, symbol, "fast@1")
        _, recv = feed.subscribe(FeedFilter())
        actor.serving.now.update({"A": "fast@2", "B": "fast@2"})
        feed.trigger("rollback")
        with trio.fail_after(5):
            first = [await recv.receive(), await recv.receive()]
        feed.trigger("rollback")
        feed.trigger("rules_reload")
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.WouldBlock):
            recv.receive_nowait()
        actor.serving.now["C"] = "backup@1"
        feed.trigger("rules_reload")
        with trio.fail_after(5):
            third = await recv.receive()
    assert sorted(m["symbol"] for m in first) == ["A", "B"]
    assert third["symbol"] == "C" and third["reason"] == "rules_reload"
    sample = actor.metrics.registry.get_sample_value
    assert sample("model_switch_total", {"reason": "rollback"}) == 2
    assert sample("model_switch_total", {"reason": "rules_reload"}) == 1


async def test_latency_is_measured_from_when_the_change_started() -> None:
    """latency_ms = time from the trigger's started_at to the feed evaluating it."""
    async with running_feed() as actor:
        _note(actor.feed, "BTC", "fast@1")
        _, recv = actor.feed.subscribe(FeedFilter())
        actor.serving.now["BTC"] = "fast@2"
        actor.feed.trigger("switch_complete", "sw-9", time.perf_counter() - 0.25)
        with trio.fail_after(5):
            message = await recv.receive()
    assert 250 <= message["latency_ms"] < 250 + 5000


async def test_latency_without_started_at_is_zero() -> None:
    """A trigger without a start time reports no latency (the change is effective immediately)."""
    async with running_feed() as actor:
        _note(actor.feed, "BTC", "fast@1")
        _, recv = actor.feed.subscribe(FeedFilter())
        actor.serving.now["BTC"] = "fast@2"
        actor.feed.trigger("breaker_open")
        with trio.fail_after(5):
            message = await recv.receive()
    assert message["latency_ms"] == 0


async def test_stopping_the_actor_closes_every_subscriber() -> None:
    """On the way out the feed closes subscriber channels, so WebSockets end."""
    async with running_feed() as actor:
        _, recv = actor.feed.subscribe(FeedFilter())
    with pytest.raises(trio.EndOfChannel):
        await recv.receive()
    assert actor.feed.subscribers == set()


# --------------------------------------------------------------------------- with a real Redis


async def _real_outbox(url: str, nursery: trio.Nursery, metrics: Metrics) -> RedisOutbox:
    """Start the Redis bus and wait (event-driven) for its first successful write."""
    send, recv = trio.open_memory_channel[RedisMessage](64)
    state = BusState()
    await nursery.start(partial(redis_bus.run, url, recv, metrics, state=state))
    outbox = RedisOutbox(send, metrics, state)
    reply_send, reply_recv = trio.open_memory_channel[str](1)
    assert outbox.offer(RedisMessage("xadd", "warmup", {"x": 1}, reply=reply_send))
    with trio.fail_after(10):
        await reply_recv.receive()
    assert state.connected
    return outbox


async def test_switch_events_land_in_the_redis_stream_and_carry_the_stream_id(redis_server: RedisServer) -> None:
    """XADD to model.switch.log with the seed fields; the live message has the entry id; read_since replays."""
    factory = partial(_real_outbox, redis_server.url)
    async with running_feed(factory, redis_url=redis_server.url) as actor:
        feed = actor.feed
        for symbol in ("AAA", "BBB", "CCC"):
            _note(feed, symbol, "fast@1")
        _, recv = feed.subscribe(FeedFilter())
        actor.serving.now["AAA"] = "fast@2"
        feed.trigger("switch_complete", "sw-r", time.perf_counter())
        with trio.fail_after(5):
            live_a = await recv.receive()
        actor.serving.now.update({"BBB": "fast@2", "CCC": "backup@1"})
        feed.trigger("rollback")
        with trio.fail_after(5):
            later = [await recv.receive(), await recv.receive()]
        entries = await trio.to_thread.run_sync(lambda: redis_server.client().xrange(STREAM))
        replay = await trio.to_thread.run_sync(feed.read_since, live_a["id"])
        replay_all = await trio.to_thread.run_sync(feed.read_since, "0")
    assert live_a["id"] is not None
    assert [e[0] for e in entries] == [live_a["id"], later[0]["id"], later[1]["id"]]
    fields = entries[0][1]
    assert set(SEED_FIELDS) <= set(fields)
    assert fields["symbol"] == "AAA"
    assert (fields["old_model"], fields["new_model"]) == ("fast@1", "fast@2")
    assert float(fields["timestamp"]) == pytest.approx(live_a["timestamp"])
    assert float(fields["latency_ms"]) == pytest.approx(live_a["latency_ms"])
    assert (fields["reason"], fields["operation_id"], fields["event_id"]) == ("switch_complete", "sw-r",
                                                                             live_a["event_id"])
    assert "operation_id" not in entries[1][1]  # None fields are left out of the stream entry
    assert [m["id"] for m in replay] == [later[0]["id"], later[1]["id"]]
    assert [m["symbol"] for m in replay] == [m["symbol"] for m in later]
    assert all(m["replay"] is True for m in replay)
    assert replay[0]["operation_id"] is None
    assert [m["event_id"] for m in replay_all] == [live_a["event_id"], *(m["event_id"] for m in later)]


async def test_with_redis_down_the_broadcast_still_happens_without_an_id(redis_server: RedisServer) -> None:
    """Redis stopping never holds back live subscribers: they get the event at once, id None."""
    factory = partial(_real_outbox, redis_server.url)
    async with running_feed(factory, redis_url=redis_server.url) as actor:
        feed = actor.feed
        for symbol in ("AAA", "BBB"):
            _note(feed, symbol, "fast@1")
        _, recv = feed.subscribe(FeedFilter())
        await trio.to_thread.run_sync(redis_server.stop)
        for symbol in ("AAA", "BBB"):
            actor.serving.now[symbol] = "fast@2"
            started = trio.current_time()
            feed.trigger("switch_complete")
            with trio.fail_after(2):
                message = await recv.receive()
            waited = trio.current_time() - started
            assert message["symbol"] == symbol
            assert message["id"] is None
            # at most the short id wait while the bus still believed Redis was up
            assert waited < switch_feed.ID_WAIT_S + 0.5


def test_read_since_without_redis_is_an_error() -> None:
    """Replay needs Redis; without a URL it says so."""
    feed, _, _ = _feed()
    with pytest.raises(RuntimeError, match="no Redis configured"):
        feed.read_since("0")
