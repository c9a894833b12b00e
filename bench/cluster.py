"""Cluster propagation: a rules change through the API, until all three replicas serve it.

Starts a private redis-server and three replicas (``python app.py``, each on its own
port and state file, ``--rules-source redis``) over one model repository, then makes
``--changes`` rules edits through ``PATCH /rules/items/0`` on replica 0 (alternating the
rule's model) and, for each, measures from sending the request until every replica's
``GET /rules`` reports the new version (polled every 5 ms, concurrently). Reports
p50 / p99 / max of that figure and of the API call alone.

    .venv/bin/python bench/cluster.py [--changes 50]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from processes import free_port, start_redis, wait_ready  # noqa: E402

from actors.build.demo_models import build_random_model  # noqa: E402

KEY = "bench-admin-key"



def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def config_text(repo: Path, redis_url: str) -> str:
    return (
        "model_router:\n"
        "  rules:\n"
        '    - match: {asset_class: "crypto", horizon_ms: "<60000"}\n'
        "      model: fast\n"
        "      priority: 10\n"
        '    - match: {asset_class: "crypto", horizon_ms: ">=60000"}\n'
        "      model: backup\n"
        "      priority: 20\n"
        "  config:\n"
        "    default_model: backup\n"
        f"    redis_url: {json.dumps(redis_url)}\n"
        f"    model_repository: {json.dumps(str(repo))}\n"
    )


def start_replica(folder: Path, index: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "MODEL_ROUTER_ADMIN_KEY": KEY, "LOG_LEVEL": "WARNING"}
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "app.py"), "--config", str(folder / "rules.yml"), "--port", str(port),
         "--state-file", str(folder / "state.json"), "--rules-source", "redis", "--replica-id", f"r{index}"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return process, f"http://127.0.0.1:{port}"


async def until_version(client: httpx.AsyncClient, url: str, version: str) -> float:
    while (await client.get(f"{url}/rules")).json()["version"] != version:
        await trio.sleep(0.005)
    return time.perf_counter()


async def measure(urls: list[str], changes: int) -> tuple[list[float], list[float], list[float]]:
    propagation: list[float] = []
    api: list[float] = []
    async with httpx.AsyncClient(timeout=10) as client:
        for url in urls:
            await wait_ready(client, url)
        version = (await client.get(f"{urls[0]}/rules")).json()["version"]
        for i in range(changes):
            started = time.perf_counter()
            r = await client.patch(f"{urls[0]}/rules/items/0", headers={"X-Admin-Key": KEY, "If-Match": version},
                                   json={"model": "backup" if i % 2 == 0 else "fast"})
            r.raise_for_status()
            api.append((time.perf_counter() - started) * 1000)
            version = r.json()["version"]
            done: list[float] = []

            async def watch(url: str, v: str = version, out: list[float] = done) -> None:
                out.append(await until_version(client, url, v))

            with trio.fail_after(10):
                async with trio.open_nursery() as nursery:
                    for url in urls:
                        nursery.start_soon(watch, url)
            propagation.append((max(done) - started) * 1000)
        events = (await client.get(f"{urls[1]}/reload/events", params={"limit": str(changes)})).json()["events"]
        work = [e["latency_ms"] for e in events if e["trigger"] == "control" and e["success"]]
    return propagation, api, work


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=50)
    args = parser.parse_args()
    if shutil.which("redis-server") is None:
        print("redis-server is not installed", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    repo = work / "models"
    build_random_model(repo, "fast", "1", ("a", "b", "c"), seed=1)
    build_random_model(repo, "backup", "1", ("a", "b", "c"), seed=3)
    redis_process, redis_url = start_redis(work)
    replicas: list[subprocess.Popen[bytes]] = []
    urls: list[str] = []
    try:
        for index in range(3):
            folder = work / f"replica{index}"
            folder.mkdir()
            (folder / "rules.yml").write_text(config_text(repo, redis_url))
            process, url = start_replica(folder, index)
            replicas.append(process)
            urls.append(url)
        propagation, api, work = trio.run(measure, urls, args.changes)
    finally:
        for process in replicas:
            process.terminate()
        for process in replicas:
            process.wait(timeout=20)
        redis_process.terminate()
        redis_process.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)
    print(f"{args.changes} rules changes through PATCH /rules/items/0 on replica 0, 3 replicas, one Redis")
    for name, values in (("API call (validate + CAS + local apply)", api),
                         ("reload work on replica 1 (read from Redis, validate, compile, swap)", work),
                         ("request sent -> all three serve it", propagation)):
        print(f"  {name}: p50 {statistics.median(values):.1f} ms, p99 {percentile(values, 0.99):.1f} ms, "
              f"max {max(values):.1f} ms")
    return 0 if percentile(propagation, 0.99) < 200 else 1


if __name__ == "__main__":
    sys.exit(main())
