"""X-Request-ID on both ports: echoed when safe, generated when absent or unsafe, one per request."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Harness, fast_features, free_port, running_app


@pytest.fixture
async def harness(config_path: Path) -> Any:
    async with running_app(config_path, data_port=free_port()) as h:
        await h.service.cache.get("fast")
        yield h


@pytest.mark.parametrize(("method", "path", "body"), [
    ("POST", "/predict", {"model_name": "fast", "features": fast_features()}),
    ("POST", "/predict", {"model_name": "ghost", "features": fast_features()}),
    ("GET", "/health", None),
    ("POST", "/v2/models/fast/infer", {"inputs": [{"name": "features", "shape": [1, 3], "datatype": "FP32",
                                                   "data": [1, 2, 3]}]}),
    ("GET", "/v2/models/fast", None),
])
async def test_request_ids_are_echoed_or_generated_on_both_ports(harness: Harness, method: str, path: str,
                                                                 body: Any) -> None:
    assert harness.data_url is not None
    for url in (harness.url, harness.data_url):
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            given = await client.request(method, path, json=body, headers={"X-Request-ID": "trace-0042"})
            assert given.headers["x-request-id"] == "trace-0042", (url, path)
            first = await client.request(method, path, json=body)
            second = await client.request(method, path, json=body)
            too_long = await client.request(method, path, json=body, headers={"X-Request-ID": "x" * 200})
        generated = [first.headers["x-request-id"], second.headers["x-request-id"], too_long.headers["x-request-id"]]
        assert len(set(generated)) == 3 and all(0 < len(g) <= 128 for g in generated), generated
        assert given.status_code == first.status_code  # the id changes nothing else
