"""Build the bundled demo model repository: small numpy-trained MLPs served as real TFLite files.

Why real training instead of random weights: the router's rules, shadow comparisons and metrics
are only worth demonstrating if the models' signals mean something. Each model is trained on a
seeded synthetic market whose forward return is genuinely (partly) predictable from its inputs:

* prices follow a hidden regime (down-trend / range / up-trend, Markov-switching) with momentum
  in trends and mean reversion in ranges;
* volume and realised volatility rise with trend activity and with the size of moves;
* order-book imbalance and trade flow lead the hidden drift (the microstructure edge).

Labels are SELL/HOLD/BUY by forward-return terciles of the training split, so the majority-class
baseline is about 1/3 and the held-out accuracy written to ``metadata.yml`` is meaningful.
Input standardisation is folded into the first layer, so served models take raw features.

Everything is seeded and the training loop is fixed, so a rebuild reproduces identical bytes.
Run ``python -m actors.build.demo_models --out models [--force]``. A further demo version, for
trying version switches, is ``--version 2 --model tlob_tiny``: the same recipe trained on
another seeded market, so its weights and answers differ from version 1.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path

import attrs
import numpy as np

from actors.build.tflite_writer import build_mlp_tflite, numpy_forward
from actors.core.versions import is_version_name
from actors.storage.model_repo import (
    METADATA_FILE,
    MODEL_FILE,
    ModelMetadata,
    dump_metadata,
    file_digest,
    version_dir,
    write_model_version,
)

LABELS = ("SELL", "HOLD", "BUY")
TRAINING_DATE = "2026-11-01"
DEMO_VERSION = "1"
HORIZON = 10
_N_STEPS = 24_000
_TRAIN_FRACTION = 0.7


@attrs.frozen
class Market:
    """One simulated price path and its side channels, aligned per time step."""

    returns: np.ndarray
    volume_z: np.ndarray
    realized_vol: np.ndarray
    order_imbalance: np.ndarray
    trade_flow: np.ndarray
    spread_bps: np.ndarray


@attrs.frozen
class Dataset:
    """Model inputs and forward returns for every usable time step, in time order."""

    x: np.ndarray
    forward_return: np.ndarray


@attrs.frozen
class Weights:
    """A trained 2-layer MLP in numpy layout (w1: in x hidden, w2: hidden x out)."""

    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray


@attrs.frozen
class DemoSpec:
    """Recipe for one demo model: which features, window, capacity and seed."""

    name: str
    features: tuple[str, ...]
    window: int
    hidden: int
    seed: int
    description: str


@attrs.frozen
class DemoResult:
    """A trained demo model ready to be written, with its held-out scores."""

    spec: DemoSpec
    tflite_bytes: bytes
    metadata: ModelMetadata
    accuracy: float
    baseline: float


DEMO_SPECS: tuple[DemoSpec, ...] = (
    DemoSpec(
        "tlob_tiny",
        ("order_imbalance", "spread_bps", "trade_flow", "return_1s", "volume_z"),
        1,
        16,
        11,
        "Tiny TLOB-style MLP on order-book microstructure snapshots",
    ),
    DemoSpec(
        "patchtst_small",
        ("returns", "volume_z"),
        32,
        32,
        23,
        "PatchTST-sized MLP on 32-step return and volume windows",
    ),
    DemoSpec(
        "timesnet_base",
        ("returns", "realized_vol"),
        64,
        48,
        37,
        "TimesNet-sized MLP on 64-step return and realised-volatility windows",
    ),
    DemoSpec(
        "mamba_ts_small",
        ("returns", "volume_z"),
        16,
        24,
        41,
        "Mamba-TS-sized MLP on 16-step return and volume windows",
    ),
)


def _regimes(rng: np.random.Generator, n: int, stay: float = 0.985) -> np.ndarray:
    """Markov-switching regime path in {-1, 0, +1}: persistent, so recent drift predicts future drift."""
    switches = rng.random(n) > stay
    jumps = rng.integers(-1, 2, size=n)
    regime = np.empty(n, dtype=np.int64)
    state = 0
    for t in range(n):
        if switches[t]:
            state = int(jumps[t])
        regime[t] = state
    return regime


def _returns(rng: np.random.Generator, regime: np.ndarray, drift: float, vol: np.ndarray) -> np.ndarray:
    """Returns with trend drift + momentum in trends and mean reversion (negative AR) in ranges."""
    noise = rng.standard_normal(regime.size) * vol
    phi = np.where(regime == 0, -0.3, 0.15)
    out = np.empty(regime.size)
    prev = 0.0
    for t in range(regime.size):
        prev = regime[t] * drift + phi[t] * prev + noise[t]
        out[t] = prev
    return out


def _rolling_std(values: np.ndarray, span: int) -> np.ndarray:
    """Trailing standard deviation (first ``span - 1`` points use what is available)."""
    padded = np.concatenate([np.full(span - 1, values[:span].mean()), values])
    windows = np.lib.stride_tricks.sliding_window_view(padded, span)
    return windows.std(axis=1)


def simulate_market(seed: int, n_steps: int = _N_STEPS) -> Market:
    """Seeded synthetic market; units are ~1bp-scale returns so raw features stay well-conditioned."""
    rng = np.random.default_rng(seed)
    regime = _regimes(rng, n_steps)
    vol = np.where(regime == -1, 1.3, np.where(regime == 1, 1.0, 0.8))
    returns = _returns(rng, regime, 0.3, vol)
    activity = np.abs(regime) * 0.8 + 0.6 * np.abs(returns) / vol
    volume_z = activity - activity.mean() + rng.standard_normal(n_steps) * 0.7
    drift = regime * 0.3
    order_imbalance = np.tanh(1.5 * drift + rng.standard_normal(n_steps) * 0.5)
    trade_flow = drift + 0.3 * returns + rng.standard_normal(n_steps) * 0.6
    spread_bps = 2.0 + 1.5 * vol + np.abs(rng.standard_normal(n_steps)) * 0.8
    return Market(
        returns=returns,
        volume_z=volume_z,
        realized_vol=_rolling_std(returns, 16),
        order_imbalance=order_imbalance,
        trade_flow=trade_flow,
        spread_bps=spread_bps,
    )


def _feature_series(market: Market, feature: str) -> np.ndarray:
    """Map a feature name to its per-step series (``return_1s`` is the latest one-step return)."""
    name = "returns" if feature == "return_1s" else feature
    return np.asarray(getattr(market, name), dtype=np.float64)


def build_dataset(market: Market, features: Sequence[str], window: int) -> Dataset:
    """Feature-major windows ending at t, labelled by the return over (t, t + HORIZON]."""
    n = market.returns.size
    ends = np.arange(window - 1, n - HORIZON)
    blocks = []
    for feature in features:
        series = _feature_series(market, feature)
        windows = np.lib.stride_tricks.sliding_window_view(series, window)
        blocks.append(windows[ends - window + 1])
    cumulative = np.concatenate([[0.0], np.cumsum(market.returns)])
    forward = cumulative[ends + 1 + HORIZON] - cumulative[ends + 1]
    return Dataset(x=np.concatenate(blocks, axis=1), forward_return=forward)


def tercile_labels(forward: np.ndarray, cuts: tuple[float, float]) -> np.ndarray:
    """SELL=0 below the lower cut, BUY=2 above the upper cut, HOLD=1 in between."""
    return np.digitize(forward, cuts).astype(np.int64)


def _split(n: int, window: int) -> tuple[slice, slice]:
    """Chronological split with a gap so no test window overlaps a training label."""
    cut = int(n * _TRAIN_FRACTION)
    return slice(0, cut), slice(cut + window + HORIZON, n)


def _init_weights(rng: np.random.Generator, in_dim: int, hidden: int, n_out: int) -> list[np.ndarray]:
    """He-initialised first layer, small second layer: keeps early softmax near uniform."""
    return [
        rng.standard_normal((in_dim, hidden)) * np.sqrt(2.0 / in_dim),
        np.zeros(hidden),
        rng.standard_normal((hidden, n_out)) * 0.1,
        np.zeros(n_out),
    ]


def _gradients(params: list[np.ndarray], x: np.ndarray, y: np.ndarray, l2: float) -> list[np.ndarray]:
    """Softmax cross-entropy gradients of the 2-layer MLP (with L2 on the weight matrices)."""
    w1, b1, w2, b2 = params
    pre = x @ w1 + b1
    hidden = np.maximum(pre, 0.0)
    probs = numpy_forward(x, w1, b1, w2, b2)
    delta = probs
    delta[np.arange(y.size), y] -= 1.0
    delta /= y.size
    d_hidden = (delta @ w2.T) * (pre > 0)
    return [x.T @ d_hidden + l2 * w1, d_hidden.sum(0), hidden.T @ delta + l2 * w2, delta.sum(0)]


def train_mlp(
    x: np.ndarray, y: np.ndarray, hidden: int, seed: int, epochs: int = 12, lr: float = 2e-3
) -> Weights:
    """Adam on mini-batches with a fixed shuffle seed; x must already be standardised."""
    rng = np.random.default_rng(seed)
    params = _init_weights(rng, x.shape[1], hidden, int(y.max()) + 1)
    first = [np.zeros_like(p) for p in params]
    second = [np.zeros_like(p) for p in params]
    step = 0
    for _ in range(epochs):
        order = rng.permutation(y.size)
        for start in range(0, y.size, 256):
            idx = order[start : start + 256]
            step += 1
            grads = _gradients(params, x[idx], y[idx], l2=1e-3)
            for p, g, m, v in zip(params, grads, first, second, strict=True):
                m *= 0.9
                m += 0.1 * g
                v *= 0.999
                v += 0.001 * g * g
                p -= lr * (m / (1 - 0.9**step)) / (np.sqrt(v / (1 - 0.999**step)) + 1e-8)
    return Weights(*params)


def fold_standardisation(weights: Weights, mean: np.ndarray, std: np.ndarray) -> Weights:
    """Rewrite ``relu(((x - mean) / std) @ w1 + b1)`` as ``relu(x @ w1' + b1')`` for raw inputs."""
    w1 = weights.w1 / std[:, None]
    b1 = weights.b1 - (mean / std) @ weights.w1
    return Weights(w1=w1, b1=b1, w2=weights.w2, b2=weights.b2)


def _as_float32(weights: Weights) -> Weights:
    """Round to the float32 values the TFLite file will actually hold, so evaluation matches serving."""
    return Weights(*(np.asarray(a, dtype=np.float32) for a in attrs.astuple(weights)))


def _accuracy(weights: Weights, x: np.ndarray, y: np.ndarray) -> float:
    """Held-out accuracy of the served (float32, raw-input) network."""
    probs = numpy_forward(x.astype(np.float32), weights.w1, weights.b1, weights.w2, weights.b2)
    return float(np.mean(probs.argmax(axis=1) == y))


def train_demo(spec: DemoSpec) -> DemoResult:
    """Simulate, label, train, fold normalisation, evaluate and serialise one demo model."""
    data = build_dataset(simulate_market(spec.seed), spec.features, spec.window)
    train, test = _split(data.forward_return.size, spec.window)
    cuts = tuple(np.quantile(data.forward_return[train], [1 / 3, 2 / 3]))
    labels = tercile_labels(data.forward_return, cuts)
    mean = data.x[train].mean(axis=0)
    std = data.x[train].std(axis=0) + 1e-6
    trained = train_mlp((data.x[train] - mean) / std, labels[train], spec.hidden, spec.seed)
    served = _as_float32(fold_standardisation(trained, mean, std))
    accuracy = round(_accuracy(served, data.x[test], labels[test]), 4)
    baseline = round(float(np.bincount(labels[test], minlength=3).max() / labels[test].size), 4)
    metadata = ModelMetadata(
        features=spec.features,
        window=spec.window,
        labels=LABELS,
        training_date=TRAINING_DATE,
        accuracy=accuracy,
        description=(
            f"{spec.description}; trained on seeded synthetic data, held-out accuracy {accuracy:.4f} "
            f"vs majority baseline {baseline:.4f}; labels = {HORIZON}-step forward-return terciles"
        ),
    )
    tflite_bytes = build_mlp_tflite(served.w1, served.b1, served.w2, served.b2)
    return DemoResult(spec, tflite_bytes, metadata, accuracy, baseline)


def _unchanged(out: Path, result: DemoResult, version: str) -> bool:
    """True when both files on disk already hold exactly what we would write (sha256 included)."""
    folder = version_dir(out, result.spec.name, version)
    expected = attrs.evolve(result.metadata, sha256=file_digest(result.tflite_bytes))
    try:
        same_model = (folder / MODEL_FILE).read_bytes() == result.tflite_bytes
        same_meta = (folder / METADATA_FILE).read_text(encoding="utf-8") == dump_metadata(expected)
    except (FileNotFoundError, UnicodeDecodeError):
        return False
    return same_model and same_meta


def spec_for_version(spec: DemoSpec, version: str) -> DemoSpec:
    """Version 1 is the recipe as listed; a later version trains on another seeded market."""
    if version == DEMO_VERSION:
        return spec
    return attrs.evolve(spec, seed=spec.seed + 7919 * (int(version) - 1))


def build_demo_repository(
    out: Path,
    force: bool = False,
    report: Callable[[str], None] | None = None,
    *,
    version: str = DEMO_VERSION,
    models: Sequence[str] | None = None,
) -> dict[str, float]:
    """Train the demo models (all, or ``models``) and write them as ``version`` under ``out``.

    Returns name -> accuracy. Up-to-date models are left untouched (no mtime change, so a
    hot-reload watcher stays quiet) unless ``force`` is set. ``report`` receives one
    human-readable line per model.
    """
    out = Path(out)
    known = {spec.name: spec for spec in DEMO_SPECS}
    unknown = sorted(set(models or ()) - set(known))
    if unknown:
        raise ValueError(f"no demo model {', '.join(unknown)}; the demo models are {', '.join(known)}")
    accuracies: dict[str, float] = {}
    for spec in DEMO_SPECS:
        if models is not None and spec.name not in models:
            continue
        result = train_demo(spec_for_version(spec, version))
        skip = not force and _unchanged(out, result, version)
        if not skip:
            write_model_version(out, spec.name, version, result.tflite_bytes, result.metadata)
        accuracies[spec.name] = result.accuracy
        if report is not None:
            report(
                f"{spec.name} v{version}: accuracy {result.accuracy:.4f} "
                f"(baseline {result.baseline:.4f}, input_dim {result.metadata.input_dim}) "
                f"{'unchanged' if skip else 'written'}"
            )
    return accuracies


def random_weights(in_dim: int, n_out: int, hidden: int = 8, seed: int = 0) -> Weights:
    """Seeded random float32 MLP weights; exposed so tests can recompute the expected outputs."""
    rng = np.random.default_rng(seed)
    return Weights(
        w1=rng.standard_normal((in_dim, hidden)).astype(np.float32),
        b1=(rng.standard_normal(hidden) * 0.1).astype(np.float32),
        w2=rng.standard_normal((hidden, n_out)).astype(np.float32),
        b2=(rng.standard_normal(n_out) * 0.1).astype(np.float32),
    )


def build_random_model(
    root: Path,
    name: str,
    version: str = "1",
    features: Sequence[str] = ("a", "b", "c"),
    window: int = 1,
    labels: Sequence[str] = LABELS,
    hidden: int = 8,
    seed: int = 0,
) -> Path:
    """Write a random-weight model version quickly (for tests); returns its version folder.

    The weights are ``random_weights(len(features) * window, len(labels), hidden, seed)``.
    """
    weights = random_weights(len(features) * window, len(labels), hidden, seed)
    metadata = ModelMetadata(
        features=tuple(features),
        window=window,
        labels=tuple(labels),
        description=f"random test model (seed {seed})",
    )
    tflite_bytes = build_mlp_tflite(weights.w1, weights.b1, weights.w2, weights.b2)
    return write_model_version(root, name, version, tflite_bytes, metadata)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: build the demo repository and print one line per model."""
    parser = argparse.ArgumentParser(description="Build the bundled demo TFLite model repository.")
    parser.add_argument("--out", type=Path, default=Path("models"), help="repository root")
    parser.add_argument("--force", action="store_true", help="rewrite files even if unchanged")
    parser.add_argument("--version", default=DEMO_VERSION, help="version folder to write (default 1)")
    parser.add_argument("--model", action="append", dest="models", metavar="NAME",
                        help="build only this demo model (repeatable; default: all)")
    args = parser.parse_args(argv)
    if not is_version_name(args.version):
        parser.error(f"--version must be a positive integer, got {args.version!r}")
    try:
        build_demo_repository(args.out, force=args.force, report=print, version=args.version, models=args.models)
    except ValueError as exc:
        parser.error(str(exc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
