"""Streaming predictions over ``GET /ws/predict``: messages/s, predictions/s, latency.

Starts model-router as a subprocess pinned to CPU 0 (demo config and models) and drives
it from this process pinned to CPU 1 with trio-websocket clients. Two shapes:

- single: each message is one request; each connection keeps ``--window`` messages in
  flight (answers may come back out of order; matched by correlation id);
- list: each message is a list of ``--batch`` requests, one in flight per connection.

    .venv/bin/python bench/ws_predict.py [--duration 5] [--connections 1,16] [--batch 256]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import orjson
import trio
from trio_websocket import open_websocket_url

ROOT = Path(__file__).resolve().parent.parent
FEATURES = {"order_imbalance": 0.3, "spread_bps": 1.2, "trade_flow": 0.5, "return_1s": 0.001, "volume_z": 0.1}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def request(i: int) -> dict[str, object]:
    return {"asset_class": "crypto", "horizon_ms": 30000, "symbol": f"S{i % 200}", "features": FEATURES,
            "correlation_id": f"c{i}"}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


async def single_connection(url: str, window: int, stop_at: float, latencies: list[float],
                            counter: list[int], offset: int) -> None:
    async with open_websocket_url(url, max_message_size=16 * 1024 * 1024) as ws:
        sent_at: dict[str, float] = {}
        next_id = offset

        async def send_one() -> None:
            nonlocal next_id
            body = request(next_id)
            sent_at[str(body["correlation_id"])] = time.perf_counter()
            next_id += 1
            await ws.send_message(json.dumps(body))

        for _ in range(window):
            await send_one()
        while sent_at:
            answer = orjson.loads(await ws.get_message())
            started = sent_at.pop(answer["correlation_id"])
            latencies.append(time.perf_counter() - started)
            counter[0] += 1
            if time.perf_counter() < stop_at:
                await send_one()


async def list_connection(url: str, batch: int, stop_at: float, latencies: list[float], counter: list[int]) -> None:
    message = json.dumps([request(i) for i in range(batch)])
    async with open_websocket_url(url, max_message_size=64 * 1024 * 1024) as ws:
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            await ws.send_message(message)
            answer = orjson.loads(await ws.get_message())
            assert answer["type"] == "predictions" and answer["failed"] == 0, answer.get("failed")
            latencies.append(time.perf_counter() - started)
            counter[0] += 1


async def measure(url: str, mode: str, connections: int, duration: float, window: int, batch: int) -> dict[str, float]:
    latencies: list[float] = []
    counter = [0]
    started = time.perf_counter()
    stop_at = started + duration
    async with trio.open_nursery() as nursery:
        for c in range(connections):
            if mode == "single":
                nursery.start_soon(single_connection, url, window, stop_at, latencies, counter, c * 10_000_000)
            else:
                nursery.start_soon(list_connection, url, batch, stop_at, latencies, counter)
    elapsed = time.perf_counter() - started
    per_message = batch if mode == "list" else 1
    return {"messages_s": counter[0] / elapsed, "predictions_s": counter[0] * per_message / elapsed,
            "p50_ms": statistics.median(latencies) * 1000, "p99_ms": percentile(latencies, 0.99) * 1000}


def start_server(port: int) -> subprocess.Popen[bytes]:
    state = Path(f"/tmp/ws-bench-state-{port}.json")
    command = [sys.executable, str(ROOT / "app.py"), "--config", str(ROOT / "conf/model_router_rules.yml"),
               "--port", str(port), "--state-file", str(state), "--log-level", "WARNING"]
    return subprocess.Popen(["taskset", "-c", "0", *command], cwd=ROOT, stderr=subprocess.DEVNULL)


async def wait_ready(port: int, timeout: float = 30) -> None:
    with trio.fail_after(timeout):
        while True:
            with contextlib.suppress(OSError):  # not listening yet
                stream = await trio.open_tcp_stream("127.0.0.1", port)
                await stream.send_all(b"GET /health/ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                head = await stream.receive_some(64)
                await stream.aclose()
                if b" 200 " in head:
                    return
            await trio.sleep(0.2)  # polling a separate process's readiness (benchmark only)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--connections", default="1,16")
    parser.add_argument("--window", type=int, default=32, help="messages in flight per connection (single)")
    parser.add_argument("--batch", type=int, default=256, help="requests per message (list)")
    args = parser.parse_args()
    if not (ROOT / "models" / "tlob_tiny" / "1" / "model.tflite").exists():
        print("demo models missing: run `make models` first", file=sys.stderr)
        return 1
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {1})
    port = free_port()
    server = start_server(port)
    try:
        trio.run(wait_ready, port)
        url = f"ws://127.0.0.1:{port}/ws/predict"
        print(f"/ws/predict, server on CPU 0, clients on CPU 1, {args.duration:g} s per run")
        for mode in ("single", "list"):
            for connections in (int(c) for c in args.connections.split(",")):
                trio.run(measure, url, mode, connections, 1.0, args.window, args.batch)  # warm-up
                r = trio.run(measure, url, mode, connections, args.duration, args.window, args.batch)
                shape = f"1 request/msg, window {args.window}" if mode == "single" else f"{args.batch} requests/msg"
                print(f"  {mode:<6} {connections:>2} conn ({shape}): {r['messages_s']:9,.0f} msg/s "
                      f"{r['predictions_s']:9,.0f} predictions/s  p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms")
    finally:
        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=15)
    print(f"server exit code {code}")
    print(f"reproduce: .venv/bin/python bench/ws_predict.py --duration {args.duration:g} "
          f"--connections {args.connections} --window {args.window} --batch {args.batch}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
