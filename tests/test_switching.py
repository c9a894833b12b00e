"""End-to-end switching: real server, real models, real Redis, a real WebSocket client.

Every scenario runs under a steady client load (trio tasks sending predictions for a set
of symbols) and asserts that no request failed while versions changed underneath.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import trio
from trio_websocket import WebSocketConnection, open_websocket_url

from actors.build.demo_models import build_random_model
from actors.build.tflite_writer import build_mlp_tflite
from actors.storage.model_repo import ModelMetadata, write_model_version
from tests.conftest import (
    ADMIN_KEY,
    FAST_FEATURES,
    Harness,
    RedisServer,
    fast_features,
    render_config,
    running_app,
)

SYMBOLS = [f"SYM{i:02d}" for i in range(16)]
SEED_SWITCH_FIELDS = {"timestamp", "symbol", "old_model", "new_model", "latency_ms"}


def write_broken_version(repo: Path, name: str, version: str) -> None:
    """Loads and warms up fine (zero input is finite) but gives inf/NaN for positive inputs."""
    huge = np.float32(3e38)
    w1 = np.full((len(FAST_FEATURES), 4), huge, dtype=np.float32)
    w2 = np.full((4, 3), huge, dtype=np.float32)
    content = build_mlp_tflite(w1, np.zeros(4, np.float32), w2, np.zeros(3, np.float32))
    write_model_version(repo, name, version, content,
                        ModelMetadata(features=FAST_FEATURES, labels=("SELL", "HOLD", "BUY")))


@attrs.define
class Load:
    """Closed-loop clients sending routed predictions for SYMBOLS until stopped."""

    harness: Harness
    statuses: Counter[int] = attrs.field(factory=Counter)
    versions: Counter[str] = attrs.field(factory=Counter)
    failures: list[str] = attrs.field(factory=list)
    warmed: list[trio.Event] = attrs.field(factory=lambda: [trio.Event(), trio.Event()])

    async def client(self, offset: int, stop: trio.Event) -> None:
        while not stop.is_set():
            for symbol in SYMBOLS[offset::2]:
                r = await self.harness.predict(asset_class="crypto", horizon_ms=1000, symbol=symbol,
                                               features=fast_features(0.5))
                self.statuses[r.status_code] += 1
                if r.status_code != 200:
                    self.failures.append(r.text)
                else:
                    self.versions[f"{r.json()['model']['name']}@{r.json()['model']['version']}"] += 1
            self.warmed[offset].set()


@asynccontextmanager
async def steady_load(harness: Harness) -> AsyncIterator[Load]:
    load = Load(harness)
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(load.client, 0, stop)
        nursery.start_soon(load.client, 1, stop)
        for event in load.warmed:
            await event.wait()  # every symbol has been served at least once
        yield load
        stop.set()


@asynccontextmanager
async def switch_feed(harness: Harness, query: str = "") -> AsyncIterator[WebSocketConnection]:
    url = harness.url.replace("http://", "ws://") + "/ws/switches" + query
    async with open_websocket_url(url) as ws:
        hello = json.loads(await ws.get_message())
        assert hello["type"] == "subscribed"
        yield ws


async def next_events(ws: WebSocketConnection, count: int, timeout: float = 10) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    with trio.fail_after(timeout):
        while len(events) < count:
            message = json.loads(await ws.get_message())
            if message["type"] == "switch":
                events.append(message)
    return events


async def switch(h: Harness, model: str, **body: Any) -> str:
    r = await h.admin_post(f"/models/{model}/switch", json=body)
    assert r.status_code == 202, r.text
    return r.json()["operation_id"]


async def finished(h: Harness, operation_id: str, timeout: float = 15) -> dict[str, Any]:
    with trio.fail_after(timeout):
        await h.service.transitions.wait_until(
            lambda view: view.state.operations[operation_id].is_terminal)
    return (await h.client.get(f"/switches/{operation_id}")).json()


async def test_immediate_then_gradual_switch_under_load(config_path: Path, repo: Path,
                                                        redis_server: RedisServer) -> None:
    build_random_model(repo, "fast", "2", FAST_FEATURES, seed=21)
    config_path.write_text(render_config(repo, redis_url=redis_server.url))
    async with running_app(config_path) as h, steady_load(h) as load, switch_feed(h, "?model=fast") as ws:
        assert h.service.predictor.serving_version("fast") == "2"  # policy "latest"

        op = await switch(h, "fast", version="1", strategy="immediate")
        done = await finished(h, op)
        assert done["state"] == "completed" and done["weight_percent"] == 100
        events = await next_events(ws, len(SYMBOLS))
        assert {e["symbol"] for e in events} == set(SYMBOLS)
        assert {(e["old_model"], e["new_model"], e["reason"]) for e in events} == {
            ("fast@2", "fast@1", "switch_complete")}
        assert all(e["operation_id"] == op and e["latency_ms"] >= 0 and e["id"] for e in events)

        op2 = await switch(h, "fast", version="2", strategy="gradual", steps=[50, 100], interval_s=0.3)
        done = await finished(h, op2)
        assert done["state"] == "completed"
        assert [e["event"] for e in done["log"]][:3] == ["created", "started", "step"]
        events2 = await next_events(ws, len(SYMBOLS))
        reasons = Counter(e["reason"] for e in events2)
        assert set(reasons) == {"switch_step", "switch_complete"} and reasons["switch_step"] > 0
        assert {e["new_model"] for e in events2} == {"fast@2"}

        with trio.fail_after(5):
            await h.service.transitions.wait_until(lambda view: not view.draining)
        assert ("fast", "1") not in h.service.cache.view.models  # drained, then unloaded

    assert load.failures == [], load.failures[:3]
    assert load.versions["fast@1"] > 0 and load.versions["fast@2"] > 0

    entries = redis_server.client().xrange("model.switch.log")
    assert len(entries) >= 2 * len(SYMBOLS)
    fields = entries[0][1]
    assert set(fields) >= SEED_SWITCH_FIELDS and fields["reason"] == "switch_complete"
    assert {e[0] for e in entries} >= {e["id"] for e in events}


async def test_resume_from_stream_id_replays_what_was_missed(config_path: Path, repo: Path,
                                                             redis_server: RedisServer) -> None:
    build_random_model(repo, "fast", "2", FAST_FEATURES, seed=21)
    config_path.write_text(render_config(repo, redis_url=redis_server.url))
    async with running_app(config_path) as h, steady_load(h):
        async with switch_feed(h) as ws:
            await finished(h, await switch(h, "fast", version="1"))
            first = await next_events(ws, len(SYMBOLS))
        # the first client is gone: it misses these; a witness sees them written (ids are stream ids)
        async with switch_feed(h) as witness:
            await finished(h, await switch(h, "fast", version="2"))
            missed = await next_events(witness, len(SYMBOLS))
        assert all(e["id"] for e in missed)
        async with switch_feed(h, f"?since={first[-1]['id']}") as resumed:
            replayed = await next_events(resumed, len(SYMBOLS))
        assert all(e["replay"] for e in replayed)
        assert {e["symbol"] for e in replayed} == set(SYMBOLS)
        assert {e["new_model"] for e in replayed} == {"fast@2"}
        assert [e["id"] for e in replayed] == [e["id"] for e in missed]


async def test_canary_of_failing_version_rolls_back_without_failed_requests(
        config_path: Path, repo: Path, redis_server: RedisServer) -> None:
    config_path.write_text(render_config(repo, redis_url=redis_server.url))
    async with running_app(config_path) as h, steady_load(h) as load, switch_feed(h) as ws:
        write_broken_version(repo, "fast", "2")
        registered = await h.admin_post("/models", json={"name": "fast", "version": "2"})
        assert registered.status_code == 201, registered.text
        assert h.service.predictor.serving_version("fast") == "1"

        op = await switch(h, "fast", version="2", strategy="canary", canary_weight=50, interval_s=0.5,
                          healthy_intervals=3)
        done = await finished(h, op)
        assert done["state"] == "rolled_back"
        assert "circuit breaker" in done["reason"] or "breach" in done["reason"]
        assert h.service.transitions.plan("fast").stable == "1"
        assert h.service.transitions.plan("fast").candidate is None

        # symbols moved to the canary, then every one of them moved back
        events: list[dict[str, Any]] = []
        with trio.fail_after(10):
            while True:
                events += await next_events(ws, 1)
                moved = {e["symbol"] for e in events if e["reason"] == "switch_step"}
                back = {e["symbol"] for e in events if e["reason"] in ("breaker_open", "rollback")}
                if moved and back == moved:
                    break
        assert all(e["new_model"] == "fast@2" for e in events if e["reason"] == "switch_step")
        # the breaker opening moved them back first; the rollback then had nothing left to move
        assert all(e["new_model"] == "fast@1" for e in events if e["reason"] in ("breaker_open", "rollback"))

        after = await h.predict(asset_class="crypto", horizon_ms=1000, symbol="SYM00", features=fast_features())
        assert after.json()["model"] == {"name": "fast", "version": "1"}
        detailed = (await h.client.get("/health/detailed")).json()
        broken = next(v for v in detailed["versions"] if v["model"] == "fast" and v["version"] == "2")
        assert broken["health"]["errors"] > 0

    assert load.failures == [], load.failures[:3]
    assert load.statuses[200] > 0


async def test_restart_keeps_active_versions_and_policy(config_path: Path, repo: Path) -> None:
    build_random_model(repo, "fast", "2", FAST_FEATURES, seed=21)
    async with running_app(config_path) as h:
        await finished(h, await switch(h, "fast", version="1"))
        assert (await h.client.get("/models/fast")).json()["policy"] == "pinned"
    async with running_app(config_path) as h:
        r = await h.predict(asset_class="crypto", horizon_ms=1000, symbol="X", features=fast_features())
        assert r.json()["model"] == {"name": "fast", "version": "1"}
        detail = (await h.client.get("/models/fast")).json()
        assert detail["policy"] == "pinned" and detail["active_version"] == "1"
        rollback = await h.admin_post("/models/fast/rollback")
        assert rollback.status_code == 202
        await finished(h, rollback.json()["operation_id"])
        r = await h.predict(asset_class="crypto", horizon_ms=1000, symbol="X", features=fast_features())
        assert r.json()["model"]["version"] == "2"


async def test_ab_split_statistics_feedback_and_abort(config_path: Path, repo: Path) -> None:
    build_random_model(repo, "fast", "2", FAST_FEATURES, seed=21)
    async with running_app(config_path) as h:
        op = await switch(h, "fast", version="1", strategy="ab", split=50, interval_s=60)
        with trio.fail_after(5):
            await h.service.transitions.wait_until(lambda v: v.state.operations[op].state == "running")
        answers = []
        for i in range(60):
            r = await h.predict(model_name="fast", features=fast_features(i / 60), symbol=f"S{i}",
                                correlation_id=f"c{i}")
            assert r.status_code == 200
            answers.append(r.json())
        assert {a["model"]["version"] for a in answers} == {"1", "2"}
        for a in answers:
            outcome = a["prediction"]["signal"] if a["model"]["version"] == "1" else "SELL"
            fb = await h.client.post("/feedback", json={"correlation_id": a["correlation_id"], "outcome": outcome})
            assert fb.status_code == 200, fb.text
        assert (await h.client.post("/feedback", json={"correlation_id": "nope", "outcome": "BUY"})).status_code == 404
        report = (await h.client.get(f"/switches/{op}")).json()["ab"]
        arms = report["arms"]
        assert arms["1"]["requests"] + arms["2"]["requests"] == 60
        assert arms["1"]["accuracy"] == 1.0
        assert 0 <= report["accuracy_test"]["p_value"] <= 1
        assert "p_value" in report["latency_test"]

        again = await h.client.post("/feedback", json={"correlation_id": answers[0]["correlation_id"],
                                                       "outcome": "BUY"})
        assert again.status_code == 404  # each prediction takes one outcome

        aborted = await h.admin_post(f"/switches/{op}/abort")
        assert aborted.status_code == 200 and aborted.json()["state"] == "aborted"
        assert h.service.transitions.plan("fast").stable == "2"
        assert (await h.admin_post(f"/switches/{op}/abort")).status_code == 409


async def test_register_upload_deregister_and_states(config_path: Path, repo: Path, tmp_path: Path) -> None:
    other = tmp_path / "upload"
    folder = build_random_model(other, "fast", "3", FAST_FEATURES, seed=33)
    content = base64.b64encode((folder / "model.tflite").read_bytes()).decode()
    metadata = {"features": list(FAST_FEATURES), "labels": ["SELL", "HOLD", "BUY"], "window": 1}
    async with running_app(config_path) as h:
        await h.service.cache.get("fast")
        up = await h.admin_post("/models", json={"name": "fast", "version": "3", "model_base64": content,
                                                 "metadata": metadata})
        assert up.status_code == 201, up.text
        # "latest" policy without a plan: the new version is registered, ready, not yet serving
        assert (await h.admin_post("/models", json={"name": "fast", "version": "3", "model_base64": content,
                                                    "metadata": metadata})).status_code == 409
        bad = await h.admin_post("/models", json={"name": "fast", "version": "4", "model_base64": "AAAA",
                                                  "metadata": metadata})
        assert bad.status_code == 422 and not (repo / "fast" / "4").exists()
        unauth = await h.client.post("/models", json={"name": "fast", "version": "5"})
        assert unauth.status_code == 401

        serving = await h.client.delete("/models/fast/versions/1", headers={"X-Admin-Key": ADMIN_KEY})
        assert serving.status_code == 409 and serving.json()["error"]["code"] == "version_serving"
        gone = await h.client.delete("/models/fast/versions/3", headers={"X-Admin-Key": ADMIN_KEY})
        assert gone.status_code == 200
        states = {v["version"]: v["status"] for v in (await h.client.get("/models/fast/versions")).json()["versions"]}
        assert states == {"3": "deregistered", "1": "serving"}
        refused = await h.admin_post("/models/fast/switch", json={"version": "3"})
        assert refused.status_code == 409 and refused.json()["error"]["code"] == "version_deregistered"
        invalid = await h.admin_post("/models/fast/switch", json={"version": "1", "strategy": "warp"})
        assert invalid.status_code in (409, 422)
        assert (await h.client.get("/switches/sw-nope")).status_code == 404


async def test_breaker_opens_and_traffic_goes_to_the_fallback(config_path: Path, repo: Path) -> None:
    write_broken_version(repo, "fast", "2")  # newest, so "latest" serves it: every call fails
    async with running_app(config_path) as h:
        for i in range(8):
            r = await h.predict(asset_class="crypto", horizon_ms=10, symbol=f"B{i}", features=fast_features())
            assert r.status_code == 200, r.text
            assert r.json()["model"]["name"] == "backup" and r.json()["fallback_from"] == "fast"
        assert h.service.health.breakers.state(("fast", "2")) == "open"
        detailed = (await h.client.get("/health/detailed")).json()
        entry = next(v for v in detailed["versions"] if (v["model"], v["version"]) == ("fast", "2"))
        assert entry["breaker"] == "open" and entry["health"]["errors"] >= 5
        metrics = (await h.client.get("/metrics")).text
        assert 'model_router_breaker_state{model="fast",version="2"} 2.0' in metrics
        explicit = await h.predict(model_name="fast", model_version="2", features=fast_features())
        assert explicit.status_code == 503


async def test_switching_limits_come_from_the_config_and_reload_live(config_path: Path, repo: Path) -> None:
    """``switching.breaker_failures`` applies at start and changes with a reload, no restart."""
    write_broken_version(repo, "fast", "2")  # served by "latest", fails on every call
    config_path.write_text(render_config(repo, switching="    breaker_failures: 3\n"))
    async with running_app(config_path) as h:
        breakers = h.service.health.breakers
        for i in range(2):
            await h.predict(asset_class="crypto", horizon_ms=10, symbol=f"L{i}", features=fast_features())
        assert breakers.state(("fast", "2")) == "closed"  # 2 failures < 3
        await h.predict(asset_class="crypto", horizon_ms=10, symbol="L2", features=fast_features())
        assert breakers.state(("fast", "2")) == "open"
        assert (await h.client.get("/rules")).json()["switching"]["breaker_failures"] == 3

        seen = h.service.watcher.attempts
        config_path.write_text(render_config(repo, switching="    breaker_failures: 9\n    alert_error_rate: 0.5\n"))
        with trio.fail_after(2):
            event = await h.service.watcher.wait_for_attempt(seen)
        assert event.success
        assert breakers.settings.failure_threshold == 9
        assert h.service.health.alerts.error_rate == 0.5
