"""Model version switches under steady load: throughput, latency and errors around each switch.

Builds a small model repository in a temporary folder (``tlob_tiny`` version 1 and a
default model), writes a config routing crypto to ``tlob_tiny``, and starts the service as
a subprocess (``python app.py``) pinned to CPU 0 while this load generator runs on CPU 1,
so the two never compete for a core. Once it is ready, version 2 is written into the
repository (at start the newest version would serve, so v1 must come first). A closed loop
of ``--concurrency`` tasks sends ``/predict`` requests by route (crypto, 30 s horizon) over
keep-alive connections, each for a symbol drawn from ``--symbols`` symbols. For every
strategy in ``--strategies``, in order, switching to whichever version is not in force:

- ``before``: ``--before`` seconds of load on the version in force;
- ``during``: from ``POST /models/tlob_tiny/switch`` until ``/switches/<id>`` (polled every
  100 ms by a separate task) reports a terminal state;
- ``after``: ``--after`` seconds more.

By default: immediate (v1 -> v2), gradual (steps 10/50/100 %, 1 s interval, v2 -> v1),
canary (20 %, 1 s interval, 2 healthy intervals, v1 -> v2). Per phase it prints requests/s,
p50/p99/max latency, errors (non-200 answers and transport errors), the CPU used by the
server and by the load generator (100 % = one core: near 100 % means that side limits the
rate) and the share of answers per version; a request counts in the phase it completes in.
Per switch: the time from the POST to the first event on a WebSocket client subscribed to
``/ws/switches`` before the switch, and the events received (one per symbol that moved).
The server is stopped with SIGTERM at the end and its exit code reported.

    .venv/bin/python bench/switch_under_load.py [--concurrency 16] [--before 5] [--after 5] \
        [--strategies immediate,gradual,canary] [--symbols 200]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio
from trio_websocket import ConnectionClosed, HandshakeError, WebSocketConnection, open_websocket_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from processes import build_bench_repository, write_bench_rules  # noqa: E402

from actors.build.demo_models import build_random_model  # noqa: E402

MODEL = "tlob_tiny"
DEFAULT_MODEL = "baseline_mlp"
FEATURES = ("order_imbalance", "spread_bps", "trade_flow", "return_1s", "volume_z")
TERMINAL = frozenset({"completed", "aborted", "rolled_back", "failed"})
STRATEGIES: dict[str, dict[str, Any]] = {
    # name: switch body without "version"; each switch moves to the version not in force
    "immediate": {"strategy": "immediate"},
    "gradual": {"strategy": "gradual", "steps": [10, 50, 100], "interval_s": 1},
    "canary": {"strategy": "canary", "canary_weight": 20, "interval_s": 1, "healthy_intervals": 2},
}
PHASES = ("before", "during", "after")


class StartupFailed(Exception):
    """The server exited or did not become ready in time."""


# ------------------------------------------------------------------ setup ----


def deploy_second_version(repo: Path) -> None:
    """Version 2 lands in the repository once v1 serves (at start the newest version would serve)."""
    build_random_model(repo, MODEL, "2", FEATURES, seed=2)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc), 0.0 when unavailable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_plan() -> tuple[list[str], str]:
    """The server's command prefix and a description: server on CPU 0, load generator on CPU 1."""
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
    if len(cpus) >= 2 and shutil.which("taskset"):
        server_cpu, load_cpu = sorted(cpus)[:2]
        os.sched_setaffinity(0, {load_cpu})
        return ["taskset", "-c", str(server_cpu)], f"server on CPU {server_cpu}, load generator on CPU {load_cpu}"
    return [], "no CPU pinning (needs taskset and 2 CPUs): server and load generator share CPUs"


def stderr_tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError as exc:
        return f"(cannot read {path}: {exc})"
    return "\n".join(text[-lines:]) or "(empty)"


def stop_server(process: subprocess.Popen) -> int | None:
    if process.poll() is not None:
        return process.returncode
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return None


# ------------------------------------------------------------------- load ----


@attrs.define
class Sample:
    started: float
    latency_ms: float
    ok: bool
    version: str | None


@attrs.define
class Switch:
    strategy: str
    from_version: str = "?"
    to_version: str = "?"
    marks: dict[str, float] = attrs.field(factory=dict)  # phase start times, plus "end"
    cpu: dict[str, tuple[float, float]] = attrs.field(factory=dict)  # CPU seconds (server, generator) at marks
    operation_id: str | None = None
    posted_at: float | None = None
    final_state: str | None = None
    reason: str | None = None
    error: str | None = None


@attrs.define
class Bench:
    base: str
    admin_key: str
    concurrency: int
    symbols: list[str]
    samples: list[Sample] = attrs.field(factory=list)
    transport_errors: Counter = attrs.field(factory=Counter)
    ws_messages: list[tuple[float, dict[str, Any]]] = attrs.field(factory=list)
    ws_error: str | None = None
    cpu: tuple[float, float] | None = None  # CPU use while measuring (server, load generator), 1.0 = one core

    def body(self, rng: random.Random) -> bytes:
        features = {name: round(rng.uniform(-1, 1), 4) for name in FEATURES}
        return json.dumps({"asset_class": "crypto", "horizon_ms": 30000, "symbol": rng.choice(self.symbols),
                           "features": features}).encode()

    async def worker(self, client: httpx.AsyncClient, seed: int, stop: trio.Event) -> None:
        rng = random.Random(seed)
        headers = {"Content-Type": "application/json"}
        while not stop.is_set():
            content = self.body(rng)
            started = time.perf_counter()
            try:
                response = await client.post("/predict", content=content, headers=headers)
            except httpx.HTTPError as exc:
                self.samples.append(Sample(started, (time.perf_counter() - started) * 1000, False, None))
                self.transport_errors[type(exc).__name__] += 1
                await trio.sleep(0.01)  # a refused connection must not become a busy loop
                continue
            latency_ms = (time.perf_counter() - started) * 1000
            version = None
            if response.status_code == 200:
                model = response.json().get("model", {})
                version = f"{model.get('name')}@{model.get('version')}"
            self.samples.append(Sample(started, latency_ms, response.status_code == 200, version))

    async def read_switch_events(self, ws: WebSocketConnection) -> None:
        try:
            while True:
                message = await ws.get_message()
                self.ws_messages.append((time.perf_counter(), json.loads(message)))
        except ConnectionClosed as exc:
            self.ws_error = f"closed by the server: {exc.reason}"

    async def switch(self, control: httpx.AsyncClient, item: Switch, body: dict[str, Any], timeout: float) -> None:
        """POST the switch, then poll its operation every 100 ms until it is terminal (or ``timeout``)."""
        try:
            await self._switch(control, item, body, timeout)
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            item.error = f"switch control request failed: {type(exc).__name__}: {exc}"

    async def _switch(self, control: httpx.AsyncClient, item: Switch, body: dict[str, Any], timeout: float) -> None:
        admin = {"X-Admin-Key": self.admin_key}
        item.posted_at = time.perf_counter()
        response = await control.post(f"/models/{MODEL}/switch", json={"version": item.to_version, **body},
                                      headers=admin)
        if response.status_code != 202:
            item.error = f"switch POST answered {response.status_code}: {response.text[:300]}"
            return
        item.operation_id = response.json()["operation_id"]
        with trio.move_on_after(timeout):
            while True:
                status = await control.get(f"/switches/{item.operation_id}")
                if status.status_code == 200:
                    op = status.json()
                    if op["state"] in TERMINAL:
                        item.final_state, item.reason = op["state"], op.get("reason")
                        return
                await trio.sleep(0.1)
        item.error = f"not terminal after {timeout:.0f} s; aborted it"
        await control.post(f"/switches/{item.operation_id}/abort", headers=admin)


async def wait_ready(base: str, process: subprocess.Popen, timeout: float) -> None:
    deadline = trio.current_time() + timeout
    async with httpx.AsyncClient(base_url=base, timeout=2) as client:
        while True:
            if process.poll() is not None:
                raise StartupFailed(f"server exited with code {process.returncode} before it was ready")
            with contextlib.suppress(httpx.HTTPError):  # not listening yet
                if (await client.get("/health/ready")).status_code == 200:
                    return
            if trio.current_time() > deadline:
                raise StartupFailed(f"server not ready after {timeout:g} s")
            await trio.sleep(0.1)


async def run_load(bench: Bench, process: subprocess.Popen, repo: Path, switches: list[Switch],
                   args: argparse.Namespace) -> None:
    await wait_ready(bench.base, process, args.startup_timeout)
    deploy_second_version(repo)
    ws_url = bench.base.replace("http://", "ws://") + f"/ws/switches?model={MODEL}"
    connected = False
    try:
        async with open_websocket_url(ws_url) as ws:
            connected = True
            first = json.loads(await ws.get_message())
            if first.get("type") != "subscribed":
                raise StartupFailed(f"unexpected first message on {ws_url}: {first}")
            await measure(bench, process, ws, switches, args)
    except (HandshakeError, OSError) as exc:
        if connected:
            raise
        raise StartupFailed(f"cannot open {ws_url}: {type(exc).__name__}: {exc}") from exc


async def measure(bench: Bench, process: subprocess.Popen, ws: WebSocketConnection, switches: list[Switch],
                  args: argparse.Namespace) -> None:
    limits = httpx.Limits(max_connections=bench.concurrency, max_keepalive_connections=bench.concurrency)
    async with httpx.AsyncClient(base_url=bench.base, limits=limits, timeout=10) as client, \
            httpx.AsyncClient(base_url=bench.base, timeout=10) as control, trio.open_nursery() as nursery:
        nursery.start_soon(bench.read_switch_events, ws)
        stop = trio.Event()
        for i in range(bench.concurrency):
            nursery.start_soon(bench.worker, client, i, stop)
        await trio.sleep(args.warmup)  # every symbol seen once, connections open; not measured
        cpu_at = (time.perf_counter(), cpu_seconds(process.pid), time.process_time())

        def mark(item: Switch, phase: str) -> None:
            item.marks[phase] = time.perf_counter()
            item.cpu[phase] = (cpu_seconds(process.pid), time.process_time())

        serving = "1"
        for item in switches:
            item.from_version, item.to_version = serving, "2" if serving == "1" else "1"
            mark(item, "before")
            await trio.sleep(args.before)
            mark(item, "during")
            await bench.switch(control, item, STRATEGIES[item.strategy], args.max_during)
            mark(item, "after")
            await trio.sleep(args.after)
            mark(item, "end")
            if item.error is not None:
                break  # the version in force is unknown: stop here
            if item.final_state == "completed":
                serving = item.to_version
        stop.set()
        wall = time.perf_counter() - cpu_at[0]
        bench.cpu = ((cpu_seconds(process.pid) - cpu_at[1]) / wall, (time.process_time() - cpu_at[2]) / wall)
        with trio.move_on_after(0.3):
            await trio.sleep_forever()  # let the last switch events arrive
        nursery.cancel_scope.cancel()


# ---------------------------------------------------------------- report ----


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def phase_line(name: str, samples: list[Sample], seconds: float, cpu: tuple[float, float]) -> str:
    if not samples:
        return f"  {name:<7} no requests"
    latencies = [s.latency_ms for s in samples]
    errors = sum(not s.ok for s in samples)
    versions = Counter(s.version for s in samples if s.version is not None)
    answered = sum(versions.values()) or 1
    shares = ", ".join(f"{v.split('@', 1)[1] if v.startswith(MODEL + '@') else v} {100 * n / answered:5.1f}%"
                       for v, n in sorted(versions.items()))
    rate = len(samples) / seconds
    return (f"  {name:<7} {seconds:5.2f} s {rate:7.0f} req/s   p50 {statistics.median(latencies):6.2f}"
            f"  p99 {percentile(latencies, 0.99):6.2f}  max {max(latencies):7.2f} ms   errors {errors:<4}"
            f" cpu server {100 * cpu[0] / seconds:3.0f}% generator {100 * cpu[1] / seconds:3.0f}%"
            f"   versions: {shares or '-'}")


def report_switch(bench: Bench, item: Switch) -> dict[str, Any]:
    print(f"{item.strategy}: {MODEL} v{item.from_version} -> v{item.to_version}"
          f" (operation {item.operation_id or '-'}, {item.final_state or 'not finished'}"
          f"{f': {item.reason}' if item.reason else ''})")
    if item.error:
        print(f"  ERROR: {item.error}")
    worst_p99 = 0.0
    errors = 0
    for phase, end in zip(PHASES, (*PHASES[1:], "end"), strict=True):
        if phase not in item.marks or end not in item.marks:
            continue
        start, stop = item.marks[phase], item.marks[end]
        samples = [s for s in bench.samples if start <= s.started + s.latency_ms / 1000 < stop]
        cpu = (item.cpu[end][0] - item.cpu[phase][0], item.cpu[end][1] - item.cpu[phase][1])
        print(phase_line(phase, samples, stop - start, cpu))
        if samples:
            worst_p99 = max(worst_p99, percentile([s.latency_ms for s in samples], 0.99))
            errors += sum(not s.ok for s in samples)
    events = [(t, m) for t, m in bench.ws_messages
              if m.get("type") == "switch" and item.operation_id and m.get("operation_id") == item.operation_id]
    first_ms = None
    if events and item.posted_at is not None:
        first_at, first = events[0]
        first_ms = (first_at - item.posted_at) * 1000
        moved = {m["symbol"] for _, m in events}
        print(f"  websocket: first event {first_ms:.1f} ms after the switch POST (service-side latency"
              f" {first['latency_ms']:.2f} ms), {len(events)} events, {len(moved)} symbols moved")
    else:
        print("  websocket: no switch event received for this operation")
    return {"strategy": item.strategy, "ok": item.final_state == "completed" and item.error is None,
            "p99": worst_p99, "errors": errors, "first_ms": first_ms, "events": len(events)}


# ------------------------------------------------------------------ main ----


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=16, help="closed-loop request tasks")
    parser.add_argument("--before", type=float, default=5.0, help="seconds of load before each switch")
    parser.add_argument("--after", type=float, default=5.0, help="seconds of load after each switch ends")
    parser.add_argument("--strategies", default="immediate,gradual,canary",
                        help=f"comma-separated, run in order; from {', '.join(STRATEGIES)}")
    parser.add_argument("--symbols", type=int, default=200, help="distinct symbols in the traffic")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds of load at the start")
    parser.add_argument("--max-during", type=float, default=30.0, help="give up on a switch after this long")
    parser.add_argument("--startup-timeout", type=float, default=30.0)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (config, models, logs)")
    args = parser.parse_args()
    names = [s.strip() for s in args.strategies.split(",") if s.strip()]
    unknown = [s for s in names if s not in STRATEGIES]
    if unknown or not names:
        parser.error(f"unknown strategy {', '.join(unknown) or '(none)'}; choose from {', '.join(STRATEGIES)}")
    if args.concurrency < 1 or args.symbols < 1:
        parser.error("--concurrency and --symbols must be at least 1")
    command = (f".venv/bin/python bench/switch_under_load.py --concurrency {args.concurrency}"
               f" --before {args.before:g} --after {args.after:g} --strategies {','.join(names)}"
               f" --symbols {args.symbols}")

    folder = Path(tempfile.mkdtemp(prefix="switch-bench-"))
    process: subprocess.Popen | None = None
    exit_code: int | None = None
    status = 0
    try:
        repo = build_bench_repository(folder, MODEL, DEFAULT_MODEL, FEATURES)
        config = write_bench_rules(folder, repo, MODEL, DEFAULT_MODEL)
        port = free_port()
        prefix, pinning = cpu_plan()
        admin_key = secrets.token_hex(16)
        server_log = folder / "server.stderr"
        env = {**os.environ, "MODEL_ROUTER_ADMIN_KEY": admin_key, "LOG_LEVEL": "INFO"}
        with server_log.open("wb") as log_file:
            process = subprocess.Popen(
                [*prefix, sys.executable, str(ROOT / "app.py"), "--config", str(config), "--port", str(port),
                 "--state-file", str(folder / "state.json")],
                cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT)
        print(f"switch under load: {args.concurrency} concurrent /predict loops over {args.symbols} symbols,"
              f" {pinning}")
        print(f"  (command: {command})")
        symbols = [f"SYM{i:03d}/USDT" for i in range(args.symbols)]
        bench = Bench(f"http://127.0.0.1:{port}", admin_key, args.concurrency, symbols)
        plan = [Switch(name) for name in names]
        try:
            trio.run(run_load, bench, process, repo, plan, args)
        except StartupFailed as exc:
            print(f"model-router did not start: {exc}", file=sys.stderr)
            print(f"--- server stderr (tail) ---\n{stderr_tail(server_log)}", file=sys.stderr)
            return 1
        results = [report_switch(bench, item) for item in plan if "during" in item.marks]
        if bench.cpu is not None:
            print(f"CPU while measuring: server {100 * bench.cpu[0]:.0f}% of a core,"
                  f" load generator {100 * bench.cpu[1]:.0f}% of a core")
        if bench.ws_error:
            print(f"websocket closed: {bench.ws_error}")
        if bench.transport_errors:
            print("transport errors: " + ", ".join(f"{k} x{v}" for k, v in bench.transport_errors.items()))
        exit_code = stop_server(process)
        print(f"server stopped with SIGTERM: exit code {exit_code}")
        ok = all(r["ok"] for r in results) and len(results) == len(plan) and exit_code == 0
        firsts = [r["first_ms"] for r in results if r["first_ms"] is not None]
        verdicts = ", ".join(f"{r['strategy']} {'ok' if r['ok'] else 'FAILED'}" for r in results)
        print(f"summary: {len(results)}/{len(plan)} switches ran"
              f" ({verdicts}),"
              f" worst phase p99 {max((r['p99'] for r in results), default=0):.2f} ms,"
              f" {sum(r['errors'] for r in results)} errors,"
              f" first WebSocket event {min(firsts, default=float('nan')):.1f}-{max(firsts, default=float('nan')):.1f}"
              f" ms after the POST, {sum(r['events'] for r in results)} switch events;"
              f" server exit {exit_code}")
        print(f"reproduce: {command}")
        if not ok:
            print(f"--- server stderr (tail) ---\n{stderr_tail(server_log)}", file=sys.stderr)
            status = 1
    finally:
        if process is not None and process.poll() is None:
            stop_server(process)
        if args.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
