"""The data-plane port answers exactly as the main port does, route by route (the real service)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from tests.conftest import FAST_FEATURES, Harness, fast_features, free_port, running_app, window_features

# Fields that legitimately differ between two calls (timing, generated ids, the worker's clock).
VOLATILE = {"latency_ms", "uptime_s", "correlation_id"}


def stable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: stable(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [stable(v) for v in value]
    return value


BODIES: list[tuple[str, str, Any]] = [
    ("by name", "/predict", {"model_name": "fast", "features": fast_features(), "correlation_id": "c1"}),
    ("routed", "/predict", {"asset_class": "crypto", "horizon_ms": 10, "symbol": "BTC", "features": fast_features(),
                            "correlation_id": "c2"}),
    ("windowed", "/predict", {"model_name": "windowed", "features": window_features(), "correlation_id": "c3"}),
    ("unknown field", "/predict", {"model_name": "fast", "features": fast_features(), "modle_version": "2"}),
    ("no features", "/predict", {"model_name": "fast"}),
    ("missing feature", "/predict", {"model_name": "fast", "features": {"a": 1.0}}),
    ("unknown model", "/predict", {"model_name": "ghost", "features": fast_features()}),
    ("unknown version", "/predict", {"model_name": "fast", "model_version": "9", "features": fast_features()}),
    ("not an object", "/predict", [1, 2, 3]),
    ("batch", "/predict/batch", {"requests": [
        {"model_name": "fast", "features": fast_features(), "correlation_id": "b1"},
        {"model_name": "fast", "features": {"a": 1}, "correlation_id": "b2"},
        {"asset_class": "crypto", "horizon_ms": 10, "features": fast_features(), "correlation_id": "b3"}]}),
    ("batch-level field", "/predict/batch", {"requests": [{"model_name": "fast", "features": fast_features()}],
                                             "model_version": "2"}),
    ("empty batch", "/predict/batch", {"requests": []}),
]
RAW: list[tuple[str, str, bytes]] = [
    ("malformed JSON", "/predict", b'{"model_name": "fast", "features": {'),
    ("NaN token", "/predict", b'{"model_name": "fast", "features": {"a": NaN, "b": 1, "c": 1}}'),
    ("empty body", "/predict", b""),
    ("huge number", "/predict", b'{"model_name": "fast", "features": {"a": 1e999, "b": 1, "c": 1}}'),
]


async def both(h: Harness, method: str, path: str, **kwargs: Any) -> tuple[httpx.Response, httpx.Response]:
    assert h.data_url is not None
    async with httpx.AsyncClient(base_url=h.data_url, timeout=10) as data:
        main = await h.client.request(method, path, **kwargs)
        other = await data.request(method, path, **kwargs)
    return main, other


@pytest.fixture
async def harness(config_path: Path) -> Any:
    async with running_app(config_path, data_port=free_port()) as h:
        await h.service.cache.get("fast")
        yield h


async def test_prediction_routes_answer_alike(harness: Harness) -> None:
    for name, path, body in BODIES:
        main, data = await both(harness, "POST", path, json=body)
        assert (main.status_code, data.status_code) == (main.status_code, main.status_code), name
        assert data.headers["content-type"] == "application/json", name
        assert stable(data.json()) == stable(main.json()), name
    for name, path, raw in RAW:
        main, data = await both(harness, "POST", path, content=raw, headers={"content-type": "application/json"})
        assert data.status_code == main.status_code, (name, main.text, data.text)
        assert data.json() == main.json(), name
        assert set(data.json()["error"]) == {"code", "message", "details"}, name


async def test_health_routes_answer_alike(harness: Harness) -> None:
    for path in ("/health", "/health/ready"):
        main, data = await both(harness, "GET", path)
        assert main.status_code == data.status_code == 200
        assert stable(main.json()) == stable(data.json())
        assert set(main.json()) == set(data.json())


async def test_other_routes_are_404_and_wrong_methods_405_with_allow(harness: Harness) -> None:
    _main, data = await both(harness, "GET", "/models")
    assert data.status_code == 404 and data.json()["error"]["code"] == "not_found"
    main, data = await both(harness, "GET", "/predict")
    assert main.status_code == data.status_code == 405
    assert data.headers["allow"] == main.headers["allow"] == "POST"
    assert data.json()["error"]["code"] == main.json()["error"]["code"] == "method_not_allowed"


async def test_metrics_health_and_breakers_see_data_plane_requests(harness: Harness) -> None:
    registry = harness.service.metrics.registry
    labels = {"model_name": "fast", "status": "ok"}
    before = registry.get_sample_value("inference_requests_total", labels) or 0
    assert harness.data_url is not None
    async with httpx.AsyncClient(base_url=harness.data_url, timeout=10) as data:
        for _ in range(5):
            r = await data.post("/predict", json={"model_name": "fast", "features": fast_features()})
            assert r.status_code == 200
    assert registry.get_sample_value("inference_requests_total", labels) == before + 5
    assert registry.get_sample_value("model_router_http_request_duration_seconds_count",
                                     {"route": "/predict", "method": "POST", "status": "200"}) >= 5
    await trio.testing.wait_all_tasks_blocked()  # the health monitor has folded the observations in
    assert harness.service.health.snapshot("fast", "1").count >= 5


async def test_a_batch_too_large_for_the_body_limit_is_413_before_it_is_read(harness: Harness) -> None:
    assert harness.data_url is not None
    host, port = harness.data_url.removeprefix("http://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(b"POST /predict/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                              b"Content-Length: 999999999\r\n\r\n")
        with trio.fail_after(5):
            head = await stream.receive_some(65536)
        assert head.startswith(b"HTTP/1.1 413 ")
        body = json.loads(head.split(b"\r\n\r\n", 1)[1])
        assert body["error"]["code"] == "payload_too_large"


async def test_no_data_plane_when_the_port_is_zero(config_path: Path) -> None:
    async with running_app(config_path, data_port=0) as h:
        assert h.data_url is None
        assert FAST_FEATURES  # the main port still serves
        assert (await h.predict(model_name="fast", features=fast_features())).status_code == 200
