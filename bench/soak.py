"""Soak: minutes of mixed load against a real service process, then leaks, losses and 5xx.

Starts ``python app.py`` itself with the bundled ``conf/model_router_rules.yml`` (a copy in
a temporary folder) and a copy of ``models/`` (``make models``), on free loopback ports
(main and ``--data-port``), with a private ``redis-server`` on a free port when one is
installed. Version 2 of ``tlob_tiny`` is copied from version 1 and registered with
``POST /models`` (admin key). Then, for ``--minutes``, at once:

- single ``/predict`` on the main port and on the data plane (routed: crypto, 30 s, BTC/USDT);
- ``/predict/batch`` (32 items) on the main port;
- a ``/ws/predict`` stream (one request per message);
- ``--subscribers`` ``/ws/switches`` subscribers counting switch events;
- a rules reload every ``--reload-every`` seconds (the copy's description edited, saved);
- a switch of ``tlob_tiny`` every ``--switch-every`` seconds, alternating immediate and
  gradual, between versions 1 and 2.

Warm-up ends once the load has run ``--warmup`` seconds *and* the bounded structures the
load fills have been full: the health monitor's feedback index
(``model_router_feedback_index_entries``) reached 7/8 of ``switching.feedback_index_size``
and then dropped a generation (from then on it stays between 7/8 and all of its bound),
waited for at most ``--warmup-max`` seconds. Filling a bound is not a leak; growth after
it is what the RSS target is about. The RSS at ``--warmup`` seconds is printed too.

After the load: requests by status per kind (zero 5xx expected), switch events each
subscriber received vs the events the service emitted (``model_switch_total`` delta: zero
lost), the server's RSS and open file descriptors after warm-up and at the end (RSS growth
target < 5 %), p50/p99 per kind, and the command to reproduce. Every loop is bounded by
the deadline; loopback only; the server is stopped with SIGTERM.

    .venv/bin/python bench/soak.py [--minutes 10] [--warmup 20] [--warmup-max 300] [--subscribers 2]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import httpx
import trio
from trio_websocket import open_websocket_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from processes import free_port, start_redis, wait_ready  # noqa: E402

MODEL = "tlob_tiny"
FEATURES = {"order_imbalance": 0.3, "spread_bps": 1.2, "trade_flow": 0.5, "return_1s": 0.001, "volume_z": 0.1}
ROUTED = {"asset_class": "crypto", "horizon_ms": 30_000, "symbol": "BTC/USDT", "features": FEATURES}
TIMEOUT_S = 10.0
#: Warm-up waits until the feedback index holds this share of its bound (what it keeps once full).
FULL_SHARE = 7 / 8


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Stats:
    """Per traffic kind: answers by status and latencies (ms)."""

    def __init__(self) -> None:
        self.statuses: dict[str, Counter[str]] = defaultdict(Counter)
        self.latency_ms: dict[str, list[float]] = defaultdict(list)

    def note(self, kind: str, status: int | str, started: float) -> None:
        self.statuses[kind][str(status)] += 1
        self.latency_ms[kind].append((time.perf_counter() - started) * 1000)


class Soak:
    def __init__(self, args: argparse.Namespace, main: str, data: str, ws: str, admin_key: str) -> None:
        self.args = args
        self.main, self.data, self.ws = main, data, ws
        self.headers = {"X-Admin-Key": admin_key}
        self.stats = Stats()
        self.deadline = 0.0
        self.events: list[int] = [0] * args.subscribers
        self.subscribed = trio.Event()
        self.switches: list[str] = []
        self.reloads = 0
        self.rss_samples: list[int] = []
        self.warmup_note = ""
        self.subscriber_scopes: list[trio.CancelScope] = []

    def end_at(self, deadline: float) -> None:
        """Set the deadline (it moves once warm-up ends); subscribers stop ``--settle`` s after it."""
        self.deadline = deadline
        for scope in self.subscriber_scopes:
            scope.deadline = deadline + self.args.settle

    async def sample_rss(self, pid: int) -> None:
        """RSS every 10 s after warm-up: tells a plateau (allocator warm-up) from steady growth (a leak)."""
        while self.running():
            self.rss_samples.append(rss_kib(pid))
            with trio.move_on_at(self.deadline):
                await trio.sleep(10)

    def running(self) -> bool:
        return trio.current_time() < self.deadline

    async def http_loop(self, kind: str, base: str, path: str, body: dict[str, Any]) -> None:
        async with httpx.AsyncClient(base_url=base, timeout=TIMEOUT_S) as client:
            while self.running():
                started = time.perf_counter()
                try:
                    answer = await client.post(path, json=body)
                    self.stats.note(kind, answer.status_code, started)
                except httpx.HTTPError as exc:
                    self.stats.note(kind, type(exc).__name__, started)

    async def ws_predict(self) -> None:
        message = json.dumps(ROUTED)
        while self.running():
            with contextlib.suppress(OSError, trio.TooSlowError, Exception):
                async with open_websocket_url(f"{self.ws}/ws/predict") as ws:
                    while self.running():
                        started = time.perf_counter()
                        with trio.fail_after(TIMEOUT_S):
                            await ws.send_message(message)
                            answer = json.loads(await ws.get_message())
                        self.stats.note("ws_predict", 200 if answer.get("type") == "prediction"
                                        else answer.get("status", "error"), started)
            if self.running():
                self.stats.note("ws_predict", "disconnected", time.perf_counter())

    async def subscriber(self, index: int, ready: trio.Event) -> None:
        async with open_websocket_url(f"{self.ws}/ws/switches") as ws:
            first = json.loads(await ws.get_message())
            assert first["type"] == "subscribed", first
            ready.set()
            with trio.CancelScope(deadline=self.deadline + self.args.settle) as scope:
                self.subscriber_scopes.append(scope)  # end_at moves its deadline
                while True:
                    message = json.loads(await ws.get_message())
                    if message.get("type") not in ("subscribed", "error"):
                        self.events[index] += 1

    async def reloader(self, rules: Path) -> None:
        text = rules.read_text()
        while self.running():
            await trio.sleep(self.args.reload_every)
            self.reloads += 1
            edited = text.replace('description: "crypto, sub-minute: order-book transformer"',
                                  f'description: "crypto, sub-minute: order-book transformer ({self.reloads})"')
            tmp = rules.with_suffix(".tmp")
            tmp.write_text(edited)
            tmp.replace(rules)

    async def switcher(self, client: httpx.AsyncClient) -> None:
        target = "2"
        while True:
            with trio.move_on_at(self.deadline):
                await trio.sleep(self.args.switch_every)
            if not self.running():
                return
            strategy = "immediate" if len(self.switches) % 2 == 0 else "gradual"
            body: dict[str, Any] = {"version": target, "strategy": strategy}
            if strategy == "gradual":
                body.update(steps=[25, 50, 100], interval_s=2)
            answer = await client.post(f"/models/{MODEL}/switch", json=body, headers=self.headers)
            self.switches.append(f"{strategy}->{target}:{answer.status_code}")
            if answer.status_code == 202:
                target = "1" if target == "2" else "2"


async def metric_sum(client: httpx.AsyncClient, prefix: str) -> float:
    """The sum of a metric's samples (``prefix``: the name, with ``{`` for a labelled one)."""
    text = (await client.get("/metrics")).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(prefix))


async def switch_total(client: httpx.AsyncClient) -> float:
    return await metric_sum(client, "model_switch_total{")


async def wait_bounds_full(client: httpx.AsyncClient, headers: dict[str, str], max_s: float) -> tuple[bool, int]:
    """Until the feedback index has been full (at most ``max_s``): (whether it was, its bound).

    Full means it reached FULL_SHARE of ``switching.feedback_index_size`` and then shrank: it
    dropped its oldest generation, so it has held its whole bound once and stays between
    FULL_SHARE and all of it from then on.
    """
    bound = int((await client.get("/rules", headers=headers)).json()["switching"]["feedback_index_size"])
    if bound == 0:
        return True, bound
    previous = 0.0
    with trio.move_on_after(max_s):
        while True:
            entries = await metric_sum(client, "model_router_feedback_index_entries ")
            if previous >= bound * FULL_SHARE and entries < previous:
                return True, bound
            previous = entries
            await trio.sleep(0.5)  # polling another process's metric
    return False, bound


async def soak(args: argparse.Namespace, folder: Path) -> int:
    if not (ROOT / "models" / MODEL / "1").is_dir():
        print("models/ is missing: run `make models` first", file=sys.stderr)
        return 2
    conf = folder / "conf"
    conf.mkdir()
    rules = conf / "model_router_rules.yml"
    shutil.copy(ROOT / "conf" / "model_router_rules.yml", rules)
    repo = folder / "models"
    shutil.copytree(ROOT / "models", repo, ignore=shutil.ignore_patterns("[2-9]*"))
    redis_process, redis_url = (start_redis(folder) if shutil.which("redis-server") and not args.no_redis
                                else (None, None))
    port, data_port = free_port(), free_port()
    admin_key = secrets.token_urlsafe(24)
    env = {**os.environ, "MODEL_ROUTER_ADMIN_KEY": admin_key, "LOG_LEVEL": "WARNING"}
    command = [sys.executable, str(ROOT / "app.py"), "--config", str(rules), "--models", str(repo),
               "--host", "127.0.0.1", "--port", str(port), "--data-port", str(data_port),
               "--state-file", str(folder / "state.json"), "--log-level", "WARNING"]
    if redis_url:
        command += ["--redis-url", redis_url]
    log = (folder / "server.log").open("wb")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    main, data = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{data_port}"
    try:
        async with httpx.AsyncClient(base_url=main, timeout=TIMEOUT_S) as client:
            await wait_ready(client, process=process)
            shutil.copytree(repo / MODEL / "1", repo / MODEL / "2")
            registered = await client.post("/models", json={"name": MODEL, "version": "2"},
                                           headers={"X-Admin-Key": admin_key})
            print(f"registered {MODEL} v2: {registered.status_code}", flush=True)
            run = Soak(args, main, data, f"ws://127.0.0.1:{port}", admin_key)
            # Moved to "now + minutes" once warm-up ends (its length depends on the load).
            run.end_at(trio.current_time() + args.warmup + args.warmup_max + args.minutes * 60)
            batch = {"requests": [ROUTED] * 32}
            async with trio.open_nursery() as nursery:
                for index in range(args.subscribers):
                    ready = trio.Event()
                    nursery.start_soon(run.subscriber, index, ready)
                    await ready.wait()
                # Traffic first: the feed only reports symbols that were active.
                nursery.start_soon(run.http_loop, "predict_main", main, "/predict", ROUTED)
                nursery.start_soon(run.http_loop, "predict_data", data, "/predict", ROUTED)
                nursery.start_soon(run.http_loop, "batch_main", main, "/predict/batch", batch)
                nursery.start_soon(run.ws_predict)
                load_started = trio.current_time()
                await trio.sleep(args.warmup)
                rss_at_warmup_s = rss_kib(process.pid)
                full, bound = await wait_bounds_full(client, run.headers, args.warmup_max)
                warmup_s = trio.current_time() - load_started
                run.end_at(trio.current_time() + args.minutes * 60)
                switches_before = await switch_total(client)
                events_before = list(run.events)
                rss_start, fds_start = rss_kib(process.pid), open_fds(process.pid)
                warm = {kind: len(values) for kind, values in run.stats.latency_ms.items()}
                state = "had been full" if full else "was NOT full yet (--warmup-max reached)"
                run.warmup_note = (f"warm-up {warmup_s:.0f} s: at least {args.warmup:.0f} s of load, and until the "
                                   f"feedback index (bound {bound:,}) {state}; RSS after {args.warmup:.0f} s of "
                                   f"load {rss_at_warmup_s / 1024:.1f} MiB, after warm-up {rss_start / 1024:.1f} MiB")
                print(f"{run.warmup_note}; {fds_start} fds; load for {args.minutes} min", flush=True)
                nursery.start_soon(run.sample_rss, process.pid)
                nursery.start_soon(run.reloader, rules)
                nursery.start_soon(run.switcher, client)
            rss_end, fds_end = rss_kib(process.pid), open_fds(process.pid)
            switches_after = await switch_total(client)
            stats_body = (await client.get("/stats")).json()
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            exit_code = process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            exit_code = process.wait()
        if redis_process is not None:
            redis_process.terminate()
            redis_process.wait(timeout=10)
    run.events = [n - before for n, before in zip(run.events, events_before, strict=True)]
    return report(args, run, warm, rss_start, rss_end, fds_start, fds_end, switches_after - switches_before,
                  stats_body, exit_code, redis_url is not None, folder)


def report(args: argparse.Namespace, run: Soak, warm: dict[str, int], rss_start: int, rss_end: int,
           fds_start: int, fds_end: int, expected_events: float, stats_body: dict[str, Any], exit_code: int,
           with_redis: bool, folder: Path) -> int:
    print(f"\n## soak: {args.minutes} min after warm-up, Redis {'on' if with_redis else 'off'}")
    print(f"\n{run.warmup_note}")
    print("\n| kind | requests | by status | p50 ms | p99 ms |\n|---|---:|---|---:|---:|")
    five_xx = 0
    for kind in sorted(run.stats.statuses):
        statuses = run.stats.statuses[kind]
        five_xx += sum(n for status, n in statuses.items() if not status.isdigit() or int(status) >= 500)
        measured = run.stats.latency_ms[kind][warm.get(kind, 0):]
        print(f"| {kind} | {sum(statuses.values()):,} | {dict(sorted(statuses.items()))} | "
              f"{percentile(measured, 0.5):.2f} | {percentile(measured, 0.99):.2f} |")
    growth = (rss_end - rss_start) / rss_start * 100
    lost = [int(expected_events) - received for received in run.events]
    print(f"\n- 5xx or transport errors: {five_xx} (expected 0)")
    print(f"- switches: {len(run.switches)} ({', '.join(run.switches)}); switch events emitted "
          f"{int(expected_events)}, received per subscriber {run.events}; lost {lost} (expected 0)")
    print(f"- rules reloads written: {run.reloads}; service reloads recorded: "
          f"{stats_body.get('load_count', '?')}")
    print(f"- server RSS {rss_start / 1024:.1f} -> {rss_end / 1024:.1f} MiB ({growth:+.1f} % after warm-up, "
          f"target < 5 %); open fds {fds_start} -> {fds_end}; exit code {exit_code}")
    samples = [*run.rss_samples, rss_end]
    quarters = [samples[min(len(samples) - 1, len(samples) * q // 4)] for q in range(5)]
    print(f"- RSS at 0/25/50/75/100 % of the run (MiB): {', '.join(f'{kib / 1024:.1f}' for kib in quarters)}")
    if args.keep:
        print(f"- server log: {folder / 'server.log'}")
    print(f"\nreproduce: .venv/bin/python bench/soak.py --minutes {args.minutes} --warmup {args.warmup:g} "
          f"--warmup-max {args.warmup_max:g} "
          f"--subscribers {args.subscribers} --reload-every {args.reload_every:g} --switch-every "
          f"{args.switch_every:g}{' --no-redis' if args.no_redis else ''}")
    ok = five_xx == 0 and all(n == 0 for n in lost) and growth < 5 and exit_code == 0
    print("result:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=20.0, help="least seconds of load before the first RSS sample")
    parser.add_argument("--warmup-max", type=float, default=300.0,
                        help="most seconds warm-up waits on top of --warmup for the feedback index to fill")
    parser.add_argument("--subscribers", type=int, default=2)
    parser.add_argument("--reload-every", type=float, default=5.0)
    parser.add_argument("--switch-every", type=float, default=60.0)
    parser.add_argument("--settle", type=float, default=5.0, help="seconds subscribers keep reading after the load")
    parser.add_argument("--no-redis", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (server log, state)")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="model-router-soak-"))
    try:
        return trio.run(soak, args, folder)
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
