"""The data-plane engine's own cost: requests/s, latency and CPU per request for a fixed JSON answer.

No model, no router: ``POST /predict`` answers a constant JSON body, so what is measured is
the HTTP/1.1 engine (accept, receive, httptools, dispatch, encode, send) and Trio. The
server runs ``actors/data_plane.py`` in a child process pinned to CPU 0 (``taskset``);
``wrk`` runs pinned to CPU 1 with a generated Lua script that POSTs a fixed body (optionally
``--pipeline N`` requests per write). Server CPU is ``resource.getrusage(RUSAGE_SELF)`` read
inside the server (``GET /rusage``) before and after each run, so µs CPU per request is
exact, not sampled. Figures are indicative on a shared machine. ``--servers engine,bare`` also measures
a bare Trio + httptools keep-alive loop (no limits, timeouts or routing) side by side: the
floor any Trio server pays, so the engine's own overhead is the difference.

    .venv/bin/python bench/http1_echo.py [--duration 10] [--concurrency 1,16,64] [--pipeline 1]

``--serve`` runs only the server (prints its port, stops on SIGTERM): for profiling by hand.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import attrs

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

ANSWER = b'{"model":{"name":"tlob_tiny","version":"1"},"prediction":[0.125,0.5,0.375],"latency_ms":0.01}'
BODY = {"model_name": "tlob_tiny", "features": {"order_imbalance": 0.3, "spread_bps": 1.2, "trade_flow": 0.5,
                                                "return_1s": 0.001, "volume_z": 0.1}}
SERVER_CPU, LOAD_CPU = "0", "1"

LUA = """
wrk.method = "POST"
wrk.body = '%(body)s'
wrk.headers["Content-Type"] = "application/json"
local depth = %(depth)d
if depth > 1 then
  local batch = nil
  init = function(args) batch = string.rep(wrk.format(nil, "/predict"), depth) end
  request = function() return batch end
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("WRKRESULT %%d %%d %%d %%d %%d %%d\\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), e.status, e.connect + e.read + e.write + e.timeout))
end
"""


# ------------------------------------------------------------------ server ----


def serve_forever() -> None:
    """The child: a data plane whose only work per request is the engine's."""
    import trio

    from actors import data_plane
    from actors.web.http1 import Limits, Request, Response

    async def predict(request: Request) -> Response:
        return Response(200, ANSWER)

    async def rusage(request: Request) -> Response:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return Response(200, json.dumps({"cpu_s": usage.ru_utime + usage.ru_stime, "user_s": usage.ru_utime}).encode())

    async def main() -> None:
        shutdown = trio.Event()
        async with trio.open_nursery() as nursery:
            port = await nursery.start(lambda task_status: data_plane.run(
                host="127.0.0.1", port=0, routes={"/predict": {"POST": predict}, "/rusage": {"GET": rusage}},
                limits=Limits(), upgrade_hint="no upgrades here", reuse_port=False, shutdown=shutdown,
                task_status=task_status))
            print(port, flush=True)
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    shutdown.set()
                    break

    trio.run(main)


def serve_bare() -> None:
    """The floor: a bare Trio keep-alive loop feeding httptools and sending a fixed answer.

    No limits, no timeouts, no routing, no error handling: what any Trio + httptools server
    must spend. The engine's overhead is its figure minus this one, measured side by side.
    """
    import httptools
    import trio

    async def predict(request: object) -> bytes:
        return ANSWER

    answer_head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(ANSWER)

    class Protocol:
        def __init__(self) -> None:
            self.done = 0
            self.url = b""

        def on_url(self, url: bytes) -> None:
            self.url = url

        def on_message_complete(self) -> None:
            self.done += 1

    async def connection(stream: trio.SocketStream) -> None:
        protocol = Protocol()
        parser = httptools.HttpRequestParser(protocol)
        # The bare loop's whole error handling: a client that leaves or sends garbage ends its connection.
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, httptools.HttpParserError):
            while data := await stream.receive_some(65536):
                parser.feed_data(data)
                if protocol.done:
                    out = []
                    for _ in range(protocol.done):
                        if protocol.url == b"/rusage":
                            usage = resource.getrusage(resource.RUSAGE_SELF)
                            body = json.dumps({"cpu_s": usage.ru_utime + usage.ru_stime,
                                               "user_s": usage.ru_utime}).encode()
                            out.append(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                                       b"content-length: %d\r\n\r\n%s" % (len(body), body))
                        else:
                            out.append(answer_head + await predict(protocol))
                    protocol.done = 0
                    await stream.send_all(b"".join(out))

    async def main() -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        print(listeners[0].socket.getsockname()[1], flush=True)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, connection, listeners)
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    break

    trio.run(main)


# ------------------------------------------------------------------ driver ----


@attrs.frozen
class Result:
    concurrency: int
    pipeline: int
    requests: int
    seconds: float
    p50_us: int
    p99_us: int
    bad: int
    cpu_s: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def cpu_us_per_request(self) -> float:
        return self.cpu_s / self.requests * 1e6

    @property
    def cpu_share(self) -> float:
        return self.cpu_s / self.seconds * 100


def server_cpu(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/rusage", timeout=5) as answer:
        return float(json.loads(answer.read())["cpu_s"])


def check(port: int) -> None:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/predict", data=json.dumps(BODY).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as answer:
        if answer.status != 200 or answer.read() != ANSWER:
            raise SystemExit("the server did not answer the fixed body")


def wrk(port: int, script: Path, concurrency: int, duration: float) -> tuple[int, int, int, int, int, int]:
    argv = ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(duration))}s", "--latency", "-s", str(script),
            f"http://127.0.0.1:{port}/predict"]
    if shutil.which("taskset"):
        argv = ["taskset", "-c", LOAD_CPU, *argv]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
    match = re.search(r"^WRKRESULT (.*)$", done.stdout, re.MULTILINE)
    if done.returncode != 0 or match is None:
        raise SystemExit(f"wrk failed ({done.returncode}): {done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    requests, duration_us, p50, p99, status_errors, socket_errors = (int(x) for x in match.group(1).split())
    return requests, duration_us, p50, p99, status_errors, socket_errors


def measure(port: int, script: Path, concurrency: int, pipeline: int, duration: float) -> Result:
    before = server_cpu(port)
    requests, duration_us, p50, p99, status_errors, socket_errors = wrk(port, script, concurrency, duration)
    after = server_cpu(port)
    return Result(concurrency, pipeline, requests, duration_us / 1e6, p50, p99, status_errors + socket_errors,
                  after - before)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--serve", action="store_true", help="run only the server (prints its port)")
    parser.add_argument("--serve-bare", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--servers", default="engine,bare",
                        help="engine (actors/data_plane.py) and/or bare (a minimal Trio+httptools loop, the floor)")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--pipeline", type=int, default=1, help="requests per wrk write (HTTP pipelining)")
    args = parser.parse_args(argv)
    if args.serve:
        serve_forever()
        return 0
    if args.serve_bare:
        serve_bare()
        return 0
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    servers = [name.strip() for name in args.servers.split(",") if name.strip()]
    if not servers or set(servers) - {"engine", "bare"}:
        raise SystemExit("--servers takes engine and/or bare")
    results: list[tuple[str, Result]] = []
    codes: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as workdir:
        script = Path(workdir) / "predict.lua"
        script.write_text(LUA % {"body": json.dumps(BODY, separators=(",", ":")), "depth": args.pipeline})
        for concurrency in (int(c) for c in args.concurrency.split(",")):
            for name in servers:  # alternate servers inside each level: drift on a shared machine hits both
                result, codes[name] = run_server(name, script, concurrency, args)
                results.append((name, result))
    print(f"data-plane engine, fixed JSON answer ({len(ANSWER)} B), server on CPU {SERVER_CPU}, wrk on CPU "
          f"{LOAD_CPU}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs (shared: "
          "indicative)")
    print(f"{'server':>6} {'conns':>5} {'pipe':>4} {'req/s':>10} {'p50 µs':>8} {'p99 µs':>8} {'CPU %':>6} "
          f"{'µs CPU/req':>10} {'errors':>6}")
    for name, r in results:
        print(f"{name:>6} {r.concurrency:>5} {r.pipeline:>4} {r.rps:>10.0f} {r.p50_us:>8} {r.p99_us:>8} "
              f"{r.cpu_share:>6.0f} {r.cpu_us_per_request:>10.1f} {r.bad:>6}")
    print("server exit codes after SIGTERM: " + ", ".join(f"{name} {code}" for name, code in codes.items()))
    print("reproduce: " + shlex.join([".venv/bin/python", "bench/http1_echo.py", f"--duration={args.duration:g}",
                                      f"--concurrency={args.concurrency}", f"--pipeline={args.pipeline}",
                                      f"--servers={args.servers}"]))
    return 0 if not any(codes.values()) and not any(r.bad for _, r in results) else 1


def run_server(name: str, script: Path, concurrency: int, args: argparse.Namespace) -> tuple[Result, int]:
    """Start one server afresh (pinned), check it, warm it, measure one level, stop it with SIGTERM."""
    command = [sys.executable, str(Path(__file__).resolve()), "--serve" if name == "engine" else "--serve-bare"]
    if shutil.which("taskset"):
        command = ["taskset", "-c", SERVER_CPU, *command]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        check(port)
        if args.warmup > 0:
            wrk(port, script, concurrency, args.warmup)
        result = measure(port, script, concurrency, args.pipeline, args.duration)
    finally:
        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=30)
    return result, code


if __name__ == "__main__":
    sys.exit(main())
