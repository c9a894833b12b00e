"""End-to-end: the whole service on a real socket, real TFLite models, real Redis.

Each test starts the app in-process on 127.0.0.1:0 (Hypercorn + Quart-Trio + every
actor) and talks to it over HTTP with httpx.
"""

from __future__ import annotations

import gc
import json
import os
from pathlib import Path

import numpy as np
import pytest
import trio

from actors.build.demo_models import build_random_model
from actors.core.errors import RouterError
from actors.web.errors import http_status
from tests.conftest import (
    ADMIN_KEY,
    FAST_FEATURES,
    Harness,
    RedisServer,
    Subscriber,
    fast_features,
    render_config,
    running_app,
    wait_ready,
    window_features,
)

SEED_RELOAD_FIELDS = {"component", "timestamp", "config_hash", "rules_count", "latency_ms", "success"}


async def edit_and_wait(harness: Harness, path: Path, text: str) -> dict:
    """Write ``text`` in place and wait (event-driven, <= 2 s) for the reload it triggers."""
    watcher = harness.service.watcher
    seen = watcher.attempts
    path.write_text(text)
    with trio.fail_after(2):
        event = await watcher.wait_for_attempt(seen)
    return event.to_dict()


async def test_predict_by_route_and_by_name(config_path: Path) -> None:
    async with running_app(config_path) as h:
        await wait_ready(h)
        routed = await h.predict(asset_class="crypto", horizon_ms=1500, symbol="BTC/USDT",
                                 features=fast_features(), correlation_id="abc-1")
        assert routed.status_code == 200, routed.text
        body = routed.json()
        assert body["model"] == {"name": "fast", "version": "1"}
        assert body["rule_index"] == 0
        assert body["correlation_id"] == "abc-1"
        assert body["prediction"]["signal"] in {"SELL", "HOLD", "BUY"}
        probabilities = body["prediction"]["probabilities"]
        assert set(probabilities) == {"SELL", "HOLD", "BUY"}
        assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-4)
        assert body["prediction"]["confidence"] == max(probabilities.values())
        assert body["latency_ms"] >= 0

        long = await h.predict(asset_class="crypto", horizon_ms=120_000, features=window_features())
        assert long.json()["model"]["name"] == "windowed"
        assert long.json()["rule_index"] == 1

        unmatched = await h.predict(asset_class="fx_spot", horizon_ms=10, features=fast_features())
        assert unmatched.json()["model"]["name"] == "backup"
        assert unmatched.json()["rule_index"] is None

        named = await h.predict(model_name="windowed", model_version="1", features=window_features())
        assert named.status_code == 200
        assert named.json()["rule_index"] is None
        assert len(named.json()["correlation_id"]) == 32  # generated


async def test_the_collector_thresholds_apply_once_serving(config_path: Path, restored_thresholds: None) -> None:
    """The configured thresholds are in force once the service reports ready, and it serves with them."""
    async with running_app(config_path, gc_thresholds=(15_000, 9, 8)) as h:
        assert gc.get_threshold() == (15_000, 9, 8)
        await wait_ready(h)
        assert (await h.predict(model_name="fast", features=fast_features())).status_code == 200


async def test_same_input_same_answer_as_the_model(config_path: Path) -> None:
    """The HTTP answer is the TFLite model's own output for the row, not something else."""
    async with running_app(config_path) as h:
        model = await h.service.cache.get("fast")
        expected = model.predict(np.array([[0.1, -0.2, 0.3]], dtype=np.float32))[0]
        r = await h.predict(model_name="fast", features={"a": 0.1, "b": -0.2, "c": 0.3})
        got = r.json()["prediction"]["probabilities"]
        assert [got[k] for k in ("SELL", "HOLD", "BUY")] == pytest.approx(expected.tolist(), abs=1e-5)


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"asset_class": "crypto", "horizon_ms": 5, "features": {"a": 1, "b": 2}}, 422, "invalid_features"),
        ({"asset_class": "crypto", "horizon_ms": 5, "features": {"a": 1, "b": 2, "c": 3, "z": 4}},
         422, "invalid_features"),
        ({"asset_class": "crypto", "horizon_ms": 5, "features": {"a": True, "b": 2, "c": 3}},
         422, "invalid_features"),
        ({"asset_class": "crypto", "horizon_ms": 5, "features": {"a": "1", "b": 2, "c": 3}},
         422, "invalid_features"),
        ({"asset_class": "crypto", "horizon_ms": -1, "features": {}}, 422, "invalid_field"),
        ({"asset_class": "crypto", "features": {}}, 400, "bad_request"),
        ({"features": {}}, 400, "bad_request"),
        ({"model_name": "nope", "features": {}}, 404, "model_not_found"),
        ({"model_name": "fast", "model_version": "9", "features": fast_features()}, 404, "version_not_found"),
        ({"model_name": "fast", "features": fast_features(), "surprise": 1}, 400, "bad_request"),
        ({"model_name": "windowed", "features": {"x": [1, 2], "y": [1, 2, 3, 4]}}, 422, "invalid_features"),
        ([1, 2, 3], 400, "bad_request"),
    ],
)
async def test_bad_requests_get_clear_errors(config_path: Path, body: object, status: int, code: str) -> None:
    async with running_app(config_path) as h:
        r = await h.client.post("/predict", json=body)
        assert r.status_code == status, r.text
        error = r.json()["error"]
        assert error["code"] == code
        assert error["message"]
        assert "details" in error


async def test_malformed_oversized_and_non_finite_bodies(config_path: Path) -> None:
    async with running_app(config_path) as h:
        r = await h.client.post("/predict", content=b"{not json")
        assert (r.status_code, r.json()["error"]["code"]) == (400, "bad_request")
        r = await h.client.post("/predict", content=b'{"model_name":"fast","features":{"a":NaN,"b":1,"c":1}}')
        assert (r.status_code, r.json()["error"]["code"]) == (422, "non_finite_number")
        r = await h.client.post("/predict", content=b'{"model_name":"fast","features":{"a":1e999,"b":1,"c":1}}')
        assert (r.status_code, r.json()["error"]["code"]) == (422, "invalid_features")
        r = await h.client.post("/predict", content=b"[" + b"0," * (3 * 1024 * 1024) + b"0]")
        assert r.status_code == 413
        assert r.json()["error"]["code"]
        r = await h.client.get("/no/such/path")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


async def test_batch_keeps_order_reports_item_errors_and_groups_calls(config_path: Path) -> None:
    async with running_app(config_path) as h:
        await wait_ready(h)
        items = [
            {"model_name": "fast", "features": fast_features(0.1), "correlation_id": "i0"},
            {"asset_class": "crypto", "horizon_ms": 10, "features": fast_features(0.2), "correlation_id": "i1"},
            {"model_name": "fast", "features": {"a": 1}, "correlation_id": "i2"},
            {"model_name": "windowed", "features": window_features(), "correlation_id": "i3"},
            {"model_name": "fast", "features": fast_features(0.3), "correlation_id": "i4"},
        ]
        before = _sample(h, "inference_latency_seconds_count", model_name="fast")
        r = await h.client.post("/predict/batch", json={"requests": items})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["count"] == 5 and body["failed"] == 1
        results = body["predictions"]
        assert [x.get("correlation_id") for x in results] == ["i0", "i1", None, "i3", "i4"]
        assert results[2]["error"]["code"] == "invalid_features" and results[2]["index"] == 2
        # the three 'fast' items ran as one interpreter call
        assert _sample(h, "inference_latency_seconds_count", model_name="fast") - before == 1
        single = await h.predict(model_name="fast", features=fast_features(0.3))
        assert single.json()["prediction"] == results[4]["prediction"]

        too_many = await h.client.post("/predict/batch", json={"requests": [items[0]] * 1025})
        assert too_many.status_code == 413 and too_many.json()["error"]["code"] == "batch_too_large"
        empty = await h.client.post("/predict/batch", json={"requests": []})
        assert empty.status_code == 400


def _sample(h: Harness, name: str, **labels: str) -> float:
    value = h.service.metrics.registry.get_sample_value(name, labels)
    return value or 0.0


async def test_reload_by_file_edit_is_active_within_two_seconds(config_path: Path, repo: Path) -> None:
    async with running_app(config_path) as h:
        await wait_ready(h)
        old_hash = (await h.client.get("/rules")).json()["config_hash"]
        rules = '- match: {asset_class: "crypto"}\n  model: windowed\n  description: all crypto\n'
        event = await edit_and_wait(h, config_path, render_config(repo, rules=rules))
        assert event["success"] is True and event["trigger"] == "file"
        active = (await h.client.get("/rules")).json()
        assert active["config_hash"] == event["config_hash"] != old_hash
        assert [r["model"] for r in active["rules"]] == ["windowed"]
        r = await h.predict(asset_class="crypto", horizon_ms=10, features=window_features())
        assert r.json()["model"]["name"] == "windowed"
        backups = list((config_path.parent / "backups").glob("rules.*.yml"))
        assert len(backups) == 1 and old_hash in backups[0].name


async def test_invalid_edit_keeps_old_rules_and_a_fix_recovers(config_path: Path, repo: Path) -> None:
    async with running_app(config_path) as h:
        await wait_ready(h)
        good_hash = h.service.router.config.config_hash
        for bad in (
            "model_router: [unclosed\n",
            render_config(repo, rules='- match: {horizon_ms: ">5 & <3"}\n  model: fast\n'),
            render_config(repo, rules="- match: {asset_class: crypto}\n  model: ghost\n"),
        ):
            event = await edit_and_wait(h, config_path, bad)
            assert event["success"] is False and event["error"]
            assert h.service.router.config.config_hash == good_hash
            r = await h.predict(asset_class="crypto", horizon_ms=10, features=fast_features())
            assert r.status_code == 200 and r.json()["model"]["name"] == "fast"
        events = (await h.client.get("/reload/events", params={"limit": 3})).json()["events"]
        assert "ghost" in events[0]["error"] + str(events[0]["details"])
        assert "rules[0].match.horizon_ms" in str(events[1]["details"])
        stats = (await h.client.get("/stats")).json()
        assert stats["recent_reload_success_rate"] < 1.0
        assert stats["current_rules_count"] == 2

        fixed = await edit_and_wait(h, config_path, render_config(repo, default="fast"))
        assert fixed["success"] is True
        assert h.service.router.config.settings.default_model == "fast"


async def test_atomic_save_delete_and_recreate(config_path: Path, repo: Path) -> None:
    async with running_app(config_path) as h:
        watcher = h.service.watcher
        seen = watcher.attempts
        tmp = config_path.with_name(".rules.yml.tmp")
        tmp.write_text(render_config(repo, default="windowed"))
        os.replace(tmp, config_path)
        with trio.fail_after(2):
            event = await watcher.wait_for_attempt(seen)
        assert event.success and h.service.router.config.settings.default_model == "windowed"

        seen = watcher.attempts
        config_path.unlink()
        with trio.fail_after(2):
            event = await watcher.wait_for_attempt(seen)
        assert not event.success and "cannot read" in (event.error or "")
        assert h.service.router.config.settings.default_model == "windowed"

        event = await edit_and_wait(h, config_path, render_config(repo, default="fast"))
        assert event["success"] and h.service.router.config.settings.default_model == "fast"


async def test_start_removes_the_temp_files_interrupted_writes_left(
        config_path: Path, repo: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Leftovers of atomic writes (state folder, config folder, model versions) go at start, with a count;
    files that only look similar stay."""
    state = tmp_path / "state" / "router.state.json"
    state.parent.mkdir()
    leftovers = [state.parent / ".router.state.json.00112233445566ff.tmp",
                 config_path.parent / f".{config_path.name}.a1b2c3d4e5f60718.tmp",
                 repo / "fast" / "1" / ".model.tflite.0f0f0f0f0f0f0f0f.tmp"]
    others = [config_path.parent / ".notes.tmp", repo / "fast" / "1" / "model.tflite.0f0f0f0f0f0f0f0f.tmp"]
    for path in leftovers + others:
        path.write_bytes(b"half a write")
    with caplog.at_level("WARNING", logger="model_router"):
        async with running_app(config_path, state_file=state) as h:
            assert not [p for p in leftovers if p.exists()]
            assert all(p.exists() for p in others)
            assert (await h.client.get("/health")).status_code == 200
    assert "removed 3 temp file(s) left by interrupted writes" in caplog.text


async def test_admin_endpoints_need_the_key(config_path: Path) -> None:
    async with running_app(config_path) as h:
        assert (await h.client.post("/config/reload")).status_code == 401
        wrong = await h.client.post("/config/reload", headers={"X-Admin-Key": "nope"})
        # one code for every missing or unknown key
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "unauthenticated"
        ok = await h.admin_post("/config/reload")
        assert ok.status_code == 200 and ok.json()["event"]["trigger"] == "api"
        bearer = await h.client.post("/reload/fast", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        assert bearer.status_code == 200
    async with running_app(config_path, admin_key=None) as h:
        r = await h.client.post("/config/reload", headers={"X-Admin-Key": "anything"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "admin_disabled"


async def test_api_reload_of_invalid_file_is_422_and_keeps_rules(config_path: Path) -> None:
    async with running_app(config_path) as h:
        good = h.service.router.config.config_hash
        config_path.write_text("model_router:\n  rules: 5\n")
        # the file watcher may pick the edit up first; either way the API answer is a rejection
        r = await h.admin_post("/config/reload")
        assert r.status_code == 422
        assert r.json()["error"]["details"]["kept_config_hash"] == good
        assert h.service.router.config.config_hash == good
        assert await h.service.reload_config() is False


async def test_model_reload_new_version_and_broken_version(config_path: Path, repo: Path) -> None:
    async with running_app(config_path) as h:
        await h.service.cache.get("fast")
        build_random_model(repo, "fast", "2", FAST_FEATURES, seed=11)
        r = await h.admin_post("/reload/fast")
        assert r.status_code == 200, r.text
        assert r.json() == {"model": "fast", "version": "2", "previous_version": "1", "status": "reloaded"}
        served = await h.predict(model_name="fast", features=fast_features())
        assert served.json()["model"]["version"] == "2"

        broken = repo / "fast" / "3"
        broken.mkdir()
        (broken / "metadata.yml").write_text((repo / "fast" / "2" / "metadata.yml").read_text())
        (broken / "model.tflite").write_bytes(b"TFL3 truncated")
        r = await h.admin_post("/reload/fast")
        assert r.status_code == 409
        assert r.json()["error"]["details"]["serving"] == "2"
        served = await h.predict(model_name="fast", features=fast_features())
        assert served.status_code == 200 and served.json()["model"]["version"] == "2"
        versions = (await h.client.get("/models/fast/versions")).json()
        states = {v["version"]: v["status"] for v in versions["versions"]}
        assert states == {"3": "failed", "2": "serving", "1": "ready"}
        assert (await h.admin_post("/reload/ghost")).status_code == 404


async def test_failing_model_falls_back_and_others_keep_serving(config_path: Path, repo: Path) -> None:
    (repo / "fast" / "1" / "model.tflite").write_bytes(b"\x00" * 64)
    async with running_app(config_path) as h:
        r = await h.predict(asset_class="crypto", horizon_ms=10, features=fast_features())
        assert r.status_code == 200, r.text
        assert r.json()["model"]["name"] == "backup"
        assert r.json()["fallback_from"] == "fast"
        direct = await h.predict(model_name="fast", features=fast_features())
        assert direct.status_code == 503 and direct.json()["error"]["code"] == "model_unavailable"
        ok = await h.predict(model_name="windowed", features=window_features())
        assert ok.status_code == 200


async def test_readiness_follows_the_default_model(config_path: Path, repo: Path) -> None:
    good = (repo / "backup" / "1" / "model.tflite").read_bytes()
    (repo / "backup" / "1" / "model.tflite").write_bytes(b"junk")
    async with running_app(config_path) as h:
        with pytest.raises(RouterError) as failure:
            await h.service.cache.get("backup")  # joins the startup preload and shares its outcome
        assert http_status(failure.value) == 503
        r = await h.client.get("/health/ready")
        assert r.status_code == 503
        assert "backup" in " ".join(r.json()["reasons"])
        (repo / "backup" / "1" / "model.tflite").write_bytes(good)
        assert (await h.admin_post("/reload/backup")).status_code == 200
        r = await h.client.get("/health/ready")
        assert r.status_code == 200 and r.json()["status"] == "ready"
        health = (await h.client.get("/health")).json()
        assert health["status"] == "ok" and "backup@1" in health["models_loaded"]


async def test_introspection_endpoints(config_path: Path) -> None:
    async with running_app(config_path) as h:
        await wait_ready(h)
        models = (await h.client.get("/models")).json()
        names = [m["name"] for m in models["models"]]
        assert names == ["backup", "fast", "windowed"]
        windowed = (await h.client.get("/models/windowed")).json()
        assert windowed["features"] == ["x", "y"] and windowed["window"] == 4
        assert (await h.client.get("/models/ghost")).status_code == 404
        probe = {"asset_class": "crypto", "horizon_ms": 60000}
        route = (await h.client.post("/route/test", json=probe)).json()
        assert route["model"] == "windowed" and route["rule_index"] == 1
        assert route["description"] == "crypto long"
        bad = await h.client.get("/reload/events", params={"limit": "x"})
        assert bad.status_code == 400

        await h.predict(asset_class="crypto", horizon_ms=10, features=fast_features())
        text = (await h.client.get("/metrics")).text
        for name in ("model_router_latency_microseconds_bucket", "model_router_reload_duration_ms",
                     'model_router_rule_matches_total{model="fast",rule_index="0"}',
                     "model_router_active_model{", 'inference_requests_total{model_name="fast",status="ok"}',
                     'inference_latency_seconds_bucket{le="0.0001",model_name="fast"}'):
            assert name in text, name


async def test_param_reload_published_to_real_redis(config_path: Path, repo: Path,
                                                    redis_server: RedisServer) -> None:
    config_path.write_text(render_config(repo, redis_url=redis_server.url))
    subscriber = Subscriber(redis_server, "param.reload")
    try:
        async with running_app(config_path) as h:
            startup = await subscriber.next_json()
            assert set(startup) == SEED_RELOAD_FIELDS and startup["success"] is True
            await h.admin_post("/config/reload")
            message = await subscriber.next_json()
            assert set(message) == SEED_RELOAD_FIELDS
            assert message["component"] == "router"
            assert message["config_hash"] == h.service.router.config.config_hash
            assert message["rules_count"] == 2

            await edit_and_wait(h, config_path, "model_router: {}\n")
            failed = await subscriber.next_json()
            assert set(failed) == SEED_RELOAD_FIELDS | {"error"}
            assert failed["success"] is False and failed["error"]
    finally:
        subscriber.close()


async def test_redis_down_never_breaks_predictions_or_reloads(config_path: Path, repo: Path,
                                                              redis_server: RedisServer) -> None:
    config_path.write_text(render_config(repo, redis_url=redis_server.url))
    async with running_app(config_path) as h:
        await wait_ready(h)
        redis_server.stop()
        for i in range(20):
            r = await h.predict(asset_class="crypto", horizon_ms=i, features=fast_features())
            assert r.status_code == 200
        with trio.fail_after(2):
            reload = await h.admin_post("/config/reload")
        assert reload.status_code == 200
        redis_server.start()
        subscriber = Subscriber(redis_server, "param.reload")
        try:
            new_text = render_config(repo, redis_url=redis_server.url, default="fast")
            event = await edit_and_wait(h, config_path, new_text)
            with trio.fail_after(15):
                while True:
                    message = await subscriber.next_json(timeout=10)
                    if message["config_hash"] == event["config_hash"] and message["success"]:
                        break
        finally:
            subscriber.close()


async def test_ws_predict_streams_answers_with_correlation_ids(config_path: Path) -> None:
    from trio_websocket import open_websocket_url

    async with running_app(config_path) as h:
        await wait_ready(h)
        url = h.url.replace("http://", "ws://") + "/ws/predict"
        async with open_websocket_url(url) as ws:
            await ws.send_message(json.dumps({"model_name": "fast", "features": fast_features(),
                                              "correlation_id": "s1"}))
            single = json.loads(await ws.get_message())
            assert single["type"] == "prediction" and single["correlation_id"] == "s1"
            assert single["model"] == {"name": "fast", "version": "1"}

            batch = [{"asset_class": "crypto", "horizon_ms": 5, "features": fast_features(i / 10),
                      "correlation_id": f"b{i}"} for i in range(5)]
            await ws.send_message(json.dumps(batch))
            answer = json.loads(await ws.get_message())
            assert answer["type"] == "predictions" and answer["count"] == 5
            assert [p["correlation_id"] for p in answer["predictions"]] == [f"b{i}" for i in range(5)]

            await ws.send_message("{not json")
            bad = json.loads(await ws.get_message())
            assert bad["type"] == "error" and bad["error"]["code"] == "bad_request"
            await ws.send_message(json.dumps({"model_name": "ghost", "features": {}, "correlation_id": "g"}))
            missing = json.loads(await ws.get_message())
            assert (missing["correlation_id"], missing["status"]) == ("g", 404)

            # pipelined: many messages in flight, every answer comes back once with its id
            for i in range(100):
                await ws.send_message(json.dumps({"model_name": "fast", "features": fast_features(),
                                                  "correlation_id": f"p{i}"}))
            seen = set()
            with trio.fail_after(10):
                while len(seen) < 100:
                    seen.add(json.loads(await ws.get_message())["correlation_id"])
            assert seen == {f"p{i}" for i in range(100)}


async def test_concurrent_predictions_are_batched_dynamically(config_path: Path) -> None:
    """Under concurrent load, single /predict calls share interpreter calls and answer correctly."""
    async with running_app(config_path, batch_delay_us=50_000, batch_min_call_us=0) as h:
        await wait_ready(h)
        expected = (await h.predict(model_name="fast", features=fast_features(0.2))).json()["prediction"]
        answers: list[dict] = []

        async def client() -> None:
            for _ in range(10):
                r = await h.predict(model_name="fast", features=fast_features(0.2))
                assert r.status_code == 200
                answers.append(r.json()["prediction"])

        async with trio.open_nursery() as nursery:
            for _ in range(16):
                nursery.start_soon(client)
        assert len(answers) == 160 and all(a == expected for a in answers)
        calls = _sample(h, "model_router_dynamic_batch_rows_count")
        rows = _sample(h, "model_router_dynamic_batch_rows_sum")
        assert calls > 0 and rows / calls > 1  # some calls carried several requests


async def test_batch_items_with_bad_values_get_their_own_422_and_the_rest_run_as_one_call(
        config_path: Path) -> None:
    """Well-shaped items are checked per group in one pass; a bad value still fails only its item.

    Values a JSON body can carry that ``feature_row`` refuses: a bool, a string, a number beyond
    float32, an integer beyond float range. The good items answer exactly as single requests do.
    """
    async with running_app(config_path) as h:
        await wait_ready(h)
        bad_values = [True, "0.5", 1e39, 10**400]
        items = []
        for i in range(12):
            features = fast_features(i / 20)
            if i % 3 == 1:
                features[next(iter(features))] = bad_values[i // 3]
            if i == 5:  # a one-element list for a window-1 feature: accepted, read as its number
                features[next(iter(features))] = [features[next(iter(features))]]
            items.append({"model_name": "fast", "features": features, "correlation_id": f"c{i}"})
        before = _sample(h, "inference_latency_seconds_count", model_name="fast")
        r = await h.client.post("/predict/batch", content=json.dumps({"requests": items}))
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["count"] == 12 and body["failed"] == 4
        for i, result in enumerate(body["predictions"]):
            if i % 3 == 1:
                assert result["index"] == i and result["error"]["code"] == "invalid_features", result
                assert next(iter(fast_features())) in result["error"]["message"]
            else:
                assert result["correlation_id"] == f"c{i}"
        assert _sample(h, "inference_latency_seconds_count", model_name="fast") - before == 1
        for i in (5, 11):
            single = await h.predict(model_name="fast", features=fast_features(i / 20))
            assert single.json()["prediction"] == body["predictions"][i]["prediction"]


async def test_hot_paths_refuse_other_methods_and_batch_limit_follows_reload(config_path: Path, repo: Path) -> None:
    async with running_app(config_path) as h:
        r = await h.client.get("/predict")
        assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
        assert r.headers["allow"] == "POST"
        items = [{"model_name": "fast", "features": fast_features()}] * 3
        assert (await h.client.post("/predict/batch", json={"requests": items})).status_code == 200
        event = await edit_and_wait(h, config_path, render_config(repo, config_extra="    max_batch_items: 2\n"))
        assert event["success"]
        limited = await h.client.post("/predict/batch", json={"requests": items})
        assert limited.status_code == 413 and limited.json()["error"]["details"]["limit"] == 2


async def test_open_breaker_is_refused_alike_by_single_and_batch_requests(config_path: Path) -> None:
    """A version whose breaker is open is not called, even as the only choice, on either path."""
    async with running_app(config_path) as h:
        await wait_ready(h)
        await h.service.cache.get("fast")
        for _ in range(5):
            h.service.health.breakers.failure(("fast", "1"))
        single = await h.predict(model_name="fast", features=fast_features())
        assert single.status_code == 503 and single.json()["error"]["code"] == "circuit_open"
        batch = await h.client.post("/predict/batch", json={"requests": [
            {"model_name": "fast", "features": fast_features()},
            {"model_name": "backup", "features": fast_features()}]})
        first, second = batch.json()["predictions"]
        assert first["error"]["code"] == "circuit_open" and first["status"] == 503
        assert second["model"] == {"name": "backup", "version": "1"}
        routed = await h.predict(asset_class="crypto", horizon_ms=5, features=fast_features())
        assert routed.json()["model"]["name"] == "backup" and routed.json()["fallback_from"] == "fast"
