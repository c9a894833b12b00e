"""RemoteCaller against raw sockets: timeouts, bad answers, breakers and failover, without a full service."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from pathlib import Path

import httpx
import numpy as np
import pytest
import trio

from actors.core.errors import Unavailable
from actors.serving.metrics import Metrics
from actors.serving.remote_model import (
    EndpointsState,
    RemoteCaller,
    RemoteFailure,
    RemoteModel,
    read_probabilities,
)
from actors.storage.model_repo import parse_metadata

Reply = Callable[[dict], bytes | None]  # the request body -> raw HTTP answer; None: never answer


async def serve(reply: Reply, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """A tiny HTTP/1.1 server: one request per connection, answered by ``reply``."""

    async def handle(stream: trio.SocketStream) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            data += await stream.receive_some(65536)
        head, body = data.split(b"\r\n\r\n", 1)
        length = int(next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")).split(b":")[1])
        while len(body) < length:
            body += await stream.receive_some(65536)
        answer = reply(json.loads(body))
        if answer is None:
            await trio.sleep_forever()
        await stream.send_all(answer)
        await stream.aclose()

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(handle, listeners)


def http(status: int, body: object) -> bytes:
    raw = json.dumps(body).encode()
    return (f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(raw)}\r\n"
            "Connection: close\r\n\r\n").encode() + raw


def probabilities(request: dict) -> bytes:
    rows = request["inputs"][0]["shape"][0]
    return http(200, {"outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [rows, 3],
                                   "data": [0.2, 0.3, 0.5] * rows}]})


def remote_model(ports: list[int], timeout_ms: int = 2000) -> RemoteModel:
    entries = "".join(f'  - {{url: "http://127.0.0.1:{p}", model: m}}\n' for p in ports)
    metadata = parse_metadata(f"features: [a, b, c]\nlabels: [S, H, B]\ntimeout_ms: {timeout_ms}\n"
                              f"endpoints:\n{entries}")
    return RemoteModel("r", "1", Path("."), metadata, 0.0, EndpointsState.fresh(len(ports)))


def outcome_count(metrics: Metrics, port: int, outcome: str) -> float:
    return metrics.registry.get_sample_value("model_router_remote_requests_total", {
        "model": "r", "version": "1", "endpoint": f"http://127.0.0.1:{port}", "outcome": outcome}) or 0.0


def test_read_probabilities_accepts_a_lone_output_and_checks_sizes() -> None:
    lone = {"outputs": [{"name": "output-0", "data": [0.1, 0.9, 0.4, 0.6]}]}
    assert np.allclose(read_probabilities(lone, 2, 2), [[0.1, 0.9], [0.4, 0.6]])
    for bad in ({}, {"outputs": []}, {"outputs": [{"name": "x", "data": [1]}, {"name": "y", "data": [1]}]},
                {"outputs": [{"name": "probabilities", "data": [0.1]}]},
                {"outputs": [{"name": "probabilities", "data": ["a", "b"]}]}):
        with pytest.raises(RemoteFailure):
            read_probabilities(bad, 1, 2)


async def test_failover_timeout_bad_answers_and_breaker(nursery: trio.Nursery) -> None:
    good = await nursery.start(serve, probabilities)
    hung = await nursery.start(serve, lambda _request: None)
    broken = await nursery.start(serve, lambda _request: http(500, {"error": "boom"}))
    metrics = Metrics()
    async with httpx.AsyncClient() as client:
        caller = RemoteCaller(metrics, client=client)
        rows = np.zeros((2, 3), dtype=np.float32)
        # The hung endpoint times out within the bound, the broken one errors: the good one answers each call.
        model = remote_model([hung, broken, good], timeout_ms=150)
        with trio.fail_after(5):
            for _ in range(6):
                assert np.allclose(await caller.call(model, rows), [[0.2, 0.3, 0.5]] * 2)
        assert outcome_count(metrics, good, "ok") == 6
        assert outcome_count(metrics, hung, "timeout") == 3  # then its breaker is open
        assert outcome_count(metrics, broken, "error") == 3
        assert [b.state for b in model.state.breakers] == ["open", "open", "closed"]
        # With every endpoint failing or shut out, the call is Unavailable (the predictor falls back).
        model = remote_model([broken])
        for _ in range(3):
            with pytest.raises(Unavailable, match="no endpoint answered"):
                await caller.call(model, rows)
        with pytest.raises(Unavailable, match="every endpoint is down"):
            await caller.call(model, rows)
        assert outcome_count(metrics, broken, "refused") == 1
        # A passing health check closes the breaker and puts the endpoint back.
        model.state = model.state.checked(0, True)
        assert model.state.breakers[0].state == "closed"
        model.state = model.state.checked(0, False)
        with pytest.raises(Unavailable, match="every endpoint is down"):
            await caller.call(model, rows)
    with pytest.raises(RemoteFailure, match="not running"):
        await partial(RemoteCaller(metrics).post, model, model.endpoints[0], rows)()
