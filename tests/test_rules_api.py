"""The rules API end to end: versioned writes to the file or to Redis, validated like a reload."""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest
import trio
import yaml

from actors.build.demo_models import build_random_model
from tests.conftest import (
    ADMIN_KEY,
    FAST_FEATURES,
    Harness,
    RedisServer,
    fast_features,
    render_config,
    running_app,
    wait_ready,
)
from tests.test_switching import write_broken_version

ADMIN = {"X-Admin-Key": ADMIN_KEY}
JSON = {**ADMIN, "Content-Type": "application/json"}


def document(text: str) -> dict:
    return yaml.safe_load(text)


async def test_put_with_if_match_writes_the_file_and_applies_it(config_path: Path) -> None:
    async with running_app(config_path) as h:
        await wait_ready(h)
        got = await h.client.get("/rules")
        first = got.json()
        assert first["source"] == "file" and first["version"]
        assert got.headers["ETag"] == f'"{first["version"]}"'

        doc = document(config_path.read_text())
        doc["model_router"]["rules"][0]["model"] = "backup"
        missing = await h.client.put("/rules", headers=JSON, content=json.dumps(doc))
        assert missing.status_code == 428 and missing.json()["error"]["code"] == "version_required"
        ok = await h.client.put("/rules", headers={**JSON, "If-Match": first["version"]}, content=json.dumps(doc))
        assert ok.status_code == 200, ok.text
        assert ok.json()["status"] == "applied"
        assert document(config_path.read_text())["model_router"]["rules"][0]["model"] == "backup"
        after = (await h.client.get("/rules")).json()
        assert after["version"] == ok.json()["version"] != first["version"]
        assert after["rules"][0]["model"] == "backup"
        stale = await h.client.put("/rules", headers={**JSON, "If-Match": first["version"]},
                                   content=json.dumps(doc))
        assert stale.status_code == 412
        assert stale.json()["error"]["details"]["current"] == after["version"]


async def test_an_invalid_document_is_refused_with_its_problems_and_changes_nothing(config_path: Path) -> None:
    async with running_app(config_path) as h:
        await wait_ready(h)
        before_text = config_path.read_text()
        version = (await h.client.get("/rules")).json()["version"]
        doc = document(before_text)
        doc["model_router"]["rules"][0]["model"] = "no_such_model"
        r = await h.client.put("/rules", headers={**JSON, "If-Match": version}, content=json.dumps(doc))
        assert r.status_code == 422
        problems = r.json()["error"]["details"]["problems"]
        assert any("no_such_model" in p["message"] for p in problems)
        assert config_path.read_text() == before_text
        bad_patch = await h.client.patch("/rules/items/9", headers=JSON, json={"model": "fast"})
        assert bad_patch.status_code == 422 and bad_patch.json()["error"]["code"] == "invalid_edit"
        deep = "1"
        for _ in range(400):  # within the JSON reader's limits, far past a rule's (found by the fuzzer: a 500)
            deep = '{"x":' + deep + "}"
        nested = await h.client.post("/rules/items", headers=JSON,
                                     content='{"match": {"asset_class": "crypto"}, "model": "fast", "n": ' + deep + "}")
        assert nested.status_code == 422 and nested.json()["error"]["code"] == "invalid_edit", nested.text
        unguarded = await h.client.delete("/rules/items/0")
        assert unguarded.status_code == 401
        assert config_path.read_text() == before_text


async def test_item_edits_validate_and_export(config_path: Path) -> None:
    async with running_app(config_path) as h:
        await wait_ready(h)
        added = await h.client.post("/rules/items", headers=JSON, json={
            "match": {"asset_class": "fx", "horizon_ms": "<1000"}, "model": "fast", "priority": 5})
        assert added.status_code == 201, added.text
        rules = (await h.client.get("/rules")).json()["rules"]
        assert [r["match"]["asset_class"] for r in rules] == ["crypto", "crypto", "fx"]
        patched = await h.client.patch("/rules/items/2", headers=JSON, json={"match": {"horizon_ms": "<2000"}})
        assert patched.status_code == 200, patched.text
        assert (await h.client.get("/rules")).json()["rules"][2]["match"]["horizon_ms"] == "<2000"
        probe = await h.client.post("/route/test", json={"asset_class": "fx", "horizon_ms": 1500})
        assert probe.json()["model"] == "fast"
        deleted = await h.client.delete("/rules/items/2", headers=ADMIN)
        assert deleted.status_code == 200
        assert len((await h.client.get("/rules")).json()["rules"]) == 2
        export = await h.client.get("/rules/export")
        assert export.status_code == 200 and export.headers["ETag"].strip('"') == deleted.json()["version"]
        doc = document(export.text)
        doc["model_router"]["rules"][1]["model"] = "backup"
        dry = await h.client.post("/rules/validate", content=yaml.safe_dump(doc),
                                  headers={"Content-Type": "application/yaml"})
        body = dry.json()
        assert body["valid"] is True
        assert {(c["asset_class"], c["horizon_bucket"]) for c in body["changes"]} == {
            ("crypto", "[60000,60000]"), ("crypto", "(60000,+inf)")}
        assert all(c["to"]["model"] == "backup" for c in body["changes"])
        assert (await h.client.get("/rules")).json()["rules"][1]["model"] == "windowed"  # dry run only
        doc["model_router"]["rules"][1]["model"] = "nope"
        invalid = (await h.client.post("/rules/validate", json=doc)).json()
        assert invalid["valid"] is False and invalid["errors"]
        imported = await h.client.post("/rules/import", headers=JSON, content=json.dumps(document(export.text)))
        assert imported.status_code == 200


@asynccontextmanager
async def replicas(tmp_path: Path, repo: Path, redis: RedisServer, count: int,
                   repos: list[Path] | None = None, switching: str = "") -> AsyncIterator[list[Harness]]:
    async with AsyncExitStack() as stack:
        harnesses = []
        for i in range(count):
            folder = tmp_path / f"replica{i}"
            folder.mkdir()
            config = folder / "rules.yml"
            config.write_text(render_config(repos[i] if repos else repo, redis_url=redis.url, switching=switching))
            harness = await stack.enter_async_context(running_app(
                config, rules_source="redis", state_file=folder / "state.json", replica_id=f"r{i}"))
            await wait_ready(harness)
            harnesses.append(harness)
        yield harnesses


async def test_redis_rules_are_shared_and_compare_and_set(tmp_path: Path, repo: Path,
                                                         redis_server: RedisServer) -> None:
    async with replicas(tmp_path, repo, redis_server, 2) as (a, b):
        va = (await a.client.get("/rules")).json()
        assert va["source"] == "redis" and va["version"] == "1"
        assert (await b.client.get("/rules")).json()["version"] == "1"
        r = await a.client.patch("/rules/items/0", headers={**JSON, "If-Match": "1"}, json={"model": "backup"})
        assert r.status_code == 200, r.text
        assert r.json()["version"] == "2"
        with trio.fail_after(2):
            await b.service.watcher.wait_for_attempt(0)
            while b.service.rules_version() != "2":
                await b.service.watcher.wait_for_attempt(b.service.watcher.attempts)
        assert b.service.router.select("crypto", 100).model == "backup"
        stale = await b.client.delete("/rules/items/0", headers={**ADMIN, "If-Match": "1"})
        assert stale.status_code == 412
        def r1_report(members: dict) -> dict | None:
            return next((m for m in members["replicas"] if m["id"] == "r1"), None)

        members = (await a.client.get("/cluster")).json()
        assert members["shared"] is True
        with trio.fail_after(3):  # the view is at most one heartbeat old
            while (r1 := r1_report(members)) is None or r1["rules"]["version"] != "2":
                seen = a.service.cluster.last_heartbeat
                await a.service.cluster.wait_until(lambda c, s=seen: c.last_heartbeat != s)
                members = (await a.client.get("/cluster")).json()
        assert members["count"] == 2 and r1["ready"] is True
        assert r1["address"] == b.url and "backup@1" in r1["loaded"]



async def test_the_readiness_gate_fails_a_switch_a_replica_cannot_serve(
        tmp_path: Path, repo: Path, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """r1's repository lacks fast@2: /cluster says why, and the switch fails with that reason."""
    monkeypatch.setenv("MODEL_ROUTER_READINESS_TIMEOUT_S", "3")
    repo_r1 = tmp_path / "models-r1"
    shutil.copytree(repo, repo_r1)
    async with replicas(tmp_path, repo, redis_server, 2, repos=[repo, repo_r1]) as (a, b):
        for h in (a, b):
            await h.service.cache.get("fast")  # both serve fast@1
        build_random_model(repo, "fast", "2", FAST_FEATURES, seed=5)  # r0's repository only
        with trio.fail_after(3):  # r0 has seen r1's heartbeat (the gate judges the replicas it knows)
            await a.service.cluster.wait_until(lambda c: {m["id"] for m in c.view()} == {"r0", "r1"})
        r = await a.client.post("/models/fast/switch", headers=ADMIN, json={"version": "2"})
        assert r.status_code == 202, r.text
        op_id = r.json()["operation_id"]
        with trio.fail_after(10):
            while not (gates := a.service.rollouts.gates.get(op_id)):
                await trio.sleep(0.05)  # a bounded poll of the leader's gate (it re-checks every 0.2 s)
        assert gates == {"r1": "its repository has no fast@2"}
        report = next(m for m in (await a.client.get("/cluster")).json()["replicas"] if m["id"] == "r0")
        assert report["rollouts"]["gates"][op_id] == gates
        with trio.fail_after(10):
            await a.service.transitions.wait_until(lambda v: v.state.operations[op_id].is_terminal)
        op = a.service.transitions.view.state.operations[op_id]
        assert op.state == "failed" and "r1: its repository has no fast@2" in (op.reason or "")
        assert a.service.predictor.serving_version("fast") == "1"


async def test_a_canary_failing_on_one_replica_is_rolled_back_on_all(
        tmp_path: Path, repo: Path, redis_server: RedisServer) -> None:
    """Only r1's fast@2 is broken and only r1 gets traffic; the leader r0 pools r1's window and rolls back."""
    repo_r1 = tmp_path / "models-r1"
    shutil.copytree(repo, repo_r1)
    switching = "    breaker_failures: 10000\n    min_requests: 5\n    alert_error_rate: 0.05\n"
    async with replicas(tmp_path, repo, redis_server, 2, repos=[repo, repo_r1], switching=switching) as (a, b):
        for h in (a, b):
            await h.service.cache.get("fast")
        build_random_model(repo, "fast", "2", FAST_FEATURES, seed=5)
        write_broken_version(repo_r1, "fast", "2")
        with trio.fail_after(3):
            await a.service.cluster.wait_until(lambda c: {m["id"] for m in c.view()} == {"r0", "r1"})
        r = await a.client.post("/models/fast/switch", headers=ADMIN, json={
            "version": "2", "strategy": "canary", "canary_weight": 50, "interval_s": 0.5, "healthy_intervals": 100})
        assert r.status_code == 202, r.text
        op_id = r.json()["operation_id"]
        with trio.fail_after(10):
            await b.service.transitions.wait_until(
                lambda v: op_id in v.state.operations and v.state.operations[op_id].state == "running")
        # One replica leads (usually r0, which created the switch); when r0 does, the breach it
        # finds is in r1's window only, so the rollback below came from pooling the windows.
        assert (op_id in a.service.rollouts.held) != (op_id in b.service.rollouts.held)
        with trio.fail_after(15):
            i = 0
            while not a.service.transitions.view.state.operations[op_id].is_terminal:
                i += 1
                await b.predict(model_name="fast", symbol=f"S{i % 40}", features=fast_features(0.9))
        done = a.service.transitions.view.state.operations[op_id]
        assert done.state == "rolled_back" and "health breach" in (done.reason or ""), done.reason
        assert a.service.health.snapshot("fast", "2").errors == 0  # r0 saw no failure itself
        with trio.fail_after(5):
            await b.service.transitions.wait_until(lambda v: v.state.operations[op_id].state == "rolled_back")
        assert b.service.predictor.serving_version("fast") == "1"
