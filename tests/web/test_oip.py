"""The Open Inference Protocol on both ports, driven by Triton's own HTTP client (the real service)."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import trio
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from actors.build.demo_models import build_random_model
from tests.conftest import FAST_FEATURES, WINDOW, WINDOW_FEATURES, Harness, free_port, running_app

ROWS = [[0.1, 0.2, 0.3], [0.9, -0.4, 0.05], [1.5, 0.0, -2.25], [0.33, 0.66, 0.99]]


@pytest.fixture
async def harness(config_path: Path) -> Any:
    async with running_app(config_path, data_port=free_port()) as h:
        await h.service.cache.get("fast")
        await h.service.cache.get("windowed")
        yield h


def urls(h: Harness) -> list[str]:
    assert h.data_url is not None
    return [h.url, h.data_url]


async def with_triton(url: str, work: Callable[[triton.InferenceServerClient], Any]) -> Any:
    """tritonclient is blocking (geventhttpclient): run it in a worker thread against the live service."""

    def run() -> Any:
        client = triton.InferenceServerClient(url=url.removeprefix("http://"), network_timeout=10)
        try:
            return work(client)
        finally:
            client.close()

    return await trio.to_thread.run_sync(run)


def model_labels(h: Harness, model: str) -> tuple[str, ...]:
    loaded = h.service.cache.lookup(model)
    assert loaded is not None
    return loaded.metadata.labels


async def predict_probabilities(h: Harness, model: str, features: list[dict[str, Any]]) -> np.ndarray:
    labels = model_labels(h, model)
    rows = []
    for row in features:
        r = await h.predict(model_name=model, features=row)
        assert r.status_code == 200, r.text
        probabilities = r.json()["prediction"]["probabilities"]
        rows.append([probabilities[label] for label in labels])
    return np.asarray(rows, dtype=np.float32)


async def test_triton_client_health_metadata_and_batched_infer_on_both_ports(harness: Harness) -> None:
    expected = await predict_probabilities(harness, "fast", [dict(zip(FAST_FEATURES, r, strict=True))
                                                             for r in ROWS])

    def session(client: triton.InferenceServerClient) -> dict[str, Any]:
        features = triton.InferInput("features", [len(ROWS), len(FAST_FEATURES)], "FP32")
        features.set_data_from_numpy(np.asarray(ROWS, dtype=np.float32))  # binary tensor data (the default)
        outputs = [triton.InferRequestedOutput("probabilities"), triton.InferRequestedOutput("signal")]
        result = client.infer("fast", [features], outputs=outputs, request_id="req-1")
        json_input = triton.InferInput("features", [len(ROWS), len(FAST_FEATURES)], "FP32")
        json_input.set_data_from_numpy(np.asarray(ROWS, dtype=np.float32), binary_data=False)
        as_json = client.infer("fast", [json_input], model_version="1",
                               outputs=[triton.InferRequestedOutput("probabilities", binary_data=False)])
        return {
            "live": client.is_server_live(), "ready": client.is_server_ready(),
            "model_ready": client.is_model_ready("fast"), "ghost_ready": client.is_model_ready("ghost"),
            "server": client.get_server_metadata(), "model": client.get_model_metadata("fast"),
            "model_v1": client.get_model_metadata("fast", model_version="1"),
            "probabilities": result.as_numpy("probabilities"), "signal": result.as_numpy("signal"),
            "response": result.get_response(), "json_probabilities": as_json.as_numpy("probabilities"),
            "json_response": as_json.get_response(),
        }

    for url in urls(harness):
        got = await with_triton(url, session)
        assert got["live"] and got["ready"] and got["model_ready"], url
        assert got["ghost_ready"] is False
        assert got["server"]["name"] == "model-router" and "binary_tensor_data" in got["server"]["extensions"]
        model = got["model"]
        assert model["name"] == "fast" and model["versions"] == ["1"] and model["platform"] == "tflite"
        assert model["inputs"][0] == {"name": "features", "datatype": "FP32", "shape": [-1, 3]}
        assert [i["name"] for i in model["inputs"][1:4]] == list(FAST_FEATURES)
        assert model["outputs"][0] == {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]}
        assert got["model_v1"]["inputs"] == model["inputs"]
        np.testing.assert_array_equal(got["probabilities"], expected)
        np.testing.assert_array_equal(got["json_probabilities"], expected)
        labels = np.array(model_labels(harness, "fast"))
        assert [s.decode() for s in got["signal"]] == labels[expected.argmax(axis=1)].tolist()
        assert got["response"]["id"] == "req-1" and got["response"]["model_version"] == "1"
        assert got["json_response"]["outputs"][0]["shape"] == [len(ROWS), 3]


async def test_per_feature_inputs_with_a_window_equal_the_features_tensor(harness: Harness) -> None:
    rng = np.random.default_rng(7)
    series = rng.normal(size=(2, len(WINDOW_FEATURES), WINDOW)).astype(np.float32)
    expected = await predict_probabilities(harness, "windowed", [
        {name: row[i].tolist() for i, name in enumerate(WINDOW_FEATURES)} for row in series])

    def session(client: triton.InferenceServerClient) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        per_feature = []
        for i, name in enumerate(WINDOW_FEATURES):
            tensor = triton.InferInput(name, [2, WINDOW], "FP32")
            tensor.set_data_from_numpy(np.ascontiguousarray(series[:, i, :]))
            per_feature.append(tensor)
        flat = triton.InferInput("features", [2, len(WINDOW_FEATURES) * WINDOW], "FP32")
        flat.set_data_from_numpy(series.reshape(2, -1))  # feature-major, as the model's own input row
        one = client.infer("windowed", per_feature).as_numpy("probabilities")
        other = client.infer("windowed", [flat]).as_numpy("probabilities")
        return one, other, client.get_model_metadata("windowed")

    for url in urls(harness):
        by_feature, by_tensor, metadata = await with_triton(url, session)
        np.testing.assert_array_equal(by_feature, expected)
        np.testing.assert_array_equal(by_tensor, expected)
        assert metadata["inputs"][0]["shape"] == [-1, len(WINDOW_FEATURES) * WINDOW]
        assert metadata["inputs"][1] == {"name": "x", "datatype": "FP32", "shape": [-1, WINDOW]}


async def test_triton_client_sees_protocol_errors(harness: Harness) -> None:
    def session(client: triton.InferenceServerClient) -> list[str]:
        messages = []
        for call in (lambda: client.get_model_metadata("ghost"),
                     lambda: client.infer("fast", [wrong_shape()])):
            try:
                call()
            except InferenceServerException as exc:
                messages.append(str(exc.message()))
        return messages

    def wrong_shape() -> triton.InferInput:
        tensor = triton.InferInput("features", [1, 2], "FP32")
        tensor.set_data_from_numpy(np.zeros((1, 2), dtype=np.float32))
        return tensor

    for url in urls(harness):
        missing, shape = await with_triton(url, session)
        assert missing.startswith("model_not_found:") and "ghost" in missing
        assert "shape [batch, 3]" in shape


def oip_body(rows: list[list[float]], **extra: Any) -> dict[str, Any]:
    return {"inputs": [{"name": "features", "shape": [len(rows), 3], "datatype": "FP32", "data": rows}], **extra}


async def post_both(h: Harness, path: str, **kwargs: Any) -> list[httpx.Response]:
    answers = []
    for url in urls(h):
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            answers.append(await client.post(path, **kwargs))
    return answers


@pytest.mark.parametrize(("name", "path", "body", "status", "starts"), [
    ("unknown model", "/v2/models/ghost/infer", oip_body([[1, 2, 3]]), 404, "model_not_found:"),
    ("unknown version", "/v2/models/fast/versions/9/infer", oip_body([[1, 2, 3]]), 404, "version_not_found:"),
    ("wrong datatype", "/v2/models/fast/infer",
     {"inputs": [{"name": "features", "shape": [1, 3], "datatype": "INT32", "data": [1, 2, 3]}]}, 400,
     "bad_request: input 'features' must be FP32"),
    ("wrong shape", "/v2/models/fast/infer",
     {"inputs": [{"name": "features", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}, 400,
     "bad_request: input 'features' must have shape [batch, 3]"),
    ("data does not fill shape", "/v2/models/fast/infer",
     {"inputs": [{"name": "features", "shape": [2, 3], "datatype": "FP32", "data": [1, 2, 3]}]}, 400,
     "bad_request: input 'features': 3 values"),
    ("string in FP32", "/v2/models/fast/infer",
     {"inputs": [{"name": "features", "shape": [1, 3], "datatype": "FP32", "data": [1, "x", 3]}]}, 400,
     "bad_request: input 'features': str"),
    ("unknown input", "/v2/models/fast/infer",
     {"inputs": [{"name": "volume", "shape": [1], "datatype": "FP32", "data": [1]}]}, 400,
     "bad_request: unknown input(s) volume"),
    ("missing feature", "/v2/models/fast/infer",
     {"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [1]}]}, 400,
     "bad_request: missing input(s) b, c"),
    ("unknown output", "/v2/models/fast/infer", oip_body([[1, 2, 3]], outputs=[{"name": "logits"}]), 400,
     "bad_request: unknown output 'logits'"),
    ("not JSON", "/v2/models/fast/infer", None, 400, "bad_request: malformed JSON"),
    ("metadata of unknown model", "/v2/models/ghost", None, 404, "model_not_found:"),
])
async def test_errors_use_the_protocol_form_on_both_ports(harness: Harness, name: str, path: str, body: Any,
                                                           status: int, starts: str) -> None:
    method = "GET" if not path.endswith("infer") else "POST"
    content = json.dumps(body).encode() if body is not None else b'{"inputs": ['
    for url in urls(harness):
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            r = await client.request(method, path, content=content if method == "POST" else None)
        assert r.status_code == status, (name, url, r.text)
        payload = r.json()
        assert list(payload) == ["error"] and isinstance(payload["error"], str), (name, payload)
        assert payload["error"].startswith(starts), (name, payload)


async def test_non_finite_binary_value_is_refused_like_predict(harness: Harness) -> None:
    header = json.dumps({"inputs": [{"name": "features", "shape": [1, 3], "datatype": "FP32",
                                     "parameters": {"binary_data_size": 12}}]}).encode()
    raw = struct.pack("<3f", 1.0, float("nan"), 2.0)
    predict = await harness.client.post("/predict", content=b'{"model_name": "fast", "features": '
                                        b'{"a": 1.0, "b": 1e999, "c": 2.0}}')
    for r in await post_both(harness, "/v2/models/fast/infer", content=header + raw,
                             headers={"Inference-Header-Content-Length": str(len(header))}):
        assert r.status_code == predict.status_code == 422, r.text
        error = predict.json()["error"]
        assert r.json()["error"] == f"{error['code']}: {error['message']}"


async def test_model_ready_and_server_ready_answers(harness: Harness) -> None:
    for url in urls(harness):
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            assert (await client.get("/v2/health/live")).json() == {"live": True}
            assert (await client.get("/v2/health/ready")).json() == {"ready": True}
            assert (await client.get("/v2/models/fast/versions/1/ready")).json() == {"name": "fast", "ready": True}
            assert (await client.get("/v2/models/ghost/ready")).status_code == 404
            # The protocol's routes take their methods only (405 names the allowed one, on both ports).
            assert (await client.get("/v2/models/fast/versions/1/infer")).status_code == 405


async def test_canary_assigns_rows_by_id_and_symbol_like_predict(config_path: Path, repo: Path) -> None:
    build_random_model(repo, "fast", "2", FAST_FEATURES, seed=21)
    async with running_app(config_path, data_port=free_port()) as h:
        r = await h.admin_post("/models/fast/switch", json={"version": "1", "strategy": "ab", "split": 50,
                                                            "interval_s": 60})
        assert r.status_code == 202, r.text
        op = r.json()["operation_id"]
        with trio.fail_after(5):
            await h.service.transitions.wait_until(lambda v: v.state.operations[op].state == "running")
        row = [0.1, 0.2, 0.3]
        features = dict(zip(FAST_FEATURES, row, strict=True))
        by_id: dict[str, str] = {}
        by_symbol: dict[str, str] = {}
        for i in range(24):
            predicted = await h.predict(model_name="fast", features=features, correlation_id=f"id-{i}")
            by_id[f"id-{i}"] = predicted.json()["model"]["version"]
            predicted = await h.predict(model_name="fast", features=features, symbol=f"SYM{i}")
            by_symbol[f"SYM{i}"] = predicted.json()["model"]["version"]
        assert set(by_id.values()) == {"1", "2"} and set(by_symbol.values()) == {"1", "2"}
        versions_output = [{"name": "model_version"}, {"name": "correlation_id"}]
        for url in urls(h):
            async with httpx.AsyncClient(base_url=url, timeout=10) as client:
                for request_id, version in by_id.items():
                    r = await client.post("/v2/models/fast/infer",
                                          json=oip_body([row], id=request_id, outputs=versions_output))
                    body = r.json()
                    assert body["id"] == request_id and body["model_version"] == version, (url, body)
                    assert body["outputs"][1]["data"] == [request_id]
                for symbol, version in by_symbol.items():
                    r = await client.post("/v2/models/fast/infer", json=oip_body(
                        [row], id="same-id", parameters={"symbol": symbol}, outputs=versions_output))
                    assert r.json()["model_version"] == version, (url, symbol)
                # Per-row symbols: a BYTES input; one call, each row assigned as /predict assigns it.
                symbols = list(by_symbol)
                r = await client.post("/v2/models/fast/infer", json={"inputs": [
                    {"name": "features", "shape": [len(symbols), 3], "datatype": "FP32", "data": [row] * len(symbols)},
                    {"name": "symbol", "shape": [len(symbols)], "datatype": "BYTES", "data": symbols}],
                    "outputs": versions_output, "id": "many"})
                body = r.json()
                assert body["outputs"][0]["data"] == [by_symbol[s] for s in symbols]
                assert body["model_version"] == "1,2"
                assert body["outputs"][1]["data"] == [f"many/{i}" for i in range(len(symbols))]
                # Triton's client, with the symbol parameter and the request id a trading engine would send.
                assert await with_triton(url, partial(assigned_versions, row, by_symbol, by_id)) == (by_symbol, by_id)
                # A version in the URL is that version, whatever the plan says.
                r = await client.post("/v2/models/fast/versions/2/infer",
                                      json=oip_body([row] * 3, outputs=versions_output))
                assert r.json()["outputs"][0]["data"] == ["2", "2", "2"]


def assigned_versions(row: list[float], by_symbol: dict[str, str], by_id: dict[str, str],
                      client: triton.InferenceServerClient) -> tuple[dict[str, str], dict[str, str]]:
    def version(symbol: str | None, request_id: str) -> str:
        tensor = triton.InferInput("features", [1, 3], "FP32")
        tensor.set_data_from_numpy(np.asarray([row], dtype=np.float32))
        result = client.infer("fast", [tensor], request_id=request_id,
                              parameters={"symbol": symbol} if symbol else None,
                              outputs=[triton.InferRequestedOutput("model_version")])
        return str(result.as_numpy("model_version")[0].decode())

    return {s: version(s, "any") for s in by_symbol}, {i: version(None, i) for i in by_id}


async def test_oip_requests_are_timed_by_route_template(harness: Harness) -> None:
    for url in urls(harness):
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            assert (await client.post("/v2/models/fast/infer", json=oip_body([[1, 2, 3]]))).status_code == 200
    text = (await harness.client.get("/metrics")).text
    line = next(line for line in text.splitlines() if line.startswith(
        'model_router_http_request_duration_seconds_count{method="POST",route="/v2/models/<name>/infer"'))
    assert float(line.rsplit(" ", 1)[1]) >= 2


async def test_a_model_copied_in_after_start_is_found_as_predict_finds_it(harness: Harness, repo: Path) -> None:
    build_random_model(repo, "late", "1", FAST_FEATURES, seed=5)
    for url in urls(harness):
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            meta = await client.get("/v2/models/late")
            assert meta.status_code == 200 and meta.json()["versions"] == ["1"], meta.text
            infer = await client.post("/v2/models/late/versions/1/infer", json=oip_body([[1, 2, 3]]))
            assert infer.status_code == 200 and infer.json()["model_version"] == "1"


async def test_open_breaker_makes_the_model_unready_and_fails_infer_like_predict(harness: Harness) -> None:
    for _ in range(5):
        harness.service.health.breakers.failure(("fast", "1"))
    predicted = await harness.predict(model_name="fast", features={"a": 1, "b": 2, "c": 3})
    assert predicted.status_code == 503
    for url in urls(harness):
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            ready = await client.get("/v2/models/fast/ready")
            assert ready.status_code == 503 and ready.json() == {"name": "fast", "ready": False}
            infer = await client.post("/v2/models/fast/infer", json=oip_body([[1, 2, 3], [4, 5, 6]]))
            assert infer.status_code == 503
            assert infer.json() == {"error": "row 0: circuit_open: " + predicted.json()["error"]["message"]}
        assert await with_triton(url, lambda c: c.is_model_ready("fast")) is False
