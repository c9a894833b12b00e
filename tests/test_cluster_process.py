"""Three replicas, three processes, one Redis: they behave as one router.

Each replica is ``python app.py`` on its own port with its own state file, sharing the
model repository and a private redis-server. Progress is read from the replicas' logs and
HTTP answers (event-driven or bounded polls of real endpoints), never from fixed sleeps.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio

from actors.build.demo_models import build_random_model
from tests.conftest import FAST_FEATURES, RedisServer, fast_features, free_port, render_config
from tests.test_app_process import LogReader

ROOT = Path(__file__).resolve().parent.parent
KEY = "cluster-test-key"
ADMIN = {"X-Admin-Key": KEY}


@attrs.define
class Replica:
    index: int
    folder: Path
    redis_url: str
    port: int = attrs.field(factory=free_port)
    process: subprocess.Popen[str] | None = None
    log: LogReader | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def replica_id(self) -> str:
        return f"r{self.index}"

    async def start(self, *, wait: bool = True) -> None:
        env = {**os.environ, "MODEL_ROUTER_ADMIN_KEY": KEY, "MODEL_ROUTER_READINESS_TIMEOUT_S": "8"}
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "app.py"), "--config", str(self.folder / "rules.yml"), "--host",
             "127.0.0.1", "--port", str(self.port), "--state-file", str(self.folder / "state.json"),
             "--rules-source", "redis", "--replica-id", self.replica_id, "--batch-max-size", "1"],
            cwd=ROOT, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        self.log = LogReader(self.process)
        if wait:
            await self.log.wait_for(" serving ", timeout=30)
            trio.lowlevel.spawn_system_task(self._drain)

    async def _drain(self) -> None:
        """Keep reading the log so the child never blocks on a full pipe."""
        assert self.log is not None
        stream = self.log.stream
        while True:
            try:
                line = await trio.to_thread.run_sync(stream.readline, abandon_on_cancel=True)
            except ValueError:  # closed
                return
            if not line:
                return
            self.log.lines.append(line)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)


@asynccontextmanager
async def cluster(tmp_path: Path, repo: Path, redis: RedisServer, count: int = 3) -> AsyncIterator[list[Replica]]:
    replicas = []
    for i in range(count):
        folder = tmp_path / f"replica{i}"
        folder.mkdir()
        (folder / "rules.yml").write_text(render_config(repo, redis_url=redis.url))
        replicas.append(Replica(i, folder, redis.url))
    try:
        async with trio.open_nursery() as nursery:
            for replica in replicas:
                nursery.start_soon(replica.start)
        async with httpx.AsyncClient(timeout=10) as client:
            for replica in replicas:  # every replica serves fast@1 before fast@2 appears
                r = await client.post(f"{replica.url}/predict",
                                      json={"model_name": "fast", "features": fast_features()})
                assert r.json()["model"]["version"] == "1"
        build_random_model(repo, "fast", "2", FAST_FEATURES, seed=11)
        yield replicas
    finally:
        for replica in replicas:
            if replica.process is not None and replica.process.poll() is None:
                replica.signal(signal.SIGCONT)
                replica.signal(signal.SIGTERM)
        for replica in replicas:
            if replica.process is not None:
                try:
                    await trio.to_thread.run_sync(replica.process.wait, 15)
                except subprocess.TimeoutExpired:
                    replica.kill()


async def until(probe: Any, timeout: float, what: str, interval: float = 0.02) -> Any:
    """Poll a real endpoint until ``probe()`` returns a truthy value (bounded)."""
    deadline = trio.current_time() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if trio.current_time() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await trio.sleep(interval)


async def op_state(client: httpx.AsyncClient, replica: Replica, operation_id: str) -> dict | None:
    r = await client.get(f"{replica.url}/switches/{operation_id}")
    return r.json() if r.status_code == 200 else None


async def serving(client: httpx.AsyncClient, replica: Replica) -> dict:
    body = (await client.get(f"{replica.url}/cluster")).json()
    me = next(m for m in body["replicas"] if m["id"] == replica.replica_id)
    return me["active_versions"].get("fast", {})


async def test_rules_through_the_api_reach_all_three_and_canary_assignment_agrees(
        tmp_path: Path, repo: Path, redis_server: RedisServer) -> None:
    async with cluster(tmp_path, repo, redis_server) as replicas, httpx.AsyncClient(timeout=10) as client:
        a = replicas[0]
        members = await until(lambda: _members(client, a, 3), 5, "three replicas in /cluster")
        assert {m["id"] for m in members} == {"r0", "r1", "r2"}
        version = (await client.get(f"{a.url}/rules")).json()["version"]
        started = time.perf_counter()
        r = await client.patch(f"{a.url}/rules/items/0", headers={**ADMIN, "If-Match": version},
                               json={"model": "backup"})
        assert r.status_code == 200, r.text
        new_version = r.json()["version"]
        for replica in replicas:
            await until(lambda rep=replica: _rules_version_is(client, rep, new_version), 2, "rules applied")
        assert time.perf_counter() - started < 2.0
        # A canary at 50 %: every replica sends each symbol to the same version.
        r = await client.post(f"{a.url}/models/fast/switch", headers=ADMIN,
                              json={"version": "2", "strategy": "canary", "canary_weight": 50, "interval_s": 60})
        assert r.status_code == 202, r.text
        op_id = r.json()["operation_id"]
        for replica in replicas:
            await until(lambda rep=replica: _is_running(client, rep, op_id), 10, "canary running")
        symbols = [f"SYM{i}" for i in range(40)]
        seen: dict[str, set[str]] = {s: set() for s in symbols}
        for replica in replicas:
            for symbol in symbols:
                p = await client.post(f"{replica.url}/predict", json={"model_name": "fast", "symbol": symbol,
                                                                       "features": fast_features()})
                assert p.status_code == 200, p.text
                seen[symbol].add(p.json()["model"]["version"])
        assert all(len(versions) == 1 for versions in seen.values()), seen
        assert {v for versions in seen.values() for v in versions} == {"1", "2"}


async def _members(client: httpx.AsyncClient, replica: Replica, count: int) -> list | None:
    body = (await client.get(f"{replica.url}/cluster")).json()
    return body["replicas"] if body["count"] == count else None


async def _rules_version_is(client: httpx.AsyncClient, replica: Replica, version: str) -> bool:
    return (await client.get(f"{replica.url}/rules")).json()["version"] == version


async def _is_running(client: httpx.AsyncClient, replica: Replica, op_id: str) -> bool:
    state = await op_state(client, replica, op_id)
    return state is not None and state["state"] == "running"


async def test_a_stopped_replica_applies_a_switch_and_a_rollback_within_1s_of_sigcont(
        tmp_path: Path, repo: Path, redis_server: RedisServer) -> None:
    async with cluster(tmp_path, repo, redis_server) as replicas, httpx.AsyncClient(timeout=10) as client:
        a, stopped = replicas[0], replicas[2]
        stopped.signal(signal.SIGSTOP)
        r = await client.post(f"{a.url}/models/fast/switch", headers=ADMIN, json={"version": "2"})
        assert r.status_code == 202, r.text
        switch_id = r.json()["operation_id"]
        # The stopped replica drops out of the cluster; the readiness gate then lets the switch go.
        await until(lambda: _completed(client, a, switch_id), 12, "switch completed without the stopped replica")
        r = await client.post(f"{a.url}/models/fast/rollback", headers=ADMIN)
        assert r.status_code == 202, r.text
        rollback_id = r.json()["operation_id"]
        await until(lambda: _completed(client, a, rollback_id), 5, "rollback completed")
        stopped.signal(signal.SIGCONT)
        resumed = time.perf_counter()
        await until(lambda: _completed(client, stopped, rollback_id), 5, "stopped replica caught up")
        assert time.perf_counter() - resumed < 1.0
        assert (await op_state(client, stopped, switch_id))["state"] == "completed"
        assert (await serving(client, stopped))["stable"] == "1"


async def _completed(client: httpx.AsyncClient, replica: Replica, op_id: str) -> bool:
    state = await op_state(client, replica, op_id)
    return state is not None and state["state"] == "completed"


async def test_a_killed_replica_converges_on_start(tmp_path: Path, repo: Path, redis_server: RedisServer) -> None:
    async with cluster(tmp_path, repo, redis_server) as replicas, httpx.AsyncClient(timeout=10) as client:
        a, victim = replicas[0], replicas[1]
        victim.kill()
        await until(lambda: _members(client, a, 2), 6, "the killed replica dropped out")
        r = await client.post(f"{a.url}/models/fast/switch", headers=ADMIN, json={"version": "2"})
        switch_id = r.json()["operation_id"]
        await until(lambda: _completed(client, a, switch_id), 10, "switch completed")
        version = (await client.get(f"{a.url}/rules")).json()["version"]
        r = await client.delete(f"{a.url}/rules/items/1", headers={**ADMIN, "If-Match": version})
        assert r.status_code == 200, r.text
        await victim.start()  # ready only once it replayed what it missed
        state = await op_state(client, victim, switch_id)
        assert state is not None and state["state"] == "completed"
        assert (await client.get(f"{victim.url}/rules")).json()["version"] == r.json()["version"]


async def test_the_leader_killed_during_a_gradual_switch(tmp_path: Path, repo: Path,
                                                        redis_server: RedisServer) -> None:
    async with cluster(tmp_path, repo, redis_server) as replicas, httpx.AsyncClient(timeout=10) as client:
        a = replicas[0]
        r = await client.post(f"{a.url}/models/fast/switch", headers=ADMIN, json={
            "version": "2", "strategy": "gradual", "steps": [10, 30, 60, 100], "interval_s": 1})
        switch_id = r.json()["operation_id"]
        leader_id = await until(lambda: _leader(client, replicas, switch_id), 10, "a leader")
        leader = next(rep for rep in replicas if rep.replica_id == leader_id)
        survivors = [rep for rep in replicas if rep is not leader]
        failures: list[str] = []
        sent = 0
        done = trio.Event()

        async def load() -> None:
            nonlocal sent
            i = 0
            while not done.is_set():
                target = survivors[i % len(survivors)]
                i += 1
                p = await client.post(f"{target.url}/predict", json={"model_name": "fast", "symbol": f"S{i % 50}",
                                                                     "features": fast_features()})
                sent += 1
                if p.status_code != 200:
                    failures.append(p.text)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(load)
            await until(lambda: _weight_at_least(client, survivors[0], switch_id, 3000), 10, "second step")
            leader.kill()
            for survivor in survivors:
                await until(lambda s=survivor: _completed(client, s, switch_id), 15, "switch completed")
            done.set()
        assert failures == [] and sent > 0
        for survivor in survivors:
            state = await op_state(client, survivor, switch_id)
            weights = [e.get("weight_bp") for e in state["log"] if e.get("event") == "step"]
            assert weights == sorted(set(weights)), f"a step was repeated: {state['log']}"
            assert state["weight_bp"] == 10000


async def _leader(client: httpx.AsyncClient, replicas: list[Replica], op_id: str) -> str | None:
    body = (await client.get(f"{replicas[0].url}/cluster")).json()
    for member in body["replicas"]:
        if op_id in member.get("rollouts", {}).get("leading", {}):
            return str(member["id"])
    return None


async def _weight_at_least(client: httpx.AsyncClient, replica: Replica, op_id: str, weight: int) -> bool:
    state = await op_state(client, replica, op_id)
    return state is not None and state["weight_bp"] >= weight


async def test_redis_restarted_mid_rollout_loses_nothing(tmp_path: Path, repo: Path,
                                                         redis_server: RedisServer) -> None:
    async with cluster(tmp_path, repo, redis_server) as replicas, httpx.AsyncClient(timeout=10) as client:
        a = replicas[0]
        r = await client.post(f"{a.url}/models/fast/switch", headers=ADMIN, json={
            "version": "2", "strategy": "gradual", "steps": [10, 50, 100], "interval_s": 1})
        switch_id = r.json()["operation_id"]
        for replica in replicas:
            await until(lambda rep=replica: _is_running(client, rep, switch_id), 10, "gradual running")
        build_random_model(repo, "backup", "2", FAST_FEATURES, seed=12)
        rules_before = (await client.get(f"{a.url}/rules")).json()
        await trio.to_thread.run_sync(redis_server.stop)
        # While Redis is down an operator takes backup@2 out of service through one replica.
        r = await client.delete(f"{replicas[1].url}/models/backup/versions/2", headers=ADMIN)
        assert r.status_code == 200, r.text
        await trio.to_thread.run_sync(redis_server.start)
        for replica in replicas:
            await until(lambda rep=replica: _completed(client, rep, switch_id), 20, "switch completed after restart")
            assert (await serving(client, replica))["stable"] == "2"
            await until(lambda rep=replica: _deregistered(client, rep, "backup", "2"), 10, "deregistration arrived")
            # Redis (no persistence here) lost the rules: the document in force was put back, version higher.
            rules = await until(lambda rep=replica: _rules_newer_than(client, rep, rules_before["version"]), 5,
                                "rules restored")
            assert rules["config_hash"] == rules_before["config_hash"]


async def _rules_newer_than(client: httpx.AsyncClient, replica: Replica, version: str) -> dict | None:
    body = (await client.get(f"{replica.url}/rules")).json()
    return body if int(body["version"]) > int(version) else None


async def _deregistered(client: httpx.AsyncClient, replica: Replica, name: str, version: str) -> bool:
    body = (await client.get(f"{replica.url}/models/{name}/versions")).json()
    return any(v["version"] == version and v["status"] == "deregistered" for v in body["versions"])
