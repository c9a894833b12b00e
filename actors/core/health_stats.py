"""Health of a model version over a sliding window, verdicts for switch operations, and significance tests.

Pure statistics with no I/O and no clock: every call takes ``now``. :class:`SlidingWindow` is
the one mutable class here, because copying hundreds of latency samples on every request
would be wasteful; it is owned by exactly one actor (one window per model version) and never
shared between tasks, so it needs no locking.

The window is a ring of ``buckets`` time buckets, each ``window_s / buckets`` seconds wide.
A bucket is reset lazily when time has moved a whole ring past it, so idle versions cost
nothing and a record disappears at most ``window_s`` after it was made. Latency samples per
bucket are bounded by reservoir sampling (Vitter's algorithm R) with a deterministic RNG,
so memory is fixed under load spikes and tests are reproducible.

The significance tests (pooled two-proportion z-test, Welch's t-test) are implemented from
first principles — the Student t CDF via the regularized incomplete beta function's
continued fraction (Numerical Recipes ``betacf``) — to avoid a SciPy dependency in the
serving image.
"""

from __future__ import annotations

import math
import random
from typing import Any

import attrs
import numpy as np

from actors.core.switch_policy import Verdict

# --------------------------------------------------------------------------- sliding window


@attrs.frozen
class WindowSettings:
    """Window length, its resolution in buckets, and the latency sample bound per bucket."""

    window_s: float = 60.0
    buckets: int = 6
    max_samples_per_bucket: int = 512

    def __attrs_post_init__(self) -> None:
        """Reject settings that would make bucket arithmetic meaningless."""
        if not (self.window_s > 0 and math.isfinite(self.window_s)):
            raise ValueError(f"window_s must be a positive finite number, got {self.window_s!r}")
        if self.buckets < 1:
            raise ValueError(f"buckets must be at least 1, got {self.buckets!r}")
        if self.max_samples_per_bucket < 1:
            raise ValueError(f"max_samples_per_bucket must be at least 1, got {self.max_samples_per_bucket!r}")


@attrs.frozen
class HealthSnapshot:
    """Aggregates over the live buckets of one window at one instant."""

    count: int
    errors: int
    error_rate: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    accuracy: float | None
    outcomes: int
    window_s: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form for ``/stats`` and logs."""
        return attrs.asdict(self)


@attrs.define
class _Bucket:
    """Counters and a bounded latency reservoir for one time slice (``epoch`` = slice index)."""

    epoch: int = -1
    count: int = 0
    errors: int = 0
    latencies: list[float] = attrs.Factory(list)
    latency_seen: int = 0
    outcomes: int = 0
    correct: int = 0


class SlidingWindow:
    """Request and outcome statistics over the last ``window_s`` seconds (mutable; single owner).

    Latency is recorded for failed requests too: a timeout is exactly the latency an
    operator needs to see in p95/p99.
    """

    def __init__(self, settings: WindowSettings | None = None, *, seed: int = 0) -> None:
        """Create an empty window; ``seed`` fixes the reservoir RNG so results are reproducible."""
        self.settings = settings if settings is not None else WindowSettings()
        self._width = self.settings.window_s / self.settings.buckets
        self._buckets = [_Bucket() for _ in range(self.settings.buckets)]
        self._rng = random.Random(seed)
        self._latest_epoch: int | None = None

    def _epoch(self, now: float) -> int:
        """Index of the time slice containing ``now``."""
        return math.floor(now / self._width)

    def _bucket_for(self, now: float) -> _Bucket | None:
        """The bucket to record into, reset if it holds an expired slice; None for stale timestamps."""
        epoch = self._epoch(now)
        if self._latest_epoch is None or epoch > self._latest_epoch:
            self._latest_epoch = epoch
        if epoch <= self._latest_epoch - self.settings.buckets:
            return None  # older than the window already: would be invisible anyway
        bucket = self._buckets[epoch % self.settings.buckets]
        if bucket.epoch > epoch:
            return None  # the slot already holds a newer slice; do not wipe it for a late record
        if bucket.epoch != epoch:
            bucket.epoch = epoch
            bucket.count = bucket.errors = bucket.latency_seen = bucket.outcomes = bucket.correct = 0
            bucket.latencies = []
        return bucket

    def record(self, now: float, latency_s: float, ok: bool, count: int = 1) -> None:
        """Count ``count`` requests answered by one call, with its latency and whether it succeeded."""
        bucket = self._bucket_for(now)
        if bucket is None:
            return
        bucket.count += count
        if not ok:
            bucket.errors += count
        if not math.isfinite(latency_s) or latency_s < 0:
            return
        bucket.latency_seen += 1
        limit = self.settings.max_samples_per_bucket
        if len(bucket.latencies) < limit:
            bucket.latencies.append(latency_s)
        else:
            slot = self._rng.randrange(bucket.latency_seen)
            if slot < limit:
                bucket.latencies[slot] = latency_s

    def record_outcome(self, now: float, correct: bool) -> None:
        """Count one resolved prediction (e.g. the predicted direction matched the realised move)."""
        bucket = self._bucket_for(now)
        if bucket is None:
            return
        bucket.outcomes += 1
        if correct:
            bucket.correct += 1

    def _live(self, now: float) -> list[_Bucket]:
        """Buckets whose slice lies within the window ending at ``now``."""
        current = self._epoch(now)
        oldest = current - self.settings.buckets
        return [b for b in self._buckets if oldest < b.epoch <= current]

    def snapshot(self, now: float) -> HealthSnapshot:
        """Aggregate the live buckets; percentiles in milliseconds, None without samples."""
        live = self._live(now)
        count = sum(b.count for b in live)
        errors = sum(b.errors for b in live)
        outcomes = sum(b.outcomes for b in live)
        correct = sum(b.correct for b in live)
        samples = [x for b in live for x in b.latencies]
        p50 = p95 = p99 = None
        if samples:
            p50, p95, p99 = (float(v) * 1000.0 for v in np.percentile(np.asarray(samples), [50, 95, 99]))
        return HealthSnapshot(
            count=count,
            errors=errors,
            error_rate=errors / count if count else 0.0,
            p50_ms=p50,
            p95_ms=p95,
            p99_ms=p99,
            accuracy=correct / outcomes if outcomes else None,
            outcomes=outcomes,
            window_s=self.settings.window_s,
        )


# --------------------------------------------------------------------------- verdicts


@attrs.frozen
class AlertThresholds:
    """Service-wide limits applied when a model does not set its own."""

    error_rate: float = 0.05
    latency_p95_ms: float = 5000.0
    min_requests: int = 20


def judge(
    snapshot: HealthSnapshot,
    *,
    max_latency_ms: float | None,
    min_accuracy: float | None,
    min_samples: int,
    alerts: AlertThresholds,
) -> Verdict:
    """Turn a snapshot into a verdict for the switch state machine.

    Error-rate and latency breaches need ``alerts.min_requests`` requests: two errors out of
    three requests is noise, not evidence. The accuracy breach has its own evidence bar —
    ``min_samples`` resolved outcomes — because outcomes arrive later than requests and can
    be plentiful while the current request rate is low. Healthy means enough requests and
    no breach at all.
    """
    enough_data = snapshot.count >= alerts.min_requests
    breaches: list[str] = []
    if enough_data and snapshot.error_rate > alerts.error_rate:
        breaches.append(
            f"error_rate {snapshot.error_rate:.4g} > {alerts.error_rate:.4g}"
            f" ({snapshot.errors}/{snapshot.count} requests)"
        )
    latency_limit = max_latency_ms if max_latency_ms is not None else alerts.latency_p95_ms
    if enough_data and snapshot.p95_ms is not None and snapshot.p95_ms > latency_limit:
        breaches.append(f"latency p95 {snapshot.p95_ms:.1f} ms > {latency_limit:.1f} ms")
    if (
        min_accuracy is not None
        and snapshot.accuracy is not None
        and snapshot.outcomes >= min_samples
        and snapshot.accuracy < min_accuracy
    ):
        breaches.append(f"accuracy {snapshot.accuracy:.4g} < {min_accuracy:.4g} over {snapshot.outcomes} outcomes")
    return Verdict(healthy=enough_data and not breaches, enough_data=enough_data, breaches=tuple(breaches))


# --------------------------------------------------------------------------- moments


@attrs.frozen
class RunningMoments:
    """Count, mean and sum of squared deviations (Welford), numerically stable and O(1) per value."""

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def add(self, x: float) -> RunningMoments:
        """The moments with one more observation."""
        count = self.count + 1
        delta = x - self.mean
        mean = self.mean + delta / count
        return RunningMoments(count=count, mean=mean, m2=self.m2 + delta * (x - mean))

    @property
    def variance(self) -> float:
        """Sample variance (n - 1 denominator); 0 below two observations."""
        return self.m2 / (self.count - 1) if self.count >= 2 else 0.0

    @classmethod
    def of(cls, values: Any) -> RunningMoments:
        """Moments of an iterable of numbers (convenience for tests and batch use)."""
        moments = cls()
        for value in values:
            moments = moments.add(float(value))
        return moments


# --------------------------------------------------------------------------- significance tests


@attrs.frozen
class TestResult:
    """Outcome of a two-sided test; ``note`` explains degenerate cases where no test was possible."""

    __test__ = False  # not a pytest test class despite the name

    statistic: float
    p_value: float
    significant: bool
    alpha: float
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form; a non-finite statistic (constant samples with different means) becomes None."""
        return {
            "statistic": self.statistic if math.isfinite(self.statistic) else None,
            "p_value": self.p_value,
            "significant": self.significant,
            "alpha": self.alpha,
            "note": self.note,
        }


def _check_alpha(alpha: float) -> None:
    """A significance level must be a probability strictly between 0 and 1."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")


def _no_test(alpha: float, note: str) -> TestResult:
    """The result when the data cannot support a test: never significant."""
    return TestResult(statistic=0.0, p_value=1.0, significant=False, alpha=alpha, note=note)


def two_proportion_test(successes_a: int, n_a: int, successes_b: int, n_b: int, alpha: float = 0.05) -> TestResult:
    """Pooled two-proportion z-test, two-sided: do A and B have different success rates?

    ``statistic`` is z for ``rate_a - rate_b``; ``p = erfc(|z| / sqrt(2))``.
    """
    _check_alpha(alpha)
    for name, successes, n in (("a", successes_a, n_a), ("b", successes_b, n_b)):
        if n < 0 or not 0 <= successes <= max(n, 0):
            raise ValueError(f"successes_{name} must be in [0, n_{name}] with n_{name} >= 0, got {successes}/{n}")
    if n_a == 0 or n_b == 0:
        return _no_test(alpha, "no observations on one side")
    pooled = (successes_a + successes_b) / (n_a + n_b)
    if pooled in (0.0, 1.0):
        return _no_test(alpha, "all observations identical (pooled proportion is 0 or 1)")
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    z = (successes_a / n_a - successes_b / n_b) / se
    p = math.erfc(abs(z) / math.sqrt(2))
    return TestResult(statistic=z, p_value=p, significant=p < alpha, alpha=alpha)


_CF_MAX_ITERATIONS = 10_000
_CF_EPSILON = 3e-16
_CF_FPMIN = 1e-300
# Beyond this many degrees of freedom the t distribution equals the normal to ~1e-7 and the
# continued fraction would need O(sqrt(df)) iterations, so the normal tail is used instead.
_NORMAL_DF = 1e7


def _nonzero(value: float) -> float:
    return _CF_FPMIN if abs(value) < _CF_FPMIN else value


def _lentz_step(aa: float, c: float, d: float) -> tuple[float, float, float]:
    """One modified-Lentz update: the new (c, d) and the factor the fraction is multiplied by."""
    d = 1.0 / _nonzero(1.0 + aa * d)
    c = _nonzero(1.0 + aa / c)
    return c, d, d * c


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction for the incomplete beta function (modified Lentz; Numerical Recipes 6.4)."""
    qab = a + b
    qap = a + 1.0
    qam = a - 1.0
    c = 1.0
    d = 1.0 / _nonzero(1.0 - qab * x / qap)
    h = d
    for m in range(1, _CF_MAX_ITERATIONS + 1):
        m2 = 2 * m
        c, d, even = _lentz_step(m * (b - m) * x / ((qam + m2) * (a + m2)), c, d)
        c, d, odd = _lentz_step(-(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)), c, d)
        h *= even * odd
        if abs(odd - 1.0) < _CF_EPSILON:
            return h
    raise ArithmeticError(f"incomplete beta continued fraction did not converge (a={a}, b={b}, x={x})")


def regularized_incomplete_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b) for a, b > 0 and 0 <= x <= 1, using the symmetry that keeps the fraction convergent."""
    if a <= 0 or b <= 0:
        raise ValueError(f"a and b must be positive, got a={a}, b={b}")
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"x must be in [0, 1], got {x}")
    if x in (0.0, 1.0):
        return x
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    front = math.exp(log_front)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def student_t_two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with ``df`` degrees of freedom: ``I_{df/(df+t^2)}(df/2, 1/2)``."""
    if df <= 0:
        raise ValueError(f"df must be positive, got {df}")
    if math.isinf(t):
        return 0.0
    if df > _NORMAL_DF:
        return math.erfc(abs(t) / math.sqrt(2))
    x = df / (df + t * t)
    return min(max(regularized_incomplete_beta(df / 2.0, 0.5, x), 0.0), 1.0)


def welch_t_test(a: RunningMoments, b: RunningMoments, alpha: float = 0.05) -> TestResult:
    """Welch's unequal-variance t-test, two-sided: do A and B have different means?

    ``statistic`` is t for ``mean_a - mean_b``, with Welch-Satterthwaite degrees of freedom.
    """
    _check_alpha(alpha)
    if a.count < 2 or b.count < 2:
        return _no_test(alpha, "need at least two observations on each side")
    va = a.variance / a.count
    vb = b.variance / b.count
    se2 = va + vb
    diff = a.mean - b.mean
    if se2 <= 0.0:
        if diff == 0.0:
            return _no_test(alpha, "both samples constant and equal")
        return TestResult(
            statistic=math.copysign(math.inf, diff),
            p_value=0.0,
            significant=True,
            alpha=alpha,
            note="both samples constant with different means",
        )
    t = diff / math.sqrt(se2)
    df = se2 * se2 / ((va * va) / (a.count - 1) + (vb * vb) / (b.count - 1))
    p = student_t_two_sided_p(t, df)
    return TestResult(statistic=t, p_value=p, significant=p < alpha, alpha=alpha, note=f"df={df:.4g}")
