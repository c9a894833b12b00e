"""Benchmark of the routing hot path (RoutingSnapshot.select) and of config reload work.

Why: the router's budget is tens of microseconds per request, and select must stay well
under 2 us at p99 in CPython for that to hold with realistic rule sets.  Calls are timed in
batches (default 100 calls per perf_counter_ns pair) so timer overhead does not dominate;
the reported per-call figures are batch averages, which smooths single-call outliers.

Reload work (parse, validate, compile) is timed per phase with gc left enabled, as in
production: yaml (text -> data), validate (data -> RouterConfig, including the config hash and
shadow warnings), shadow (the shadow check alone), compile (compile_snapshot) and reload (the
production call ``compile_snapshot(parse_config(text, known_models=...))``).  Scenarios: the
bundled conf, the random synthetic set used for select (has shadowed rules), the bench/reload.py
generator (disjoint bands) and a random set with every shadowed rule removed (the worst case for
the shadow check: no rule stops the scan early).

Run from the repo root:  .venv/bin/python bench/select_model.py [--rules N] [--iterations N]
                         .venv/bin/python bench/select_model.py --reload-only [--reload-repeats N]
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from rulesets import MODELS, config_text  # noqa: E402

from actors.core.rules import RoutingSnapshot, compile_snapshot, parse_config  # noqa: E402
from actors.core.rules.problems import _Problems  # noqa: E402
from actors.core.rules.shadowing import _shadow_warnings  # noqa: E402
from actors.core.rules.validate import _validate  # noqa: E402
from actors.core.rules.yaml_reader import _load_yaml  # noqa: E402

CONF_PATH = REPO_ROOT / "conf" / "model_router_rules.yml"
ASSET_CLASSES = (
    "crypto", "crypto_perp", "crypto_spot", "fx_spot", "fx_fwd", "fx_ndf", "us_stocks", "eu_stocks",
    "jp_stocks", "us_etf", "us_options", "commodities", "rates", "credit", "indices", "vol",
)
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "EURUSD", "USDJPY", "GBPUSD", "AAPL", "MSFT", "NVDA", "SPY")
HORIZON_EDGES = (0, 1_000, 5_000, 15_000, 60_000, 300_000, 900_000, 3_600_000, 14_400_000, 86_400_000)
Query = tuple[str, float, str | None]


def synthetic_rules(count: int, rng: random.Random) -> list[dict[str, Any]]:
    """Rules shaped like production: per asset class, horizon bands, some symbol-specific."""
    rules: list[dict[str, Any]] = []
    while len(rules) < count:
        i = len(rules)
        lo_idx = rng.randrange(len(HORIZON_EDGES) - 1)
        hi_idx = rng.randrange(lo_idx + 1, len(HORIZON_EDGES))
        asset = rng.choice(ASSET_CLASSES)
        match: dict[str, str] = {
            "asset_class": asset if rng.random() < 0.8 else asset[:3] + "*",
            "horizon_ms": f">={HORIZON_EDGES[lo_idx]} & <{HORIZON_EDGES[hi_idx]}",
        }
        if rng.random() < 0.3:
            match["symbol"] = rng.choice(SYMBOLS)[:3] + "*"
        rules.append({
            "match": match,
            "model": rng.choice(MODELS),
            "fallback": rng.choice(MODELS),
            "priority": rng.randrange(1, 300),
            "description": f"synthetic rule {i}",
        })
    return rules


def synthetic_yaml(count: int, seed: int) -> str:
    return rules_yaml(synthetic_rules(count, random.Random(seed)))


def rules_yaml(rules: list[dict[str, Any]]) -> str:
    router = {"rules": rules, "config": {"default_model": "timesnet_base", "redis_url": None}}
    return yaml.safe_dump({"model_router": router}, sort_keys=False)


def unshadowed_yaml(count: int, seed: int) -> str:
    """Random synthetic rules, dropping every rule an earlier one shadows, until ``count`` remain."""
    rng = random.Random(seed)
    kept: list[dict[str, Any]] = []
    while len(kept) < count:
        candidate = synthetic_rules(1, rng)[0]
        candidate["description"] = f"synthetic rule {len(kept)}"
        if not parse_config(rules_yaml([*kept, candidate])).warnings:
            kept.append(candidate)
    return rules_yaml(kept)


def reload_bench_yaml(count: int) -> str:
    """The document bench/reload.py writes (first variant), from the shared rule sets."""
    return config_text(Path("/srv/models"), count, 0)


def make_queries(n: int, rng: random.Random, miss_rate: float) -> list[Query]:
    """Mostly a hot working set (memo hits) plus fresh client asset classes (guaranteed misses)."""
    hot: list[Query] = [
        (rng.choice(ASSET_CLASSES), float(rng.choice(HORIZON_EDGES) + rng.choice((0, 1, 500, 2_000))),
         rng.choice((None, *SYMBOLS)))
        for _ in range(600)
    ]
    queries: list[Query] = []
    for i in range(n):
        if rng.random() < miss_rate:
            queries.append((f"client_asset_{i}", rng.uniform(0, 1e8), rng.choice((None, *SYMBOLS))))
        else:
            queries.append(rng.choice(hot))
    return queries


def percentile(sorted_values: Sequence[float], q: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def time_select(snapshot: RoutingSnapshot, queries: list[Query], batch: int) -> list[float]:
    """Per-call ns averaged over each batch; the first pass warms the memo like a live service."""
    select = snapshot.select
    for asset, horizon, symbol in queries[: min(len(queries), 20_000)]:
        select(asset, horizon, symbol)
    clock = time.perf_counter_ns
    samples: list[float] = []
    for start in range(0, len(queries) - batch + 1, batch):
        chunk = queries[start : start + batch]
        t0 = clock()
        for asset, horizon, symbol in chunk:
            select(asset, horizon, symbol)
        samples.append((clock() - t0) / batch)
    return samples


def report_select(name: str, snapshot: RoutingSnapshot, queries: list[Query], batch: int) -> None:
    samples = sorted(time_select(snapshot, queries, batch))
    mean = statistics.fmean(samples)
    print(
        f"{name:<28} rules={len(snapshot.config.rules):<4} points={len(snapshot.points):<3} "
        f"p50={percentile(samples, 0.50):7.0f} ns  p99={percentile(samples, 0.99):7.0f} ns  "
        f"p99.9={percentile(samples, 0.999):7.0f} ns  mean={mean:6.0f} ns  "
        f"throughput={1e9 / mean:,.0f} calls/s  memo={snapshot.memo_size}"
    )


def time_compile(text: str, repeats: int) -> list[float]:
    out: list[float] = []
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        compile_snapshot(parse_config(text))
        out.append((time.perf_counter_ns() - t0) / 1e6)
    return sorted(out)


def _phase_functions(text: str, known: frozenset[str]) -> dict[str, Callable[[], object]]:
    """One zero-argument callable per reload phase, each doing only that phase's work."""
    data = _load_yaml(text, _Problems())
    config = parse_config(text, known_models=known)
    phases: dict[str, Callable[[], object]] = {
        "yaml": lambda: _load_yaml(text, _Problems()),
        "validate": lambda: _validate(data, _Problems(), known),
        "shadow": lambda: _shadow_warnings(config.rules),
    }
    phases["compile"] = lambda: compile_snapshot(config)
    phases["reload"] = lambda: compile_snapshot(parse_config(text, known_models=known))
    return phases


def time_reload_phases(text: str, repeats: int, warmup: int = 20) -> dict[str, list[float]]:
    """Per-phase wall times in ms (sorted), phases interleaved so drift hits all of them alike."""
    assert gc.isenabled(), "measure with gc enabled, as in production"
    phases = _phase_functions(text, frozenset(MODELS))
    clock = time.perf_counter_ns
    for _ in range(warmup):
        for fn in phases.values():
            fn()
    samples: dict[str, list[float]] = {name: [] for name in phases}
    for _ in range(repeats):
        for name, fn in phases.items():
            t0 = clock()
            fn()
            samples[name].append((clock() - t0) / 1e6)
    return {name: sorted(values) for name, values in samples.items()}


def reload_scenarios(rules: int, seed: int) -> list[tuple[str, str]]:
    return [
        ("bundled conf", CONF_PATH.read_text(encoding="utf-8")),
        (f"random {rules} (shadowing)", synthetic_yaml(rules, seed)),
        (f"reload.py {rules} (disjoint)", reload_bench_yaml(rules)),
        (f"random {rules} (no shadowing)", unshadowed_yaml(rules, seed)),
    ]


def report_reload(rules: int, seed: int, repeats: int, out: Callable[[str], None] = print) -> None:
    out(f"reload work per phase, ms (n={repeats} after warm-up, gc enabled): p50 / p99 / max")
    for name, text in reload_scenarios(rules, seed):
        config = parse_config(text)
        phases = time_reload_phases(text, repeats)
        cells = "  ".join(
            f"{phase} {percentile(v, 0.5):.3f}/{percentile(v, 0.99):.3f}/{v[-1]:.3f}"
            for phase, v in phases.items()
        )
        out(f"  {name:<26} rules={len(config.rules):<3} warnings={len(config.warnings):<3} {cells}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", type=int, default=200, help="synthetic rule count (default 200)")
    parser.add_argument("--iterations", type=int, default=1_000_000, help="select calls per scenario")
    parser.add_argument("--batch", type=int, default=100, help="calls per timer read")
    parser.add_argument("--miss-rate", type=float, default=0.02, help="share of never-seen asset classes")
    parser.add_argument("--compile-repeats", type=int, default=50)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--reload-repeats", type=int, default=300, help="runs per reload phase")
    parser.add_argument("--reload-only", action="store_true", help="skip the select benchmark")
    return parser.parse_args(argv)


def run(args: argparse.Namespace, out: Callable[[str], None] = print) -> None:
    command = " ".join([".venv/bin/python", "bench/select_model.py", *sys.argv[1:]])
    out(f"reproduce: {command}")
    out(f"python {sys.version.split()[0]}; iterations={args.iterations} batch={args.batch} "
        f"miss_rate={args.miss_rate} seed={args.seed}")
    if args.reload_only:
        report_reload(args.rules, args.seed, args.reload_repeats, out)
        return
    rng = random.Random(args.seed)
    queries = make_queries(args.iterations, rng, args.miss_rate)
    bundled = compile_snapshot(parse_config(CONF_PATH.read_text(encoding="utf-8")))
    report_select("bundled conf", bundled, queries, args.batch)
    synthetic_text = synthetic_yaml(args.rules, args.seed)
    synthetic = compile_snapshot(parse_config(synthetic_text))
    report_select(f"synthetic {args.rules} rules", synthetic, queries, args.batch)
    hits_only = make_queries(args.iterations, random.Random(args.seed), 0.0)
    fresh = compile_snapshot(synthetic.config)
    report_select(f"synthetic {args.rules}, hits only", fresh, hits_only, args.batch)
    compile_ms = time_compile(synthetic_text, args.compile_repeats)
    warnings = len(synthetic.config.warnings)
    out(f"parse_config+compile_snapshot ({args.rules} rules, {warnings} shadow warnings): "
        f"p50={percentile(compile_ms, 0.5):.2f} ms  p99={percentile(compile_ms, 0.99):.2f} ms "
        f"(n={args.compile_repeats})")
    report_reload(args.rules, args.seed, args.reload_repeats, out)


def main(argv: Sequence[str] | None = None) -> None:
    run(parse_args(argv))


if __name__ == "__main__":
    main()
