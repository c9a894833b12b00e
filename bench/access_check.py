"""Benchmark of the per-request access check: authenticate + authorize + model allow-list +
rate-limit take + budget try_spend, the work the access layer adds before a prediction runs.

Why: the issue allows the access check at most 5 us per request, with no await. Each check is
timed on its own with perf_counter_ns (the timer's own cost, measured and printed, is included
in the per-check figures), over a policy of ``--keys`` keys in ``--workspaces`` workspaces with
model globs, a rate limit and a daily budget, and tokens drawn round-robin from ``--active``
keys. The budget ledger holds a lease large enough that no refill is needed (the steady state:
refills run in the budget actor, off the request path).

Run from the repo root:  .venv/bin/python bench/access_check.py [--iterations N] [--keys N]
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import secrets
import statistics
import sys
import time
import timeit
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from actors.core.access import ApiKey, Role, authenticate, authorize, model_allowed, parse_access  # noqa: E402
from actors.core.rate_limit import TokenBuckets, utc_day  # noqa: E402
from actors.storage.budget_store import BudgetLedger, LocalBudgetStore  # noqa: E402


def policy_text(keys: int, workspaces: int) -> tuple[str, list[str]]:
    lines = ["workspaces:"]
    for w in range(workspaces):
        lines += [f"  desk-{w}:", '    models: ["tlob_*", "patchtst_small", "timesnet_[ab]*"]',
                  "    rate_limit: {per_second: 1000000000, burst: 1000000000}",
                  "    daily_predictions: 1000000000000"]
    lines.append("keys:")
    tokens = []
    for k in range(keys):
        token = secrets.token_urlsafe(32)
        tokens.append(token)
        lines += [f"  - id: key-{k}", f'    sha256: "{hashlib.sha256(token.encode()).hexdigest()}"',
                  "    roles: [predict]", f"    workspace: desk-{k % workspaces}"]
    return "\n".join(lines) + "\n", tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=200_000)
    parser.add_argument("--keys", type=int, default=1_000)
    parser.add_argument("--workspaces", type=int, default=20)
    parser.add_argument("--active", type=int, default=50, help="keys sending traffic (round-robin)")
    args = parser.parse_args()

    text, tokens = policy_text(args.keys, args.workspaces)
    policy = parse_access(text)
    buckets = TokenBuckets()
    ledger = BudgetLedger(LocalBudgetStore())
    now = time.time()
    day = utc_day(now)
    for workspace in policy.workspaces.values():  # the steady state: each workspace holds a lease
        assert workspace.daily_predictions is not None
        ledger.try_spend(workspace.name, workspace.daily_predictions, 1, now)
        ledger.apply_grant(workspace.name, day, workspace.daily_predictions,
                           *ledger.store.reserve(workspace.name, day, workspace.daily_predictions, 10**9))
    ledger.wanted.clear()
    active = tokens[: args.active]
    models = ("tlob_tiny", "patchtst_small", "timesnet_base")

    def check(token: str, model: str, now: float) -> bool:
        key = authenticate(policy, token)
        if not isinstance(key, ApiKey) or not authorize(key, Role.PREDICT).allowed:
            return False
        workspace = key.workspace
        assert workspace is not None and workspace.rate_limit is not None
        if not model_allowed(key, model):
            return False
        if not buckets.take(key.id, workspace.rate_limit, now)[0]:
            return False
        return ledger.try_spend(workspace.name, workspace.daily_predictions, 1, now).ok

    clock = time.perf_counter_ns
    for i in range(20_000):  # warm-up: memo, buckets, caches
        check(active[i % len(active)], models[i % 2], time.time())
    timer = [clock() - clock() for _ in range(10_000)]
    timer_ns = -statistics.median(timer)
    samples = []
    gc.disable()
    try:
        for i in range(args.iterations):
            token, model, stamp = active[i % len(active)], models[i % 2], now + i * 1e-6
            start = clock()
            ok = check(token, model, stamp)
            samples.append(clock() - start)
            if not ok:
                raise SystemExit(f"check {i} refused: the benchmark's policy must admit every call")
    finally:
        gc.enable()
    parts = {
        "sha256 of the token alone": lambda: hashlib.sha256(active[0].encode()).hexdigest(),
        "authenticate": lambda: authenticate(policy, active[0]),
        "authorize": lambda: authorize(first, Role.PREDICT),
        "model_allowed": lambda: model_allowed(first, "tlob_tiny"),
        "rate-limit take": lambda: buckets.take(first.id, first_ws.rate_limit, now),  # type: ignore[arg-type]
        "budget try_spend": lambda: ledger.try_spend(first_ws.name, first_ws.daily_predictions, 1, now),
        "whole check": lambda: check(active[0], "tlob_tiny", now),
        "dict lookup (machine speed)": lambda: policy.keys.get(""),
    }
    first = authenticate(policy, active[0])
    assert isinstance(first, ApiKey) and first.workspace is not None
    first_ws = first.workspace
    print("per step, best of 5 batches of 20000 (mean ns per call, call overhead included):")
    for name, call in parts.items():
        best = min(timeit.repeat(call, number=20_000, repeat=5)) / 20_000 * 1e9
        print(f"  {name:<30} {best:8.0f} ns")
    samples.sort()
    p50, p99, p999 = (samples[int(q * (len(samples) - 1))] for q in (0.5, 0.99, 0.999))
    print(f"access check, {args.iterations} calls, {args.keys} keys in {args.workspaces} workspaces, "
          f"{len(active)} active: p50 {p50} ns  p99 {p99} ns  p99.9 {p999} ns  (timer pair ~{timer_ns:.0f} ns "
          f"included)")
    print(f"target <= 5000 ns per request: {'met' if p99 <= 5000 else 'NOT met'} at p99")
    print("reproduce: .venv/bin/python bench/access_check.py "
          f"--iterations {args.iterations} --keys {args.keys} --workspaces {args.workspaces} --active {args.active}")


if __name__ == "__main__":
    main()
