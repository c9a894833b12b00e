"""Sliding-window health, verdicts, Welford moments and significance tests (actors/core/health_stats.py)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from actors.core.health_stats import (
    AlertThresholds,
    HealthSnapshot,
    RunningMoments,
    SlidingWindow,
    TestResult,
    WindowSettings,
    judge,
    regularized_incomplete_beta,
    student_t_two_sided_p,
    two_proportion_test,
    welch_t_test,
)
from actors.core.switch_policy import Verdict

# --------------------------------------------------------------------------- sliding window


def _snapshot(**overrides: object) -> HealthSnapshot:
    """A healthy-looking snapshot with 100 requests, overridable per test."""
    base: dict = dict(
        count=100,
        errors=0,
        error_rate=0.0,
        p50_ms=10.0,
        p95_ms=20.0,
        p99_ms=30.0,
        accuracy=None,
        outcomes=0,
        window_s=60.0,
    )
    base.update(overrides)
    return HealthSnapshot(**base)


def test_empty_window_snapshot() -> None:
    """No data: zero counts, no percentiles, no accuracy."""
    snap = SlidingWindow().snapshot(5.0)
    assert snap == HealthSnapshot(
        count=0,
        errors=0,
        error_rate=0.0,
        p50_ms=None,
        p95_ms=None,
        p99_ms=None,
        accuracy=None,
        outcomes=0,
        window_s=60.0,
    )
    json.dumps(snap.to_dict())


def test_counts_error_rate_and_percentiles() -> None:
    """Counts, error rate and millisecond percentiles match numpy over the recorded samples."""
    window = SlidingWindow(WindowSettings(window_s=60.0, buckets=6))
    latencies = [0.001 * i for i in range(1, 101)]
    for i, latency in enumerate(latencies):
        window.record(1000.0 + i * 0.1, latency, ok=i % 10 != 0)
    snap = window.snapshot(1010.0)
    assert snap.count == 100
    assert snap.errors == 10
    assert snap.error_rate == pytest.approx(0.1)
    expected = np.percentile(np.array(latencies) * 1000.0, [50, 95, 99])
    assert snap.p50_ms == pytest.approx(expected[0])
    assert snap.p95_ms == pytest.approx(expected[1])
    assert snap.p99_ms == pytest.approx(expected[2])
    assert snap.to_dict()["count"] == 100


def test_accuracy_from_outcomes() -> None:
    """Accuracy is correct outcomes over resolved outcomes in the window."""
    window = SlidingWindow()
    for i in range(8):
        window.record_outcome(10.0 + i, correct=i < 6)
    snap = window.snapshot(20.0)
    assert snap.outcomes == 8
    assert snap.accuracy == pytest.approx(0.75)
    assert snap.count == 0


def test_records_older_than_the_window_vanish() -> None:
    """A record is gone once a full window has passed, and visible until close to that."""
    window = SlidingWindow(WindowSettings(window_s=60.0, buckets=6))
    window.record(100.0, 0.01, ok=False)
    window.record_outcome(100.0, correct=True)
    assert window.snapshot(100.0).count == 1
    assert window.snapshot(149.9).count == 1  # still within (bucket-aligned) window
    gone = window.snapshot(160.0)
    assert (gone.count, gone.errors, gone.outcomes, gone.p50_ms, gone.accuracy) == (0, 0, 0, None, None)


def test_only_expired_buckets_drop_out() -> None:
    """Older buckets expire one by one while recent ones stay."""
    window = SlidingWindow(WindowSettings(window_s=60.0, buckets=6))
    for t in (0.0, 10.0, 20.0, 30.0, 40.0, 50.0):
        window.record(t, 0.001, ok=True)
    assert window.snapshot(59.0).count == 6
    assert window.snapshot(60.0).count == 5
    assert window.snapshot(85.0).count == 3
    assert window.snapshot(110.0).count == 0


def test_bucket_reused_after_a_full_ring_is_reset() -> None:
    """Recording into a ring slot that held an old slice starts from zero (lazy reset)."""
    window = SlidingWindow(WindowSettings(window_s=60.0, buckets=6))
    for _ in range(5):
        window.record(5.0, 1.0, ok=False)
    window.record(65.0, 0.002, ok=True)  # same slot (epoch 6 % 6 == 0 % 6)
    snap = window.snapshot(65.0)
    assert (snap.count, snap.errors) == (1, 0)
    assert snap.p99_ms == pytest.approx(2.0)


def test_late_records_do_not_wipe_newer_data() -> None:
    """A record stamped before the window, or for a slot already reused, is dropped."""
    window = SlidingWindow(WindowSettings(window_s=60.0, buckets=6))
    window.record(65.0, 0.002, ok=True)
    window.record(5.0, 1.0, ok=False)
    window.record_outcome(5.0, correct=False)
    snap = window.snapshot(65.0)
    assert (snap.count, snap.errors, snap.outcomes) == (1, 0, 0)


def test_reservoir_bounds_samples_but_not_counts() -> None:
    """More samples than the bound keep counts exact and a representative, bounded reservoir."""
    settings = WindowSettings(window_s=60.0, buckets=1, max_samples_per_bucket=100)
    window = SlidingWindow(settings)
    values = [i / 1000.0 for i in range(10_000)]
    for v in values:
        window.record(1.0, v, ok=True)
    assert window.snapshot(1.0).count == 10_000
    bucket = window._buckets[0]
    assert len(bucket.latencies) == 100
    assert bucket.latency_seen == 10_000
    # A uniform sample of 0..10 s has its median near 5 s.
    assert 3500.0 < window.snapshot(1.0).p50_ms < 6500.0


def test_reservoir_is_deterministic() -> None:
    """Two windows fed the same data keep the same samples (seeded RNG)."""
    settings = WindowSettings(buckets=1, max_samples_per_bucket=10)
    a, b = SlidingWindow(settings), SlidingWindow(settings)
    for i in range(1000):
        a.record(0.0, i / 100.0, ok=True)
        b.record(0.0, i / 100.0, ok=True)
    assert a.snapshot(0.0) == b.snapshot(0.0)


def test_non_finite_latency_counts_request_but_not_sample() -> None:
    """A NaN latency is counted as a request but kept out of the percentiles."""
    window = SlidingWindow()
    window.record(0.0, float("nan"), ok=False)
    snap = window.snapshot(0.0)
    assert (snap.count, snap.errors, snap.p50_ms) == (1, 1, None)


def test_window_settings_validation() -> None:
    """Degenerate window settings are rejected."""
    for kwargs in ({"window_s": 0.0}, {"buckets": 0}, {"max_samples_per_bucket": 0}):
        with pytest.raises(ValueError):
            WindowSettings(**kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- judge


ALERTS = AlertThresholds(error_rate=0.05, latency_p95_ms=5000.0, min_requests=20)


def test_judge_healthy() -> None:
    """Enough requests and no breach is healthy."""
    verdict = judge(_snapshot(), max_latency_ms=None, min_accuracy=None, min_samples=10, alerts=ALERTS)
    assert verdict == Verdict(healthy=True, enough_data=True, breaches=())


def test_judge_not_enough_data_hides_request_breaches() -> None:
    """Below min_requests: no verdict on errors or latency, and not healthy."""
    snap = _snapshot(count=19, errors=19, error_rate=1.0, p95_ms=99999.0)
    verdict = judge(snap, max_latency_ms=None, min_accuracy=None, min_samples=10, alerts=ALERTS)
    assert verdict == Verdict(healthy=False, enough_data=False, breaches=())


def test_judge_error_rate_breach() -> None:
    """An error rate above the alert threshold is a breach with numbers in the message."""
    snap = _snapshot(count=100, errors=10, error_rate=0.1)
    verdict = judge(snap, max_latency_ms=None, min_accuracy=None, min_samples=10, alerts=ALERTS)
    assert not verdict.healthy
    assert verdict.enough_data
    assert verdict.breaches == ("error_rate 0.1 > 0.05 (10/100 requests)",)


def test_judge_error_rate_at_threshold_is_fine() -> None:
    """Exactly at the threshold is not a breach."""
    snap = _snapshot(count=100, errors=5, error_rate=0.05)
    assert judge(snap, max_latency_ms=None, min_accuracy=None, min_samples=10, alerts=ALERTS).healthy


def test_judge_latency_uses_model_limit_else_alert_default() -> None:
    """The model's max_latency_ms wins over the service default."""
    snap = _snapshot(p95_ms=600.0)
    own = judge(snap, max_latency_ms=500.0, min_accuracy=None, min_samples=10, alerts=ALERTS)
    assert own.breaches == ("latency p95 600.0 ms > 500.0 ms",)
    default = judge(snap, max_latency_ms=None, min_accuracy=None, min_samples=10, alerts=ALERTS)
    assert default.healthy
    slow = judge(_snapshot(p95_ms=6000.0), max_latency_ms=None, min_accuracy=None, min_samples=10, alerts=ALERTS)
    assert slow.breaches == ("latency p95 6000.0 ms > 5000.0 ms",)


def test_judge_accuracy_needs_min_samples() -> None:
    """Accuracy below the minimum is a breach only with enough resolved outcomes."""
    few = _snapshot(accuracy=0.4, outcomes=9)
    assert judge(few, max_latency_ms=None, min_accuracy=0.55, min_samples=10, alerts=ALERTS).healthy
    many = _snapshot(accuracy=0.4, outcomes=50)
    verdict = judge(many, max_latency_ms=None, min_accuracy=0.55, min_samples=10, alerts=ALERTS)
    assert verdict.breaches == ("accuracy 0.4 < 0.55 over 50 outcomes",)
    assert judge(many, max_latency_ms=None, min_accuracy=None, min_samples=10, alerts=ALERTS).healthy


def test_judge_accuracy_breach_with_low_request_count() -> None:
    """Outcomes are their own evidence: a bad accuracy breaches even while requests are few."""
    snap = _snapshot(count=3, accuracy=0.3, outcomes=40)
    verdict = judge(snap, max_latency_ms=None, min_accuracy=0.5, min_samples=20, alerts=ALERTS)
    assert verdict == Verdict(healthy=False, enough_data=False, breaches=("accuracy 0.3 < 0.5 over 40 outcomes",))


def test_judge_multiple_breaches() -> None:
    """All breaches are listed, in a stable order."""
    snap = _snapshot(errors=50, error_rate=0.5, p95_ms=9000.0, accuracy=0.1, outcomes=100)
    verdict = judge(snap, max_latency_ms=None, min_accuracy=0.5, min_samples=10, alerts=ALERTS)
    assert [b.split()[0] for b in verdict.breaches] == ["error_rate", "latency", "accuracy"]


def test_judge_on_a_real_window() -> None:
    """Window and judge together: a failing version is flagged."""
    window = SlidingWindow()
    for i in range(40):
        window.record(float(i), 0.01, ok=i % 4 != 0)
    verdict = judge(window.snapshot(40.0), max_latency_ms=None, min_accuracy=None, min_samples=10, alerts=ALERTS)
    assert verdict.enough_data
    assert not verdict.healthy
    assert verdict.breaches[0].startswith("error_rate 0.25 > 0.05")


# --------------------------------------------------------------------------- moments


def test_welford_matches_numpy() -> None:
    """Running mean and sample variance equal numpy's, including for large offsets."""
    rng = np.random.default_rng(7)
    for data in (rng.normal(3.0, 2.0, 1000), rng.normal(1e9, 1.0, 500), np.array([1.0, 2.0])):
        moments = RunningMoments.of(data)
        assert moments.count == len(data)
        assert moments.mean == pytest.approx(float(np.mean(data)), rel=1e-12)
        assert moments.variance == pytest.approx(float(np.var(data, ddof=1)), rel=1e-6)


def test_welford_small_counts() -> None:
    """Variance is 0 below two observations; add returns a new value."""
    empty = RunningMoments()
    assert (empty.count, empty.mean, empty.variance) == (0, 0.0, 0.0)
    one = empty.add(5.0)
    assert (one.count, one.mean, one.variance) == (1, 5.0, 0.0)
    assert empty == RunningMoments()


# --------------------------------------------------------------------------- t distribution


@pytest.mark.parametrize(
    ("a", "b", "x", "expected"),
    [
        (1.0, 1.0, 0.3, 0.3),
        (3.0, 1.0, 0.5, 0.125),
        (1.0, 4.0, 0.2, 1 - 0.8**4),
        (2.0, 2.0, 0.5, 0.5),
        (0.5, 0.5, 0.25, 2 / math.pi * math.asin(0.5)),
    ],
)
def test_incomplete_beta_closed_forms(a: float, b: float, x: float, expected: float) -> None:
    """I_x(a, b) against closed forms."""
    assert regularized_incomplete_beta(a, b, x) == pytest.approx(expected, abs=1e-12)
    assert regularized_incomplete_beta(b, a, 1 - x) == pytest.approx(1 - expected, abs=1e-12)


def test_incomplete_beta_edges_and_errors() -> None:
    """x = 0 and 1 are exact; invalid arguments raise."""
    assert regularized_incomplete_beta(2.0, 3.0, 0.0) == 0.0
    assert regularized_incomplete_beta(2.0, 3.0, 1.0) == 1.0
    with pytest.raises(ValueError):
        regularized_incomplete_beta(0.0, 1.0, 0.5)
    with pytest.raises(ValueError):
        regularized_incomplete_beta(1.0, 1.0, 1.5)


@pytest.mark.parametrize(
    ("t", "df", "expected", "tol"),
    [
        (2.0, 10, 0.0734, 1e-4),  # table value
        (2.228, 10, 0.05, 1e-4),  # t_{0.975, 10}
        (12.706, 1, 0.05, 1e-4),  # t_{0.975, 1}
        (2.086, 20, 0.05, 1e-4),  # t_{0.975, 20}
        (2.576, 100_000, 0.01, 1e-4),  # ~ normal
        (1.96, 1e6, 0.05, 1e-4),  # ~ normal
        (1.96, 1e9, 0.05, 1e-4),  # normal fallback
        (0.0, 5, 1.0, 1e-12),
        (2.0, 1, 1 - 2 / math.pi * math.atan(2.0), 1e-12),  # Cauchy closed form
        (1.5, 2, 1 - 1.5 / math.sqrt(2 + 1.5**2), 1e-12),  # df = 2 closed form
    ],
)
def test_student_t_two_sided_p(t: float, df: float, expected: float, tol: float) -> None:
    """Two-sided Student t p-values against tables and closed forms."""
    assert student_t_two_sided_p(t, df) == pytest.approx(expected, abs=tol)
    assert student_t_two_sided_p(-t, df) == pytest.approx(student_t_two_sided_p(t, df), abs=1e-15)


def test_student_t_edges() -> None:
    """Infinite t has p 0; df must be positive."""
    assert student_t_two_sided_p(math.inf, 3) == 0.0
    with pytest.raises(ValueError):
        student_t_two_sided_p(1.0, 0)


# --------------------------------------------------------------------------- significance tests


def test_two_proportion_reference_value() -> None:
    """45/100 vs 60/100, pooled: z = -0.15 / sqrt(0.525 * 0.475 * 0.02) = -2.1240, p = 0.0337."""
    result = two_proportion_test(45, 100, 60, 100)
    assert result.statistic == pytest.approx(-0.15 / math.sqrt(0.525 * 0.475 * 0.02), rel=1e-12)
    assert result.statistic == pytest.approx(-2.1240, abs=1e-4)
    assert result.p_value == pytest.approx(0.03367, abs=1e-5)
    assert result.significant
    assert result.alpha == 0.05


def test_two_proportion_symmetry_and_alpha() -> None:
    """Swapping the groups flips z's sign but not p; alpha decides significance."""
    ab = two_proportion_test(45, 100, 60, 100)
    ba = two_proportion_test(60, 100, 45, 100)
    assert ba.statistic == pytest.approx(-ab.statistic)
    assert ba.p_value == pytest.approx(ab.p_value)
    assert not two_proportion_test(45, 100, 60, 100, alpha=0.01).significant


def test_two_proportion_equal_rates() -> None:
    """Identical rates: z = 0, p = 1."""
    result = two_proportion_test(30, 100, 60, 200)
    assert result.statistic == pytest.approx(0.0, abs=1e-12)
    assert result.p_value == pytest.approx(1.0)
    assert not result.significant


@pytest.mark.parametrize("args", [(0, 0, 5, 10), (5, 10, 0, 0), (0, 10, 0, 20), (10, 10, 20, 20)])
def test_two_proportion_degenerate(args: tuple[int, int, int, int]) -> None:
    """Empty groups or a pooled proportion of 0 or 1: no test, p = 1, with a note."""
    result = two_proportion_test(*args)
    assert (result.statistic, result.p_value, result.significant) == (0.0, 1.0, False)
    assert result.note


def test_two_proportion_invalid_counts() -> None:
    """Successes outside [0, n] or a bad alpha raise."""
    with pytest.raises(ValueError):
        two_proportion_test(11, 10, 1, 10)
    with pytest.raises(ValueError):
        two_proportion_test(-1, 10, 1, 10)
    with pytest.raises(ValueError):
        two_proportion_test(1, 10, 1, 10, alpha=1.5)


# Welch's t-test example 1 from Wikipedia ("Welch's t-test"): t = -2.46, df = 24.99, p = 0.021.
WIKI_A1 = [27.5, 21.0, 19.0, 23.6, 17.0, 17.9, 16.9, 20.1, 21.9, 22.6, 23.1, 19.6, 19.0, 21.7, 21.4]
WIKI_A2 = [27.1, 22.0, 20.8, 23.4, 23.4, 23.5, 25.8, 22.0, 24.8, 20.2, 21.9, 22.1, 22.9, 20.5, 24.4]


def test_welch_reference_value() -> None:
    """Welch's t, df and p for a published example."""
    result = welch_t_test(RunningMoments.of(WIKI_A1), RunningMoments.of(WIKI_A2))
    assert result.statistic == pytest.approx(-2.46, abs=0.005)
    assert result.p_value == pytest.approx(0.021, abs=0.0005)
    assert result.significant
    assert "df=24.99" in result.note


def test_welch_matches_formula_and_symmetry() -> None:
    """t and p follow the Welch formulas (p at the Welch-Satterthwaite df); swapping flips t only."""
    rng = np.random.default_rng(3)
    a_data, b_data = rng.normal(0.0, 1.0, 40), rng.normal(0.3, 2.0, 25)
    a, b = RunningMoments.of(a_data), RunningMoments.of(b_data)
    va, vb = np.var(a_data, ddof=1) / 40, np.var(b_data, ddof=1) / 25
    t = (np.mean(a_data) - np.mean(b_data)) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / 39 + vb**2 / 24)
    result = welch_t_test(a, b)
    assert result.statistic == pytest.approx(t, rel=1e-9)
    assert result.p_value == pytest.approx(student_t_two_sided_p(t, df), rel=1e-9)
    swapped = welch_t_test(b, a)
    assert swapped.statistic == pytest.approx(-result.statistic)
    assert swapped.p_value == pytest.approx(result.p_value)


def test_welch_identical_samples_not_significant() -> None:
    """Same data on both sides: t = 0, p = 1."""
    m = RunningMoments.of([1.0, 2.0, 3.0, 4.0])
    result = welch_t_test(m, m)
    assert result.statistic == 0.0
    assert result.p_value == pytest.approx(1.0)
    assert not result.significant


def test_welch_too_few_observations() -> None:
    """Fewer than two observations on a side: p = 1 with a note."""
    result = welch_t_test(RunningMoments.of([1.0]), RunningMoments.of([1.0, 2.0, 3.0]))
    assert (result.p_value, result.significant) == (1.0, False)
    assert "two observations" in result.note


def test_welch_constant_samples() -> None:
    """Zero variance on both sides: equal means -> p 1; different means -> p 0, infinite t."""
    same = welch_t_test(RunningMoments.of([2.0, 2.0]), RunningMoments.of([2.0, 2.0, 2.0]))
    assert (same.p_value, same.significant) == (1.0, False)
    differ = welch_t_test(RunningMoments.of([1.0, 1.0]), RunningMoments.of([2.0, 2.0]))
    assert (differ.p_value, differ.significant, differ.statistic) == (0.0, True, -math.inf)
    assert differ.to_dict()["statistic"] is None
    json.dumps(differ.to_dict())


def test_test_result_to_dict() -> None:
    """to_dict is JSON-able with every field."""
    result = TestResult(statistic=1.5, p_value=0.2, significant=False, alpha=0.05, note="n")
    assert result.to_dict() == {"statistic": 1.5, "p_value": 0.2, "significant": False, "alpha": 0.05, "note": "n"}
    json.dumps(result.to_dict())
