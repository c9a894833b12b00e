"""Switch detection, fan-out to subscribers and the Redis switch log (actors/switch_feed.py)."""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import attrs
import orjson
import pytest
import trio
import trio.testing

from actors import redis_bus, switch_feed
from actors.core.recent_symbols import SymbolRoute
from actors.core.ws_frame import text_frame
from actors.redis_bus import BusState, RedisMessage, RedisOutbox, disabled_outbox
from actors.serving.metrics import Metrics
from actors.switch_feed import STREAM, FeedFilter, Frame, Subscriber, SwitchEvent, SwitchFeed, Trigger
from tests.conftest import RedisServer

SEED_FIELDS = ("timestamp", "symbol", "old_model", "new_model", "latency_ms")


def _message(**fields: Any) -> dict[str, Any]:
    base = {"symbol": "BTC", "asset_class": "crypto", "old_model": "fast@1", "new_model": "backup@1"}
    return {**base, **fields}


# --------------------------------------------------------------------------- filters


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


def _feed(queue: int = 256, **options: Any) -> tuple[SwitchFeed, trio.MemoryReceiveChannel[Trigger], Metrics]:
    metrics = Metrics()
    send, recv = trio.open_memory_channel[Trigger](64)
    return SwitchFeed(send, metrics, subscriber_queue=queue, **options), recv, metrics


def _subscribers(metrics: Metrics) -> float | None:
    return metrics.registry.get_sample_value("model_router_switch_subscribers")


def _dropped(metrics: Metrics) -> float | None:
    return metrics.registry.get_sample_value("model_router_switch_subscribers_dropped_total")


@asynccontextmanager
async def pumping(feed: SwitchFeed) -> AsyncIterator[trio.Nursery]:
    """The feed's pump running (what switch_feed.run starts), and a nursery for subscriber tasks."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(feed.pump)
        yield nursery
        nursery.cancel_scope.cancel()


async def _take(feed: SwitchFeed, subscriber: Subscriber, count: int) -> list[dict[str, Any]]:
    with trio.fail_after(5):
        return [(await _frame(feed, subscriber)).message for _ in range(count)]


async def _next(feed: SwitchFeed, subscriber: Subscriber) -> dict[str, Any]:
    return (await _frame(feed, subscriber)).message


async def _frame(feed: SwitchFeed, subscriber: Subscriber) -> Frame:
    frames = await feed.next_frames(subscriber)
    assert frames is not None and len(frames) == 1
    return frames[0]


async def test_subscribe_publish_unsubscribe() -> None:
    """Subscribers get matching messages only, in order; an unsubscribed one is done (None)."""
    feed, _, metrics = _feed()
    async with pumping(feed):
        everything = feed.subscribe(FeedFilter())
        eth_only = feed.subscribe(FeedFilter(symbol="ETH"))
        assert _subscribers(metrics) == 2
        feed.publish([_message(), _message(symbol="ETH"), _message(symbol="SOL")])
        assert [m["symbol"] for m in await _take(feed, everything, 3)] == ["BTC", "ETH", "SOL"]
        assert [m["symbol"] for m in await _take(feed, eth_only, 1)] == ["ETH"]
        feed.unsubscribe(everything)
        assert _subscribers(metrics) == 1
        assert await feed.next_frames(everything) is None
        feed.publish([_message(symbol="ETH", old_model="x@1")])
        assert [m["old_model"] for m in await _take(feed, eth_only, 1)] == ["x@1"]
    assert feed.subscribers == {eth_only}
    assert _dropped(metrics) == 0


async def test_each_event_is_encoded_once_and_every_subscriber_gets_every_event_in_order(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """One JSON encoding per event however many subscribers: they are all handed the same text."""
    encoded: list[dict[str, Any]] = []
    encode = switch_feed.encode

    def counting_encode(seq: int, message: dict[str, Any]) -> Frame:
        encoded.append(message)
        return encode(seq, message)

    monkeypatch.setattr(switch_feed, "encode", counting_encode)
    feed, _, _ = _feed()
    burst = [_message(symbol=f"S{i}") for i in range(20)]
    received: dict[int, list[Frame]] = {}

    async def subscriber(index: int, ready: trio.Event) -> None:
        me = feed.subscribe(FeedFilter())
        ready.set()
        received[index] = [await _frame(feed, me) for _ in range(len(burst))]

    async with pumping(feed) as nursery:
        for index in range(50):
            ready = trio.Event()
            nursery.start_soon(subscriber, index, ready)
            await ready.wait()
        feed.publish(burst[:5])
        feed.publish(burst[5:])
        with trio.fail_after(10):
            while len(received) < 50:
                await trio.testing.wait_all_tasks_blocked()
    assert len(encoded) == len(burst)
    first = received[0]
    assert [f.message["symbol"] for f in first] == [m["symbol"] for m in burst]
    assert orjson.loads(first[0].text) == burst[0]
    assert first[0].wire == text_frame(first[0].text.encode())
    for frames in received.values():
        assert [f.seq for f in frames] == [f.seq for f in first]
        assert all(mine is theirs for mine, theirs in zip(frames, first, strict=True))  # the same frame object


async def test_a_turn_hands_out_up_to_most_matching_frames_in_order() -> None:
    """A subscriber that writes frames in one go takes its whole backlog per turn (at most ``most``)."""
    feed, _, _ = _feed()
    async with pumping(feed):
        btc = feed.subscribe(FeedFilter(symbol="BTC"))
        feed.publish([_message(old_model=f"m@{i}", symbol="BTC" if i % 2 else "ETH") for i in range(10)])
        with trio.fail_after(5):
            first = await feed.next_frames(btc, 3)
            rest = await feed.next_frames(btc, 64)
        assert first is not None and rest is not None
        assert [f.message["old_model"] for f in first + rest] == ["m@1", "m@3", "m@5", "m@7", "m@9"]
        assert [len(first), len(rest)] == [3, 2]
        assert btc.sending is True  # holds frames until it asks again


async def test_taking_one_frame_per_turn_everybody_gets_the_first_event_before_anyone_the_second() -> None:
    """Turns go round: the subscribers a burst wakes take their first turns before anyone's next one."""
    feed, _, _ = _feed()
    taken: list[tuple[int, int]] = []

    async def subscriber(index: int, ready: trio.Event) -> None:
        me = feed.subscribe(FeedFilter())
        ready.set()
        for _ in range(3):
            taken.append((index, (await _frame(feed, me)).seq))

    async with pumping(feed) as nursery:
        for index in range(10):
            ready = trio.Event()
            nursery.start_soon(subscriber, index, ready)
            await ready.wait()
        await trio.testing.wait_all_tasks_blocked()
        feed.publish([_message(symbol=s) for s in ("A", "B", "C")])
        with trio.fail_after(10):
            while len(taken) < 30:
                await trio.testing.wait_all_tasks_blocked()
    assert [seq for _, seq in taken] == [0] * 10 + [1] * 10 + [2] * 10
    assert [index for index, _ in taken[10:20]] == [index for index, _ in taken[:10]]  # the same round


async def test_the_pump_paces_the_fan_out_per_scheduler_pass() -> None:
    """However many subscribers a burst wakes, a pass of the scheduler hands out at most one
    subscriber's frames, and only every ``passes_per_turn`` passes: request tasks get their
    passes between the socket writes."""
    feed, _, _ = _feed(passes_per_turn=2)
    taken_per_pass: list[int] = []
    taken = 0

    class Passes(trio.abc.Instrument):
        def before_io_wait(self, timeout: float) -> None:
            nonlocal taken
            taken_per_pass.append(taken)
            taken = 0

    async def subscriber(ready: trio.Event) -> None:
        nonlocal taken
        me = feed.subscribe(FeedFilter())
        ready.set()
        for _ in range(3):
            await _frame(feed, me)
            taken += 1

    async with pumping(feed) as nursery:
        for _ in range(40):
            ready = trio.Event()
            nursery.start_soon(subscriber, ready)
            await ready.wait()
        await trio.testing.wait_all_tasks_blocked()
        instrument = Passes()
        trio.lowlevel.add_instrument(instrument)
        feed.publish([_message(symbol=s) for s in ("A", "B", "C")])
        with trio.fail_after(10):
            while sum(taken_per_pass) + taken < 120:
                await trio.lowlevel.checkpoint()
        trio.lowlevel.remove_instrument(instrument)
    assert max(taken_per_pass) == 1
    assert len(taken_per_pass) >= 2 * 119
    assert all(not (a and b) for a, b in itertools.pairwise(taken_per_pass))  # never two passes in a row


async def test_a_subscriber_whose_socket_stops_taking_data_is_dropped_and_forgotten() -> None:
    """One stuck in its own write (it never asks for the next frame) is dropped past the queue
    bound, counted, and gets None; the others keep receiving everything; the log holds only
    what the live subscribers still need."""
    feed, _, metrics = _feed(queue=4)
    async with pumping(feed):
        stuck = feed.subscribe(FeedFilter())
        healthy = feed.subscribe(FeedFilter())
        feed.publish([_message(symbol="S0")])
        await _frame(feed, stuck)  # ... and never comes back for the next one
        received = [m["symbol"] for m in await _take(feed, healthy, 1)]
        for i in range(1, 8):
            feed.publish([_message(symbol=f"S{i}")])
            received += [m["symbol"] for m in await _take(feed, healthy, 1)]
            assert len(feed.log) <= 5
        assert received == [f"S{i}" for i in range(8)]
        assert stuck.dropped is True and healthy.dropped is False
        assert feed.subscribers == {healthy}
        assert _dropped(metrics) == 1
        assert _subscribers(metrics) == 1
        assert await feed.next_frames(stuck) is None
        # trimmed at each publish to what the live subscribers had not read: the last frame
        assert [f.message["symbol"] for f in feed.log] == ["S7"]
        assert metrics.registry.get_sample_value("model_router_switch_feed_backlog") == 1


async def test_a_subscriber_waiting_for_its_turn_is_not_dropped_below_the_log_limit() -> None:
    """Lag that is the fan-out's own (waiting for a turn, not writing) is allowed up to ``log_limit``:
    a burst bigger than the per-subscriber queue reaches everybody."""
    feed, _, metrics = _feed(queue=4, log_limit=50)
    async with pumping(feed):
        waiting = feed.subscribe(FeedFilter())
        feed.publish([_message(symbol=f"S{i}") for i in range(30)])
        assert [m["symbol"] for m in await _take(feed, waiting, 30)] == [f"S{i}" for i in range(30)]
        assert waiting.dropped is False
        feed.publish([_message(symbol=f"T{i}") for i in range(51)])
        assert waiting.dropped is True
        assert feed.log == []
        assert await feed.next_frames(waiting) is None
    assert _dropped(metrics) == 1


def test_unsubscribing_is_not_a_drop_and_frees_the_log() -> None:
    """A subscriber that leaves is removed quietly; with nobody listening nothing is kept."""
    feed, _, metrics = _feed()
    gone = feed.subscribe(FeedFilter())
    feed.publish([_message()])
    assert len(feed.log) == 1
    feed.unsubscribe(gone)
    assert feed.log == []
    feed.publish([_message(), _message()])
    assert feed.subscribers == set()
    assert gone.dropped is False
    assert feed.log == [] and feed.head == 3
    assert metrics.registry.get_sample_value("model_router_switch_feed_backlog") == 0
    assert _dropped(metrics) == 0


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
        me = feed.subscribe(FeedFilter())
        actor.serving.now.update({"BTC": "fast@2", "EUR": None})  # EUR unservable now: not a switch
        feed.trigger("switch_step", "sw-1")
        with trio.fail_after(5):
            message = await _next(feed, me)
        await trio.testing.wait_all_tasks_blocked()
        assert me.cursor == feed.head  # nothing more
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
        me = feed.subscribe(FeedFilter())
        actor.serving.now.update({"A": "fast@2", "B": "fast@2"})
        feed.trigger("rollback")
        with trio.fail_after(5):
            first = [await _next(feed, me), await _next(feed, me)]
        feed.trigger("rollback")
        feed.trigger("rules_reload")
        await trio.testing.wait_all_tasks_blocked()
        assert me.cursor == feed.head  # nothing more
        actor.serving.now["C"] = "backup@1"
        feed.trigger("rules_reload")
        with trio.fail_after(5):
            third = await _next(feed, me)
    assert sorted(m["symbol"] for m in first) == ["A", "B"]
    assert third["symbol"] == "C" and third["reason"] == "rules_reload"
    sample = actor.metrics.registry.get_sample_value
    assert sample("model_switch_total", {"reason": "rollback"}) == 2
    assert sample("model_switch_total", {"reason": "rules_reload"}) == 1


async def test_latency_is_measured_from_when_the_change_started() -> None:
    """latency_ms = time from the trigger's started_at to the feed evaluating it."""
    async with running_feed() as actor:
        _note(actor.feed, "BTC", "fast@1")
        me = actor.feed.subscribe(FeedFilter())
        actor.serving.now["BTC"] = "fast@2"
        actor.feed.trigger("switch_complete", "sw-9", time.perf_counter() - 0.25)
        with trio.fail_after(5):
            message = await _next(actor.feed, me)
    assert 250 <= message["latency_ms"] < 250 + 5000


async def test_latency_without_started_at_is_zero() -> None:
    """A trigger without a start time reports no latency (the change is effective immediately)."""
    async with running_feed() as actor:
        _note(actor.feed, "BTC", "fast@1")
        me = actor.feed.subscribe(FeedFilter())
        actor.serving.now["BTC"] = "fast@2"
        actor.feed.trigger("breaker_open")
        with trio.fail_after(5):
            message = await _next(actor.feed, me)
    assert message["latency_ms"] == 0


async def test_stopping_the_actor_closes_every_subscriber() -> None:
    """On the way out the feed closes subscriber channels, so WebSockets end."""
    async with running_feed() as actor:
        me = actor.feed.subscribe(FeedFilter())
    assert await actor.feed.next_frames(me) is None
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
        me = feed.subscribe(FeedFilter())
        actor.serving.now["AAA"] = "fast@2"
        feed.trigger("switch_complete", "sw-r", time.perf_counter())
        with trio.fail_after(5):
            live_a = await _next(feed, me)
        actor.serving.now.update({"BBB": "fast@2", "CCC": "backup@1"})
        feed.trigger("rollback")
        with trio.fail_after(5):
            later = [await _next(feed, me), await _next(feed, me)]
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
        me = feed.subscribe(FeedFilter())
        await trio.to_thread.run_sync(redis_server.stop)
        for symbol in ("AAA", "BBB"):
            actor.serving.now[symbol] = "fast@2"
            started = trio.current_time()
            feed.trigger("switch_complete")
            with trio.fail_after(2):
                message = await _next(feed, me)
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
