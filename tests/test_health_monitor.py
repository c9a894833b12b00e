"""Breakers, health windows, feedback and A/B arms (actors/health_monitor.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from actors import health_monitor
from actors.core.breaker import BreakerSettings
from actors.core.errors import InvalidInput, NotFound
from actors.core.health_stats import AlertThresholds
from actors.health_monitor import BreakerBoard, HealthMessage, HealthMonitor, Observation
from actors.serving.metrics import Metrics

KEY = ("fast", "2")
LABELS = ("SELL", "HOLD", "BUY")


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeTime:
    fake = FakeTime()
    monkeypatch.setattr(health_monitor.time, "monotonic", fake)
    return fake


def _board(changes: list[tuple[tuple[str, str], str, str]]) -> tuple[BreakerBoard, Metrics]:
    metrics = Metrics()
    board = BreakerBoard(BreakerSettings(failure_threshold=5, open_seconds=30.0, half_open_probes=1), metrics,
                         lambda key, old, new: changes.append((key, old, new)))
    return board, metrics


def _breaker_gauge(metrics: Metrics) -> float | None:
    return metrics.registry.get_sample_value("model_router_breaker_state", {"model": "fast", "version": "2"})


# --------------------------------------------------------------------------- BreakerBoard


def test_breaker_opens_after_five_consecutive_failures_and_reports_the_change(clock: FakeTime) -> None:
    """Four failures keep it closed (no callback); the fifth opens it, reported once with old/new states."""
    changes: list = []
    board, metrics = _board(changes)
    for _ in range(4):
        board.failure(KEY)
    assert board.state(KEY) == "closed"
    assert changes == []
    assert board.allow(KEY)
    board.failure(KEY)
    assert board.state(KEY) == "open"
    assert changes == [(KEY, "closed", "open")]
    assert _breaker_gauge(metrics) == 2
    assert not board.allow(KEY)
    assert board.is_open(KEY)


def test_a_success_resets_the_failure_count(clock: FakeTime) -> None:
    """Failures must be consecutive: a success in between starts the count again."""
    changes: list = []
    board, _ = _board(changes)
    for _ in range(4):
        board.failure(KEY)
    board.success(KEY)
    for _ in range(4):
        board.failure(KEY)
    assert board.state(KEY) == "closed"
    assert changes == []


def test_is_open_is_read_only(clock: FakeTime) -> None:
    """is_open never claims a probe nor changes state, even after the open period elapsed."""
    changes: list = []
    board, _ = _board(changes)
    assert not board.is_open(KEY)
    for _ in range(5):
        board.failure(KEY)
    before = board.breakers[KEY]
    assert board.is_open(KEY)
    clock.now += 31
    assert not board.is_open(KEY)  # a request would be let through as a probe now...
    assert not board.is_open(KEY)
    assert board.breakers[KEY] is before  # ...but asking did not take the probe
    assert board.state(KEY) == "open"
    assert changes == [(KEY, "closed", "open")]


def test_half_open_probe_after_open_seconds_and_success_closes(clock: FakeTime) -> None:
    """After open_seconds one probe goes through (half open), others wait; its success closes the breaker."""
    changes: list = []
    board, metrics = _board(changes)
    for _ in range(5):
        board.failure(KEY)
    clock.now += 29.9
    assert not board.allow(KEY)
    clock.now += 0.2
    assert board.allow(KEY)  # the probe
    assert board.state(KEY) == "half_open"
    assert _breaker_gauge(metrics) == 1
    assert not board.allow(KEY)  # only one probe at a time
    assert board.is_open(KEY)
    board.success(KEY)
    assert board.state(KEY) == "closed"
    assert changes == [(KEY, "closed", "open"), (KEY, "open", "half_open"), (KEY, "half_open", "closed")]
    assert _breaker_gauge(metrics) == 0


def test_failed_probe_reopens_with_a_fresh_timer(clock: FakeTime) -> None:
    """A failing probe re-opens the breaker for another full open period."""
    changes: list = []
    board, _ = _board(changes)
    for _ in range(5):
        board.failure(KEY)
    clock.now += 30
    assert board.allow(KEY)
    board.failure(KEY)
    assert board.state(KEY) == "open"
    clock.now += 29
    assert not board.allow(KEY)
    assert changes[-1] == (KEY, "half_open", "open")


def test_abandon_releases_a_probe_slot(clock: FakeTime) -> None:
    """A probe that ended without a verdict frees its slot so the next request can probe."""
    changes: list = []
    board, _ = _board(changes)
    for _ in range(5):
        board.failure(KEY)
    clock.now += 30
    assert board.allow(KEY)
    assert not board.allow(KEY)
    board.abandon(KEY)
    assert board.breakers[KEY].probes_in_flight == 0
    assert board.state(KEY) == "half_open"
    assert board.allow(KEY)
    board.abandon(("unknown", "1"))  # unknown key: nothing happens
    assert ("unknown", "1") not in board.breakers


def test_success_on_an_unknown_key_creates_nothing(clock: FakeTime) -> None:
    """Successes of versions that never failed do not allocate breakers."""
    changes: list = []
    board, _ = _board(changes)
    board.success(KEY)
    assert board.breakers == {}
    assert board.allow(KEY)


# --------------------------------------------------------------------------- HealthMonitor actor


@asynccontextmanager
async def running_monitor(capacity: int = 64, alerts: AlertThresholds | None = None) -> AsyncIterator[HealthMonitor]:
    metrics = Metrics()
    send, recv = trio.open_memory_channel[HealthMessage](capacity)
    monitor = HealthMonitor(send, metrics, BreakerBoard(BreakerSettings(), metrics),
                            alerts=alerts or AlertThresholds())
    async with trio.open_nursery() as nursery:
        await nursery.start(health_monitor.run, monitor, recv)
        yield monitor
        nursery.cancel_scope.cancel()


def _obs(cid: str | None = None, *, ok: bool = True, label: str | None = "BUY", version: str = "2",
         latency_s: float = 0.01, operation_id: str | None = None) -> Observation:
    predicted = ((cid, label),) if cid is not None and label is not None else ()
    return Observation("fast", version, latency_s, ok, predicted=predicted, labels=LABELS,
                       operation_id=operation_id)


async def test_observations_fold_into_the_version_window() -> None:
    """Counts, errors and error rate per version come from the observations the actor took."""
    async with running_monitor() as monitor:
        for i in range(8):
            monitor.observe(_obs(ok=i % 4 != 0, latency_s=0.002))
        monitor.observe(_obs(version="1"))
        await trio.testing.wait_all_tasks_blocked()
        snap = monitor.snapshot("fast", "2")
        assert (snap.count, snap.errors) == (8, 2)
        assert snap.error_rate == pytest.approx(0.25)
        assert snap.p50_ms == pytest.approx(2.0)
        assert monitor.snapshot("fast", "1").count == 1
        assert monitor.snapshot("fast", "9").count == 0
        assert monitor.known_versions() == {("fast", "2"), ("fast", "1")}


async def test_feedback_for_an_unknown_correlation_id_is_404() -> None:
    """Feedback nobody predicted is refused with status 404."""
    async with running_monitor() as monitor:
        with pytest.raises(NotFound):
            await monitor.feedback("nobody", "BUY")


async def test_feedback_with_a_label_the_model_does_not_have_is_422_with_the_labels() -> None:
    """An outcome outside the model's labels is 422 and lists the valid ones; the entry stays usable."""
    async with running_monitor() as monitor:
        monitor.observe(_obs("c1"))
        with pytest.raises(InvalidInput) as refused:
            await monitor.feedback("c1", "MOON")
        assert refused.value.details == {"labels": list(LABELS)}
        assert (await monitor.feedback("c1", "BUY"))["predicted"] == "BUY"


async def test_correct_and_incorrect_outcomes_update_accuracy_and_are_used_once() -> None:
    """Feedback compares with the predicted label, feeds the window's accuracy, and cannot be repeated."""
    async with running_monitor() as monitor:
        for cid in ("c1", "c2", "c3", "c4"):
            monitor.observe(_obs(cid, label="BUY"))
        first = await monitor.feedback("c1", "BUY")
        assert first == {"model": {"name": "fast", "version": "2"}, "predicted": "BUY",
                         "outcome": "BUY", "correct": True}
        assert (await monitor.feedback("c2", "SELL"))["correct"] is False
        assert (await monitor.feedback("c3", "BUY"))["correct"] is True
        snap = monitor.snapshot("fast", "2")
        assert snap.outcomes == 3
        assert snap.accuracy == pytest.approx(2 / 3)
        with pytest.raises(NotFound):
            await monitor.feedback("c1", "BUY")


async def test_failed_or_unlabelled_observations_are_not_feedback_targets() -> None:
    """Only successful predictions with a label and correlation id can receive feedback."""
    async with running_monitor() as monitor:
        monitor.observe(_obs("bad", ok=False))
        monitor.observe(_obs("nolabel", label=None))
        for correlation_id in ("bad", "nolabel"):
            with pytest.raises(NotFound):
                await monitor.feedback(correlation_id, "BUY")


async def test_feedback_right_after_its_observation_is_never_404() -> None:
    """Observation and feedback share one FIFO channel, so feedback cannot overtake its prediction."""
    async with running_monitor(capacity=1024) as monitor:
        for i in range(200):
            monitor.observe(_obs(f"c{i}"))
            result = await monitor.feedback(f"c{i}", "BUY")
            assert result["predicted"] == "BUY", (i, result)


async def test_feedback_index_is_bounded_counted_and_resized_by_a_reload() -> None:
    """Only the newest ``switching.feedback_index_size`` predictions take feedback; the gauge counts
    them; a reload's smaller size drops the oldest at once, in order with the observations."""
    async with running_monitor(capacity=1024) as monitor:
        monitor.feedback_index.resize(64)
        for i in range(200):
            monitor.observe(_obs(f"c{i}"))
        await trio.testing.wait_all_tasks_blocked()
        held = len(monitor.feedback_index)
        assert 56 <= held <= 64  # between 7/8 of the bound and all of it
        assert monitor.metrics.registry.get_sample_value("model_router_feedback_index_entries") == held
        with pytest.raises(NotFound):
            await monitor.feedback("c0", "BUY")
        assert (await monitor.feedback("c199", "BUY"))["correct"] is True

        monitor.limits_changed(BreakerSettings(), AlertThresholds(), feedback_index_size=8)
        monitor.observe(_obs("last"))
        await trio.testing.wait_all_tasks_blocked()
        assert len(monitor.feedback_index) <= 8
        assert (await monitor.feedback("last", "SELL"))["correct"] is False
        with pytest.raises(NotFound):
            await monitor.feedback("c150", "BUY")


async def test_ab_arms_are_kept_per_operation_and_reported_with_both_tests() -> None:
    """Observations and feedback tagged with an operation id build per-arm totals; the report has both tests."""
    async with running_monitor() as monitor:
        for i in range(30):
            monitor.observe(_obs(f"a{i}", version="1", operation_id="op1", latency_s=0.010 + (i % 3) * 0.001))
            monitor.observe(_obs(f"b{i}", version="2", operation_id="op1", latency_s=0.020 + (i % 3) * 0.001,
                                 ok=i != 0))
        monitor.observe(_obs("other", version="2", operation_id="op2"))
        for i in range(30):
            await monitor.feedback(f"a{i}", "BUY" if i < 27 else "SELL")  # control 27/30 correct
        for i in range(1, 30):
            await monitor.feedback(f"b{i}", "BUY" if i < 10 else "SELL")  # treatment 9/29 correct
        report = monitor.ab_report("op1", "1", "2")
    control, treatment = report["arms"]["1"], report["arms"]["2"]
    assert (control["requests"], control["errors"], control["outcomes"]) == (30, 0, 30)
    assert control["accuracy"] == pytest.approx(0.9)
    assert (treatment["requests"], treatment["errors"], treatment["outcomes"]) == (30, 1, 29)
    assert treatment["error_rate"] == pytest.approx(1 / 30, abs=1e-6)
    assert control["latency_mean_ms"] == pytest.approx(11.0)
    assert treatment["latency_mean_ms"] == pytest.approx(21.0)
    assert report["accuracy_test"]["significant"] is True
    assert report["accuracy_test"]["p_value"] < 0.01
    assert report["latency_test"]["significant"] is True
    assert report["latency_test"]["statistic"] < 0  # control faster than treatment


def test_ab_report_of_an_unknown_operation_has_empty_arms_and_no_significance() -> None:
    """Without data neither test can be significant."""
    metrics = Metrics()
    send, _recv = trio.open_memory_channel[HealthMessage](1)
    monitor = HealthMonitor(send, metrics, BreakerBoard(BreakerSettings(), metrics))
    report = monitor.ab_report("nope", "1", "2")
    assert report["arms"]["1"]["requests"] == 0
    assert report["arms"]["2"]["accuracy"] is None
    assert report["accuracy_test"]["significant"] is False
    assert report["latency_test"]["significant"] is False


async def test_verdict_judges_the_window_and_adds_a_breach_while_the_breaker_is_not_closed() -> None:
    """Healthy data gives a healthy verdict until the breaker opens; then the breaker is a breach."""
    async with running_monitor(alerts=AlertThresholds(min_requests=5)) as monitor:
        for _ in range(10):
            monitor.observe(_obs())
        await trio.testing.wait_all_tasks_blocked()
        verdict = monitor.verdict("fast", "2", max_latency_ms=None, min_accuracy=None, min_samples=10)
        assert verdict.healthy and verdict.enough_data and verdict.breaches == ()
        for _ in range(5):
            monitor.breakers.failure(KEY)
        verdict = monitor.verdict("fast", "2", max_latency_ms=None, min_accuracy=None, min_samples=10)
        assert not verdict.healthy
        assert verdict.enough_data
        assert verdict.breaches == ("circuit breaker open",)


async def test_verdict_reports_error_rate_breach() -> None:
    """Enough failing requests make an error-rate breach."""
    async with running_monitor(alerts=AlertThresholds(min_requests=5)) as monitor:
        for i in range(10):
            monitor.observe(_obs(ok=i < 5))
        await trio.testing.wait_all_tasks_blocked()
        verdict = monitor.verdict("fast", "2", max_latency_ms=None, min_accuracy=None, min_samples=10)
        assert not verdict.healthy
        assert any(b.startswith("error_rate 0.5") for b in verdict.breaches)


async def test_a_full_inbox_drops_observations_and_counts_them() -> None:
    """observe never blocks: with the actor not draining a full inbox, extra observations are counted as dropped."""
    metrics = Metrics()
    send, recv = trio.open_memory_channel[HealthMessage](2)
    monitor = HealthMonitor(send, metrics, BreakerBoard(BreakerSettings(), metrics))
    for _ in range(5):
        monitor.observe(_obs())
    assert metrics.registry.get_sample_value("model_router_health_observations_dropped_total") == 3
    async with trio.open_nursery() as nursery:  # the two kept ones are taken once the actor runs
        await nursery.start(health_monitor.run, monitor, recv)
        await trio.testing.wait_all_tasks_blocked()
        assert monitor.snapshot("fast", "2").count == 2
        nursery.cancel_scope.cancel()


async def test_observe_after_the_actor_stopped_counts_a_drop() -> None:
    """A closed inbox is a drop, not an exception in the request path."""
    metrics = Metrics()
    send, recv = trio.open_memory_channel[HealthMessage](2)
    monitor = HealthMonitor(send, metrics, BreakerBoard(BreakerSettings(), metrics))
    await recv.aclose()
    monitor.observe(_obs())
    assert metrics.registry.get_sample_value("model_router_health_observations_dropped_total") == 1


async def test_breaker_cycle_on_the_trio_clock(autojump_clock: trio.testing.MockClock) -> None:
    """The board as the service runs it (trio's clock): open for 30 s, one probe, then closed."""
    changes: list[tuple[tuple[str, str], str, str]] = []
    board = BreakerBoard(BreakerSettings(failure_threshold=5, open_seconds=30.0), Metrics(),
                         lambda key, old, new: changes.append((key, old, new)), clock=trio.current_time)
    key = ("fast", "2")
    for _ in range(5):
        board.failure(key)
    assert board.state(key) == "open" and not board.allow(key)
    await trio.sleep(29)
    assert not board.allow(key) and board.is_open(key)
    await trio.sleep(2)
    assert board.allow(key)  # the probe
    assert board.state(key) == "half_open" and not board.allow(key)  # only one probe at a time
    board.success(key)
    assert board.state(key) == "closed" and board.allow(key)
    assert [new for _, _, new in changes] == ["open", "half_open", "closed"]
