"""Switch-event fan-out to many ``/ws/switches`` subscribers vs ``/predict`` latency on both ports.

A switch moves every recently active symbol of the switched model at once, and the feed
sends one event per moved symbol to every subscriber: with 1,000 subscribers, a switch of
16 symbols is 16,000 WebSocket messages, sent on the event loop that also answers
predictions (main port and data port share it). This bench measures what that burst costs
the predictions of a well-behaved client.

Builds a model repository in a temporary folder (``tlob_tiny`` v1, a default model),
starts ``python app.py`` (main port and data port, free loopback ports) pinned to CPU 0,
adds ``tlob_tiny`` v2 once it is ready, and runs everything else on CPU 1:

- two measuring loops in this process, one per port, each a single keep-alive HTTP/1.1
  connection sending routed ``POST /predict`` requests back to back (raw sockets: the
  client's own overhead stays small and steady), cycling over ``--symbols`` symbols so
  that every one of them is recently active and moves on each switch;
- the subscribers, in a child process at ``--nice`` 10 (so its reading competes little
  with the measuring loops): ``--subscribers`` raw WebSocket connections on
  ``/ws/switches`` read with one selector, each checking that it receives every event,
  in the same order as every other subscriber; plus ``--never-reading`` connections with
  a 1 KiB receive buffer that never read; plus ``--slow-loris`` connections to the main
  port sending a request head a byte every 100 ms (reopened when the server cuts them).

Phases, each reporting p50/p99/max per port, the server's RSS, open file descriptors
and CPU:

1. ``quiet``: ``--seconds`` of load, no subscriber, no switch;
2. ``switching``: the control: ``--switches`` immediate switches (v1 <-> v2) one after
   the other with nobody subscribed, each measured for ``--window`` seconds from its
   POST: what the switches themselves cost the predictions;
3. ``idle``: ``--seconds`` with every subscriber (and slow-loris connection) connected, no switch;
4. ``fan-out``: ``--switches`` more switches, each window running from the POST for
   ``--window`` seconds or until every reading subscriber has every event of it (the
   subscriber process says so), whichever is later; requests that start inside a window
   are counted;
5. ``alone``: ``--alone`` more switches with the measuring loops stopped: how long a burst
   takes to reach everybody when nothing else runs, and the server's CPU per message.

Then: per-switch delivery time (POST -> the last subscriber has the last event), events
received vs expected and whether every subscriber saw the same order, subscribers
dropped (``model_router_switch_subscribers_dropped_total``), errors by phase, and the
ratios idle p99 / quiet p99 and fan-out p99 / quiet p99 (the goal: within 2x) and fan-out
p99 / switching p99.

    .venv/bin/python bench/fanout.py [--subscribers 1000] [--symbols 16] [--switches 20] \
        [--window 0.5] [--alone 2] [--never-reading 1] [--seconds 5] [--nice 10] [--slow-loris 0] \
        [--server-root PATH]

Before/after: ``git archive <commit> | tar -x -C /tmp/before`` and ``--server-root /tmp/before``
runs the older service with this same bench (the models and config are built by this one).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import resource
import secrets
import selectors
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from processes import build_bench_repository, free_port, write_bench_rules  # noqa: E402

MODEL = "tlob_tiny"
DEFAULT_MODEL = "baseline_mlp"
FEATURES = ("order_imbalance", "spread_bps", "trade_flow", "return_1s", "volume_z")
HOST = "127.0.0.1"


# ------------------------------------------------------------ subscribers ----


class Reader:
    """One raw WebSocket subscriber: handshake, then frames parsed from a byte buffer."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()
        self.upgraded = False
        self.subscribed = False
        self.closed = False
        self.events = 0
        self.order = 0  # a running hash of the event ids, in arrival order

    def feed(self, data: bytes) -> None:
        self.buffer += data
        if not self.upgraded:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            if not self.buffer.startswith(b"HTTP/1.1 101"):
                raise RuntimeError(f"handshake refused: {bytes(self.buffer[:80])!r}")
            del self.buffer[:end + 4]
            self.upgraded = True
        while len(self.buffer) >= 2:
            opcode, length, start = self.buffer[0] & 0x0F, self.buffer[1] & 0x7F, 2
            if length == 126:
                if len(self.buffer) < 4:
                    return
                length, start = int.from_bytes(self.buffer[2:4], "big"), 4
            elif length == 127:
                if len(self.buffer) < 10:
                    return
                length, start = int.from_bytes(self.buffer[2:10], "big"), 10
            if len(self.buffer) < start + length:
                return
            payload = bytes(self.buffer[start:start + length])
            del self.buffer[:start + length]
            if opcode == 0x8:
                self.closed = True
            elif opcode == 0x1:
                at = payload.find(b'"event_id":')
                if at >= 0:  # a switch event (found without parsing: this process must keep up)
                    self.events += 1
                    self.order = hash((self.order, payload[at + 12:at + 44]))
                elif json.loads(payload).get("type") == "subscribed":
                    self.subscribed = True


def handshake(host: str, port: int, receive_buffer: int | None = None) -> socket.socket:
    sock = socket.socket()
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.connect((host, port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /ws/switches HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    return sock


class SlowLoris:
    """Connections that send a request head a byte every ``PACE_S`` and never finish it.

    One the server closes (its header timeout: 408 after 20 s) is opened again at once, as an
    attacker would, so the attack lasts the whole run.
    """

    PACE_S = 0.1
    HEAD = b"POST /predict HTTP/1.1\r\nHost: bench\r\nX-Slow: " + b"a" * 100_000

    def __init__(self, host: str, port: int, count: int) -> None:
        self.address = (host, port)
        self.sockets = [self.open() for _ in range(count)]
        self.sent = [0] * count
        self.reopened = 0
        self.next_at = time.monotonic()

    def open(self) -> socket.socket:
        sock = socket.create_connection(self.address)
        sock.setblocking(False)
        return sock

    def tick(self) -> None:
        """One byte on every connection, when its pace is due."""
        now = time.monotonic()
        if now < self.next_at:
            return
        self.next_at = now + self.PACE_S
        for i, sock in enumerate(self.sockets):
            try:
                sock.send(self.HEAD[self.sent[i]:self.sent[i] + 1])
                self.sent[i] += 1
            except OSError:  # closed by the server (header timeout) or full: start over
                sock.close()
                self.sockets[i], self.sent[i] = self.open(), 0
                self.reopened += 1


def subscriber_process(host: str, port: int, count: int, never_reading: int, slow: int = 0) -> None:
    """``--subscriber-process``: hold the subscribers; answer ``expect N`` lines on stdin.

    Prints ``ready`` once every reader is subscribed; for ``expect N`` prints
    ``delivered N <open readers> <same order 0/1>`` once every open reader has N events.
    With ``slow`` > 0 it also keeps that many slow-loris connections trickling to the main port.
    """
    idle = [handshake(host, port, 1024) for _ in range(never_reading)]
    loris = SlowLoris(host, port, slow) if slow else None
    selector = selectors.DefaultSelector()
    readers = []
    for _ in range(count):
        reader = Reader(handshake(host, port))
        reader.sock.setblocking(False)
        selector.register(reader.sock, selectors.EVENT_READ, reader)
        readers.append(reader)
    selector.register(sys.stdin, selectors.EVENT_READ, None)
    expected: int | None = None
    announced_ready = False
    while True:
        if loris is not None:
            loris.tick()
        for key, _ in selector.select(timeout=1.0 if loris is None else SlowLoris.PACE_S / 2):
            if key.data is None:
                line = sys.stdin.readline()
                if not line:
                    for sock in idle + (loris.sockets if loris is not None else []):
                        sock.close()
                    return
                expected = int(line.split()[1])
                continue
            reader = key.data
            try:
                data = reader.sock.recv(1 << 16)
            except OSError:
                data = b""
            if not data:
                reader.closed = True
                selector.unregister(reader.sock)
                continue
            reader.feed(data)
        open_readers = [r for r in readers if not r.closed]
        if not announced_ready and all(r.subscribed for r in readers):
            announced_ready = True
            print("ready", flush=True)
        if expected is not None and all(r.events >= expected for r in open_readers):
            same = len({r.order for r in open_readers}) <= 1
            print(f"delivered {expected} {len(open_readers)} {int(same)}", flush=True)
            expected = None


# ---------------------------------------------------------------- server ----


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Http:
    """A minimal keep-alive HTTP/1.1 client on one blocking socket (JSON in, status and JSON out)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock = socket.create_connection((HOST, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def call(self, method: str, path: str, body: dict[str, Any] | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, Any]:
        payload = json.dumps(body).encode() if body is not None else b""
        head = f"{method} {path} HTTP/1.1\r\nHost: {HOST}:{self.port}\r\nContent-Length: {len(payload)}\r\n"
        if body is not None:
            head += "Content-Type: application/json\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self.sock.sendall(head.encode() + b"\r\n" + payload)
        return self.read()

    def read(self) -> tuple[int, Any]:
        while b"\r\n\r\n" not in self.buffer:
            self.receive()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        length = next(int(line.split(":", 1)[1]) for line in lines[1:] if line.lower().startswith("content-length:"))
        while len(self.buffer) < length:
            self.receive()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        if any(line.lower().replace(" ", "") == "connection:close" for line in lines[1:]):
            self.reconnect()  # Hypercorn closes a keep-alive connection after 1,000 requests
        return status, (json.loads(body) if body else None)

    def reconnect(self) -> None:
        self.sock.close()
        self.sock = socket.create_connection((HOST, self.port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def receive(self) -> None:
        data = self.sock.recv(1 << 16)
        if not data:
            raise ConnectionError("server closed the connection")
        self.buffer += data


def metric(port: int, name: str) -> float:
    http = Http(port)
    http.sock.sendall(f"GET /metrics HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
    while b"\r\n\r\n" not in http.buffer:
        http.receive()
    head, _, rest = http.buffer.partition(b"\r\n\r\n")
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")[1:]
                  if line.lower().startswith(b"content-length:"))
    http.buffer = rest
    while len(http.buffer) < length:
        http.receive()
    http.sock.close()
    for line in http.buffer.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return float("nan")


class Load:
    """The measuring loops: (started, latency s, port name) samples, until stopped."""

    def __init__(self, ports: dict[str, int], symbols: list[str]) -> None:
        self.ports = ports
        self.symbols = symbols
        self.samples: list[tuple[float, float, str]] = []
        self.errors: list[tuple[float, str]] = []  # (started, what)
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.loop, args=(name,), daemon=True) for name in ports]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def loop(self, name: str) -> None:
        http = Http(self.ports[name])
        features = {feature: 0.1 for feature in FEATURES}
        i = 0
        while not self.stop.is_set():
            body = {"asset_class": "crypto", "horizon_ms": 30000, "symbol": self.symbols[i % len(self.symbols)],
                    "features": features}
            i += 1
            started = time.perf_counter()
            status, answer = http.call("POST", "/predict", body)
            self.samples.append((started, time.perf_counter() - started, name))
            if status != 200:
                self.errors.append((started, f"{name}: {status} {answer}"))

    def window(self, start: float, end: float, name: str) -> list[float]:
        return [latency for began, latency, port in self.samples if port == name and start <= began < end]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def line(phase: str, name: str, values: list[float]) -> str:
    if not values:
        return f"  {phase:<8} {name:<5} no requests"
    ms = [v * 1000 for v in values]
    return (f"  {phase:<8} {name:<5} n={len(ms):<6} p50 {statistics.median(ms):7.2f}  p99 {percentile(ms, 0.99):8.2f}"
            f"  max {max(ms):8.2f} ms")


def raise_fd_limit(needed: int) -> None:
    """Subscribers and slow connections need many sockets here and in the server (which inherits it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed if hard == resource.RLIM_INFINITY else min(needed, hard),
                                                    hard))


def run(args: argparse.Namespace, folder: Path) -> int:
    raise_fd_limit(args.subscribers + args.never_reading + args.slow_loris + 512)
    repo = build_bench_repository(folder, MODEL, DEFAULT_MODEL, FEATURES)
    config = write_bench_rules(folder, repo, MODEL, DEFAULT_MODEL)
    port, data_port = free_port(), free_port()
    admin = secrets.token_hex(16)
    cpus = sorted(os.sched_getaffinity(0))
    pin = ["taskset", "-c", str(cpus[0])] if len(cpus) >= 2 and shutil.which("taskset") else []
    if pin:
        os.sched_setaffinity(0, {cpus[1]})
    env = {**os.environ, "MODEL_ROUTER_ADMIN_KEY": admin, "LOG_LEVEL": "WARNING"}
    log = (folder / "server.log").open("wb")
    server = subprocess.Popen([*pin, sys.executable, str(args.server_root / "app.py"), "--config", str(config),
                               "--host", HOST, "--port", str(port), "--data-port", str(data_port),
                               "--state-file", str(folder / "state.json"), "--log-level", "WARNING"],
                              cwd=args.server_root, env=env, stdin=subprocess.DEVNULL, stdout=log,
                              stderr=subprocess.STDOUT)
    load: Load | None = None
    subscribers: subprocess.Popen[str] | None = None
    try:
        deadline = time.monotonic() + 60
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"server exited with {server.returncode}: see {folder / 'server.log'}")
            with contextlib.suppress(OSError):
                if Http(port).call("GET", "/health/ready")[0] == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("server not ready after 60 s")
            time.sleep(0.1)
        from actors.build.demo_models import build_random_model

        build_random_model(repo, MODEL, "2", FEATURES, seed=2)
        symbols = [f"FAN{i:03d}/USDT" for i in range(args.symbols)]
        load = Load({"main": port, "data": data_port}, symbols)
        load.start()
        time.sleep(1.0)  # warm-up: connections open, every symbol seen (not measured)
        figures: dict[str, dict[str, list[float]]] = {}
        resources: dict[str, tuple[float, int, float]] = {}
        cpu_at = [cpu_seconds(server.pid), time.perf_counter()]

        marks: dict[str, list[tuple[float, float]]] = {}

        def phase(name: str, start: float, end: float | None = None) -> None:
            end = time.perf_counter() if end is None else end
            marks[name] = [(start, end)]
            figures[name] = {port_name: load.window(start, end, port_name) for port_name in load.ports}
            cpu, now = cpu_seconds(server.pid), time.perf_counter()
            resources[name] = (rss_mib(server.pid), open_fds(server.pid), (cpu - cpu_at[0]) / (now - cpu_at[1]))
            cpu_at[:] = [cpu, now]

        control = Http(port)
        fired = 0
        delivered = ""

        def fire(count: int) -> list[tuple[float, float]]:
            """``count`` switches one after the other. Each window runs from the POST for ``--window``
            seconds or, with subscribers, until every one of them has the burst if that is later."""
            nonlocal fired, delivered
            windows = []
            for _ in range(count):
                fired += 1
                began = time.perf_counter()
                status, answer = control.call("POST", f"/models/{MODEL}/switch",
                                              {"version": "2" if fired % 2 else "1", "strategy": "immediate"},
                                              {"X-Admin-Key": admin})
                if status != 202:
                    raise RuntimeError(f"switch answered {status}: {answer}")
                if subscribers is not None:
                    assert subscribers.stdin is not None and subscribers.stdout is not None
                    subscribers.stdin.write(f"expect {fired * args.symbols}\n")
                    subscribers.stdin.flush()
                    delivered = subscribers.stdout.readline().strip()
                    if not delivered.startswith("delivered"):
                        raise RuntimeError(f"the subscriber process stopped: {delivered!r}")
                    deliveries.append(time.perf_counter() - began)
                time.sleep(max(0.0, began + args.window - time.perf_counter()))
                windows.append((began, time.perf_counter()))
                time.sleep(0.2)  # the operation settles; not measured
            return windows

        def windowed(name: str, windows: list[tuple[float, float]]) -> None:
            marks[name] = windows
            figures[name] = {port_name: [v for start, end in windows for v in load.window(start, end, port_name)]
                             for port_name in load.ports}
            cpu, now = cpu_seconds(server.pid), time.perf_counter()
            resources[name] = (rss_mib(server.pid), open_fds(server.pid), (cpu - cpu_at[0]) / (now - cpu_at[1]))
            cpu_at[:] = [cpu, now]

        deliveries: list[float] = []
        started = time.perf_counter()
        time.sleep(args.seconds)
        phase("quiet", started)
        windowed("switching", fire(args.switches))  # the control: the switches' own cost, nobody subscribed

        subscribers = subprocess.Popen(
            ["nice", "-n", str(args.nice), sys.executable, __file__, "--subscriber-process", HOST, str(port),
             str(args.subscribers), str(args.never_reading), str(args.slow_loris)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert subscribers.stdin is not None and subscribers.stdout is not None
        if subscribers.stdout.readline().strip() != "ready":
            raise RuntimeError("the subscriber process failed")
        fired = 0  # the subscribers count the events published after they joined
        cpu_at[:] = [cpu_seconds(server.pid), time.perf_counter()]
        started = time.perf_counter()
        time.sleep(args.seconds)
        phase("idle", started)

        windowed("fan-out", fire(args.switches))
        fan_out_deliveries = list(deliveries)
        load.stop.set()
        for thread in load.threads:
            thread.join()
        # The fan-out alone (no prediction traffic): how fast a burst reaches everybody, CPU per message.
        cpu_before = cpu_seconds(server.pid)
        deliveries.clear()
        fire(args.alone)
        alone_cpu_us = (cpu_seconds(server.pid) - cpu_before) * 1e6 / max(1, args.alone * args.symbols
                                                                          * args.subscribers)
        dropped = metric(port, "model_router_switch_subscribers_dropped_total")
        _, _, open_readers, same = delivered.split()
    finally:
        if load is not None:
            load.stop.set()
        if subscribers is not None:
            with contextlib.suppress(OSError):
                assert subscribers.stdin is not None
                subscribers.stdin.close()
            subscribers.wait(30)
        server.terminate()
        server.wait(30)

    command = (f".venv/bin/python bench/fanout.py --subscribers {args.subscribers} --symbols {args.symbols}"
               f" --switches {args.switches} --window {args.window:g} --alone {args.alone}"
               f" --never-reading {args.never_reading} --seconds {args.seconds:g} --nice {args.nice}")
    if args.slow_loris:
        command += f" --slow-loris {args.slow_loris}"
    if args.server_root != ROOT:
        command += f" --server-root {args.server_root}"
    pinning = "server on CPU 0, the rest on CPU 1" if pin else "no CPU pinning"
    print(f"fan-out: {args.subscribers} subscribers (+{args.never_reading} never reading,"
          f" +{args.slow_loris} slow-loris connections), {args.switches}"
          f" switches x {args.symbols} symbols = {args.switches * args.symbols} events each,"
          f" {args.subscribers * args.switches * args.symbols} messages; {pinning}; load average"
          f" {os.getloadavg()[0]:.1f}")
    for name, by_port in figures.items():
        for port_name, values in by_port.items():
            print(line(name, port_name, values))
        rss, fds, cpu = resources[name]
        print(f"  {name:<8} server RSS {rss:.0f} MiB, {fds} open fds, CPU {100 * cpu:.0f}% of a core")
    spans = [d * 1000 for d in fan_out_deliveries]
    print(f"  delivery per switch (POST -> last subscriber has the last event): p50 {statistics.median(spans):.0f}"
          f"  max {max(spans):.0f} ms")
    if deliveries:
        spans = [d * 1000 for d in deliveries]
        print(f"  without prediction traffic ({args.alone} switches): delivery p50 {statistics.median(spans):.0f}"
              f"  max {max(spans):.0f} ms; server CPU {alone_cpu_us:.0f} µs per message")
    print(f"  events: every one of {open_readers} reading subscribers got all {args.switches * args.symbols},"
          f" same order everywhere: {'yes' if same == '1' else 'NO'}; subscribers dropped: {dropped:g}")
    if load.errors:
        where = [next((name for name, spans in marks.items() if any(a <= t < b for a, b in spans)),
                      "outside the measured windows") for t, _ in load.errors]
        print(f"  errors: {len(load.errors)} ({', '.join(f'{n} in {name}' for name, n in Counter(where).items())}),"
              f" first: {load.errors[0][1]}")
    for phase_name in ("idle", "fan-out"):
        verdicts = []
        for port_name in load.ports:
            quiet = percentile(figures["quiet"][port_name], 0.99)
            loaded = percentile(figures[phase_name][port_name], 0.99)
            verdicts.append(f"{port_name} {loaded / quiet:.2f}x ({'ok' if loaded <= 2 * quiet else 'over 2x'})")
        print(f"  {phase_name} p99 / quiet p99: " + ", ".join(verdicts))
    print("  fan-out p99 / switching p99 (the switches without subscribers): " + ", ".join(
        f"{name} {percentile(figures['fan-out'][name], 0.99) / percentile(figures['switching'][name], 0.99):.2f}x"
        for name in load.ports))
    print(f"reproduce: {command}")
    return 1 if load.errors else 0


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--subscriber-process":
        subscriber_process(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=1000, help="reading /ws/switches subscribers")
    parser.add_argument("--never-reading", type=int, default=1, help="subscribers that never read")
    parser.add_argument("--symbols", type=int, default=16, help="symbols in the traffic: events per switch")
    parser.add_argument("--switches", type=int, default=20, help="switches fired one after the other")
    parser.add_argument("--window", type=float, default=0.5,
                        help="seconds measured after each switch POST (longer while a burst is still going out)")
    parser.add_argument("--alone", type=int, default=2, help="switches fired after the load stopped")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of the quiet and idle phases")
    parser.add_argument("--nice", type=int, default=10, help="niceness of the subscriber process")
    parser.add_argument("--slow-loris", type=int, default=0,
                        help="slow-loris connections (a head byte every 100 ms) to the main port, from the "
                             "subscriber process: connected in the idle and fan-out phases")
    parser.add_argument("--server-root", type=Path, default=ROOT,
                        help="run app.py from this checkout (e.g. a worktree of an older commit: before/after)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (config, models, log)")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="fanout-bench-"))
    try:
        return run(args, folder)
    finally:
        if args.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
