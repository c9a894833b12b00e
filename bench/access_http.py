"""What the access layer costs per request over HTTP: the same /predict with and without an access file.

Why: bench/access_check.py times the check itself in-process; this times what a client sees,
so the ASGI layer around the app (header scan, key check, rate limit, budget, usage counting,
the extra response headers) is included. Two servers are started from the shipped rules
(``conf/model_router_rules.yml``) with the demo models: one as is (no access file: the layer
only adds its headers), one with an ``access`` section naming a file with one workspace
(allow-list, rate limit and daily budget large enough never to refuse) and one predict key.
Each is pinned to CPU 0 and loaded by ``wrk`` on CPU 1 with the same body by ``model_name``
(plus ``Authorization: Bearer`` for the second); the runs alternate for ``--rounds`` rounds.
The figure of interest is the difference in mean latency at concurrency 1, and the
throughput ratio at ``--concurrency``.

Run from the repo root (after ``make models``):  .venv/bin/python bench/access_http.py [--duration 5]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from actors.storage.access_file import keys_main  # noqa: E402

PY = REPO / ".venv" / "bin" / "python"
FEATURES = {"order_imbalance": 0.3, "spread_bps": 1.2, "trade_flow": 0.5, "return_1s": 0.001, "volume_z": 0.1}
BODY = json.dumps({"model_name": "tlob_tiny", "features": FEATURES})
ACCESS = """workspaces:
  bench:
    models: ["tlob_*", "patchtst_small"]
    rate_limit: {per_second: 1000000000, burst: 1000000000}
    daily_predictions: 1000000000000
keys:
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_config(folder: Path, with_access: bool) -> tuple[Path, str | None]:
    text = (REPO / "conf" / "model_router_rules.yml").read_text()
    config = folder / ("with_access.yml" if with_access else "without_access.yml")
    token = None
    if with_access:
        access = folder / "access.yml"
        access.write_text(ACCESS)
        out = io.StringIO()
        assert keys_main(["create", "--file", str(access), "--id", "bench", "--role", "predict",
                          "--workspace", "bench"], out, io.StringIO()) == 0
        token = out.getvalue().strip()
        text = text.rstrip() + "\n  access:\n    file: access.yml\n"
    config.write_text(text)
    return config, token


def start(config: Path, port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        ["taskset", "-c", "0", str(PY), str(REPO / "app.py"), "--config", str(config), "--models",
         str(REPO / "models"), "--port", str(port), "--state-file", str(config.with_suffix(".state.json"))],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=1) as answer:
                if answer.status == 200:
                    return process
        except OSError:
            time.sleep(0.1)  # a bench waiting for a child process to listen, not a test
    process.kill()
    raise RuntimeError("server did not become ready")


def wrk(port: int, token: str | None, concurrency: int, duration: float, folder: Path) -> tuple[float, float]:
    """(requests/s, mean latency µs) of one wrk run; any non-200 answer aborts the bench."""
    headers = '["Content-Type"] = "application/json"'
    if token is not None:
        headers += f', ["Authorization"] = "Bearer {token}"'
    script = folder / "body.lua"
    script.write_text(f'wrk.method = "POST"\nwrk.body = [[{BODY}]]\nwrk.headers = {{{headers}}}\n'
                      'errors = 0\nfunction response(status) if status ~= 200 then errors = errors + 1 end end\n'
                      'function done() io.write("bad:" .. errors .. "\\n") end\n')
    seconds = max(1, round(duration))
    out = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", "--latency",
                          "-s", str(script), f"http://127.0.0.1:{port}/predict"],
                         capture_output=True, text=True, check=True).stdout
    bad = int(re.search(r"bad:(\d+)", out).group(1))  # type: ignore[union-attr]
    if bad:
        raise RuntimeError(f"{bad} non-200 answers:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    value, unit = re.search(r"Latency\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
    mean_us = float(value) * {"us": 1, "ms": 1000, "s": 1_000_000}[unit]
    return rps, mean_us


def asgi_cost(iterations: int) -> dict[str, float]:
    """µs per request of the ASGI access layer alone, in-process, around an app that answers at once:
    without a policy (headers only) and with one (key check, rate limit, usage counting)."""
    import trio

    from actors.core.access import parse_access, token_sha256
    from actors.core.usage import UsageBook
    from actors.serving.metrics import Metrics
    from actors.web.access import AccessGate, AccessLayer
    from actors.web.audit import Auditor

    token = "bench-token"
    policy = parse_access(ACCESS + f'  - {{id: k, sha256: "{token_sha256(token)}", roles: [predict], '
                                   'workspace: bench}\n')

    async def inner(scope, receive, send):  # type: ignore[no-untyped-def]
        await send({"type": "http.response.start", "status": 200, "headers": []})

    async def send(message):  # type: ignore[no-untyped-def]
        return None

    async def receive():  # type: ignore[no-untyped-def]
        return {}

    async def run(with_policy: bool | None) -> float:
        gate = AccessGate(Metrics(), UsageBook(0), Auditor())
        gate.apply(policy if with_policy else None, ())
        layer = inner if with_policy is None else AccessLayer(inner, gate)
        scope = {"type": "http", "method": "POST", "path": "/predict", "client": ("127.0.0.1", 1),
                 "headers": [(b"host", b"x"), (b"content-type", b"application/json"), (b"content-length", b"120"),
                             (b"authorization", f"Bearer {token}".encode())]}
        for _ in range(1000):
            await layer(scope, receive, send)
        started = time.perf_counter()
        for _ in range(iterations):
            await layer(scope, receive, send)
        return (time.perf_counter() - started) / iterations * 1e6

    async def both() -> dict[str, float]:
        bare = await run(None)
        return {"no layer (the bare inner app)": bare, "no access file": await run(False),
                "access file": await run(True)}

    return trio.run(both)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--iterations", type=int, default=100_000)
    args = parser.parse_args()
    for name, us in asgi_cost(args.iterations).items():
        print(f"ASGI access layer in-process, {name}: {us:.2f} µs per request")
    results: dict[tuple[str, int], list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        servers = {}
        for name, with_access in (("without access file", False), ("with access file", True)):
            config, token = make_config(folder, with_access)
            port = free_port()
            servers[name] = (start(config, port), port, token)
        try:
            for _ in range(args.rounds):
                for name, (_, port, token) in servers.items():
                    wrk(port, token, args.concurrency, 1.0, folder)  # warm-up
                    for c in (1, args.concurrency):
                        results.setdefault((name, c), []).append(wrk(port, token, c, args.duration, folder))
        finally:
            for process, _, _ in servers.values():
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=15)
    print(f"| server | c | req/s (best of {args.rounds}) | mean latency µs (best) |")
    print("| --- | --- | --- | --- |")
    best = {}
    for (name, c), runs in results.items():
        rps = max(r for r, _ in runs)
        lat = min(lat for _, lat in runs)
        best[(name, c)] = (rps, lat)
        print(f"| {name} | {c} | {rps:,.0f} | {lat:,.0f} |")
    delta = best[("with access file", 1)][1] - best[("without access file", 1)][1]
    print(f"\nc=1 mean latency difference: {delta:+.0f} µs per request; throughput at c={args.concurrency}: "
          f"{best[('with access file', args.concurrency)][0] / best[('without access file', args.concurrency)][0]:.1%}"
          " of the run without an access file")
    os.sys.stdout.flush()


if __name__ == "__main__":
    main()
