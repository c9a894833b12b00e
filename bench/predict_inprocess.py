"""The project's own cost per prediction, in process: no HTTP server, no client.

Starts the whole service (all actors, the bundled demo config and models) inside this
process, then times ``predictor.predict_one`` (by model name, and routed by asset class,
horizon and symbol) and ``predictor.predict_batch`` with 256 items, then the same requests
through the data port's whole handler chain (request id, timing, access gate, JSON parse and
encode). What it prints is the "own code" share of a request's CPU time; the HTTP benches add
the server's share (parsing, sockets, scheduling).

Reproduce (after ``make models``):
    .venv/bin/python bench/predict_inprocess.py [--calls 20000] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import trio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import app  # noqa: E402
from actors.web import data_port, http1  # noqa: E402

FEATURES = {"order_imbalance": 0.3, "spread_bps": 1.2, "trade_flow": 0.5, "return_1s": 0.001, "volume_z": 0.1}
BY_NAME = {"model_name": "tlob_tiny", "features": FEATURES}
ROUTED = {"asset_class": "crypto", "horizon_ms": 30000, "symbol": "ETH/USDT", "features": FEATURES}


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def time_calls(call: Any, body: dict[str, Any], calls: int) -> list[float]:
    for _ in range(200):  # warm-up: caches, memo, first model call
        await call(body)
    samples = []
    clock = time.perf_counter_ns
    for _ in range(calls):
        started = clock()
        await call(body)
        samples.append((clock() - started) / 1000)
    return samples


def report(name: str, samples: list[float], items: int = 1) -> None:
    p50, p99 = percentile(samples, 0.50), percentile(samples, 0.99)
    rate = items * len(samples) / (sum(samples) / 1e6)
    print(f"{name:<34} p50 {p50:8.1f} µs  p99 {p99:8.1f} µs  {rate:>10,.0f} predictions/s")


async def main(calls: int, profile: bool) -> None:
    options = app.Options(config=ROOT / "conf" / "model_router_rules.yml", port=0, batch_max_size=1)
    async with trio.open_nursery() as nursery:
        running: app.Running = await nursery.start(app.serve, options)
        predictor = running.service.predictor
        await running.service.cache.get("tlob_tiny")
        batch = {"requests": [{**ROUTED, "symbol": f"SYM{i}"} for i in range(256)]}
        gc.collect()
        profiler = cProfile.Profile() if profile else None
        if profiler:
            profiler.enable()
        report("predict_one, by name", await time_calls(predictor.predict_one, BY_NAME, calls))
        report("predict_one, routed + symbol", await time_calls(predictor.predict_one, ROUTED, calls))
        report("predict_batch, 256 routed items", await time_calls(predictor.predict_batch, batch, calls // 100),
               items=256)
        # The data port's whole handler chain (request id, timing, access gate, JSON in and out):
        # what a request costs above the engine's parsing and the socket.
        table = data_port.routes(running.service)
        for name, body, path, n in (("data-port /predict, by name", BY_NAME, "/predict", calls),
                                    ("data-port /predict, routed", ROUTED, "/predict", calls),
                                    ("data-port /predict/batch, 256", batch, "/predict/batch", calls // 100)):
            handler = table[path]["POST"]
            request = http1.Request("POST", path, "", ((b"content-type", b"application/json"),),
                                    orjson.dumps(body), True, "127.0.0.1:1")
            report(name, await time_calls(lambda _body, h=handler, r=request: h(r), body, n),
                   items=256 if path.endswith("batch") else 1)
        if profiler:
            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        running.service.stop.set()
    print(f"\nreproduce: .venv/bin/python bench/predict_inprocess.py --calls {calls}"
          f"{' --profile' if profile else ''}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    trio.run(main, args.calls, args.profile)
