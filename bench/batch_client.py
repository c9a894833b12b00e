"""A plain closed-loop client for ``/predict/batch``: a cross-check of wrk on large answers.

``wrk -t1`` at 16 connections reports a p99 of ~8x the p50 for 256-item batches (64 KB
answers) on the data plane, while a Trio instrument on the server never saw a connection
task wait more than 120 ms to run. This client (one thread and one blocking keep-alive
socket per connection, no parsing beyond Content-Length) measures the same requests from
the outside; on this machine it saw p99 ~2x p50, as the server-side figures say.

Start a server first (e.g. ``taskset -c 0 .venv/bin/python app.py --port 8000 --data-port 8001``), then:
    taskset -c 1 .venv/bin/python bench/batch_client.py [--port 8001] [--items 256] [--connections 16] [--seconds 8]
"""

from __future__ import annotations

import argparse
import json
import socket
import threading
import time

FEATURES = {"order_imbalance": 0.3, "spread_bps": 1.2, "trade_flow": 0.5, "return_1s": 0.001, "volume_z": 0.1}


def request_bytes(items: int) -> bytes:
    body = json.dumps({"requests": [{"model_name": "tlob_tiny", "features": FEATURES, "correlation_id": f"x{i}"}
                                    for i in range(items)]}).encode()
    head = (f"POST /predict/batch HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    return head + body


def connection(port: int, request: bytes, until: float, latencies: list[float], errors: list[str]) -> None:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buffer = b""
    with sock:
        while time.time() < until:
            started = time.perf_counter()
            sock.sendall(request)
            while b"\r\n\r\n" not in buffer:
                buffer += sock.recv(65536)
            head, _, rest = buffer.partition(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            length = next(int(line.split(b":", 1)[1]) for line in lines if line.lower().startswith(b"content-length"))
            while len(rest) < length:
                rest += sock.recv(262144)
            buffer = rest[length:]
            latencies.append(time.perf_counter() - started)
            if not lines[0].startswith(b"HTTP/1.1 200"):
                errors.append(lines[0].decode("latin-1"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--items", type=int, default=256)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    args = parser.parse_args()
    request = request_bytes(args.items)
    results: dict[str, list[float]] = {}
    errors: list[str] = []
    for phase, seconds in (("warm-up", args.warmup), ("measured", args.seconds)):
        latencies: list[float] = []
        until = time.time() + seconds
        threads = [threading.Thread(target=connection, args=(args.port, request, until, latencies, errors))
                   for _ in range(args.connections)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        results[phase] = latencies
        elapsed = time.perf_counter() - started
    samples = sorted(results["measured"])
    pick = lambda q: samples[min(len(samples) - 1, int(q * len(samples)))] * 1000  # noqa: E731
    print(f"{len(samples)} batches of {args.items} on port {args.port}, {args.connections} connections: "
          f"{len(samples) / elapsed:,.0f} req/s, {len(samples) * args.items / elapsed:,.0f} predictions/s; "
          f"p50 {pick(0.5):.1f} ms, p99 {pick(0.99):.1f} ms, max {samples[-1] * 1000:.1f} ms; errors {len(errors)}")
    print(f"reproduce: .venv/bin/python bench/batch_client.py --port {args.port} --items {args.items} "
          f"--connections {args.connections} --seconds {args.seconds:g}")


if __name__ == "__main__":
    main()
