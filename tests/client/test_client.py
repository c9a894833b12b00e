"""The client against real services: a service process for the blocking client, the in-process app for trio.

Retries are shown against a real socket server in a thread that answers what the test
scripts (503s, then a prediction) and counts the requests it got; refused connections
against a socket that is bound but not yet listening.
"""

from __future__ import annotations

import http.server
import json
import os
import queue
import random
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from actors.build.demo_models import build_random_model
from actors.client.async_client import AsyncRemoteInferenceClient
from actors.client.errors import (
    BadRequest,
    FeedError,
    LocalModeUnsupported,
    NotFound,
    ServiceUnavailable,
    ServiceUnreachable,
    Unauthorized,
    Unprocessable,
)
from actors.client.local import LocalStartupError
from actors.client.results import ItemError, PredictInput, Prediction
from actors.client.settings import RetryPolicy
from actors.client.sync_client import RemoteInferenceClient
from tests.conftest import (
    ADMIN_KEY,
    FAST_FEATURES,
    RedisServer,
    fast_features,
    render_config,
    running_app,
    window_features,
)

ROOT = Path(__file__).resolve().parents[2]
FAST_RETRY = RetryPolicy(attempts=4, base_delay_s=0.001, max_delay_s=0.01)
NO_ENV: dict[str, str] = {}


# ------------------------------------------------------------------ a service process ----


@attrs.frozen
class ServiceProcess:
    process: subprocess.Popen[str]
    url: str
    config: Path


def start_service(config: Path, port: int | None = None) -> ServiceProcess:
    """``model-router serve`` (the CLI's delegation to app.main) on a free port; returns once it listens."""
    if port is None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
    env = {**os.environ, "MODEL_ROUTER_ADMIN_KEY": ADMIN_KEY}
    process = subprocess.Popen([sys.executable, "-m", "actors.client.cli", "serve", "--config", str(config),
                                "--host", "127.0.0.1", "--port", str(port)],
                               cwd=ROOT, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.put(line)
        lines.put("")

    threading.Thread(target=read, daemon=True).start()
    seen = []
    while True:
        line = lines.get(timeout=30)
        seen.append(line)
        if not line:
            raise AssertionError("service exited before serving:\n" + "".join(seen))
        if f"on http://127.0.0.1:{port}" in line:
            return ServiceProcess(process, f"http://127.0.0.1:{port}", config)


def stop_service(running: ServiceProcess) -> None:
    running.process.terminate()
    assert running.process.wait(timeout=15) == 0


@contextmanager
def serving(root: Path, redis_url: str | None = None) -> Iterator[ServiceProcess]:
    """The conftest models plus ``fast`` version 2 (policy "latest": version 2 serves), and the rules."""
    repo = root / "models"
    build_random_model(repo, "fast", "2", FAST_FEATURES, seed=21)
    (root / "conf").mkdir()
    config = root / "conf" / "rules.yml"
    config.write_text(render_config(repo, redis_url=redis_url))
    running = start_service(config)
    try:
        yield running
    finally:
        if running.process.poll() is None:
            stop_service(running)


@pytest.fixture(scope="module")
def shared_service(built_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """For tests that change nothing the others see (no switch, no reload): one process for all of them."""
    root = tmp_path_factory.mktemp("shared-service")
    shutil.copytree(built_repo, root / "models")
    with serving(root) as running:
        yield running


@pytest.fixture
def service(built_repo: Path, tmp_path: Path) -> Iterator[ServiceProcess]:
    """A service of the test's own, for tests that switch versions."""
    shutil.copytree(built_repo, tmp_path / "models")
    with serving(tmp_path) as running:
        yield running


def remote(url: str, **kwargs: Any) -> RemoteInferenceClient:
    kwargs.setdefault("admin_key", ADMIN_KEY)
    return RemoteInferenceClient(url, environ=NO_ENV, **kwargs)


def comparable(p: Prediction) -> Prediction:
    """A prediction without what legitimately differs between two runs: timings and where it ran."""
    return attrs.evolve(p, latency_ms=0.0, elapsed_ms=0.0, source="")


# ------------------------------------------------------------------ blocking client ----


def test_predict_batch_correlation_ids_and_feedback(shared_service: ServiceProcess) -> None:
    with remote(shared_service.url) as client:
        p = client.predict(fast_features(0.3), asset_class="crypto", horizon_ms=1000, symbol="S1",
                           correlation_id="corr-1")
        assert (p.correlation_id, p.model, p.version, p.rule_index, p.symbol) == ("corr-1", "fast", "2", 0, "S1")
        assert p.signal in p.labels and p.confidence == p.probabilities[p.signal]
        assert abs(sum(p.probabilities.values()) - 1) < 1e-3 and p.source == "remote" and p.elapsed_ms > 0
        generated = [client.predict(fast_features(), model_name="fast").correlation_id for _ in range(2)]
        assert all(len(g) == 32 for g in generated) and generated[0] != generated[1]

        batch = client.predict_batch([
            PredictInput(fast_features(0.3), "crypto", 1000, symbol="S1", correlation_id="b0"),
            {"features": window_features(), "asset_class": "crypto", "horizon_ms": 120000},
            {"features": {"a": 1.0}, "model_name": "fast", "correlation_id": "b2"},
            {"features": fast_features(), "model_name": "nope"},
        ])
        assert (batch.count, batch.failed) == (4, 2)
        first, second, bad, missing = batch.items
        assert isinstance(first, Prediction) and first.correlation_id == "b0"
        assert comparable(first) == attrs.evolve(comparable(p), correlation_id="b0")  # same model, same answer
        assert isinstance(second, Prediction) and second.model == "windowed" and len(second.correlation_id) == 32
        assert isinstance(bad, ItemError) and bad.correlation_id == "b2" and isinstance(bad.error, Unprocessable)
        assert isinstance(missing, ItemError) and isinstance(missing.error, NotFound)

        assert client.feedback("corr-1", p.signal)["correct"] is True
        with pytest.raises(NotFound):
            client.feedback("corr-1", p.signal)  # one outcome per prediction


def test_service_errors_are_typed(shared_service: ServiceProcess) -> None:
    with remote(shared_service.url) as client:
        with pytest.raises(Unprocessable) as invalid:
            client.predict({"a": 1.0}, model_name="fast")
        assert invalid.value.status == 422 and invalid.value.details
        with pytest.raises(BadRequest) as shape:
            client.predict(fast_features(), asset_class="crypto")  # no horizon
        assert shape.value.code == "bad_request"
        with pytest.raises(NotFound) as unknown:
            client.predict(fast_features(), model_name="nope")
        assert unknown.value.code == "model_not_found" and "available" in unknown.value.details
        with pytest.raises(NotFound):
            client.operation("sw-nope")
        with pytest.raises(FeedError, match="bad_since: since needs Redis"):
            client.switches(since="1-0")  # refused, not retried: this service has no Redis
    with remote(shared_service.url, admin_key="wrong") as intruder, pytest.raises(Unauthorized) as refused:
        intruder.switch("fast", "1")
    assert refused.value.to_body()["error"]["code"] == "unauthenticated"


def test_switch_progress_feed_and_rollback(service: ServiceProcess) -> None:
    symbols = [f"S{i}" for i in range(4)]
    with remote(service.url) as client, client.switches(model="fast") as feed:
        for symbol in symbols:  # the feed reports symbols seen in traffic
            assert client.predict(fast_features(), asset_class="crypto", horizon_ms=1000, symbol=symbol).version == "2"
        op = client.switch("fast", "1")
        events = [feed.next(timeout=10) for _ in symbols]
        assert {e.symbol for e in events} == set(symbols)
        assert {(e.old_model, e.new_model, e.reason, e.operation_id) for e in events} == {
            ("fast@2", "fast@1", "switch_complete", op.id)}

        progress: list[tuple[str, float]] = []
        gradual = client.switch("fast", "2", "gradual", steps=[50, 100], interval_s=0.2)
        final = client.wait(gradual.id, poll_s=0.05, timeout_s=20,
                            on_progress=lambda o: progress.append((o.state, o.weight_percent)))
        assert final.succeeded and final.weight_percent == 100 and final.steps == (50.0, 100.0)
        assert progress[-1] == ("completed", 100.0) and len(progress) >= 2
        assert [e["event"] for e in final.log][:3] == ["created", "started", "step"]
        moved = [feed.next(timeout=10) for _ in symbols]
        assert {e.new_model for e in moved} == {"fast@2"} and {e.operation_id for e in moved} == {gradual.id}

        back = client.wait(client.rollback("fast").id, poll_s=0.05, timeout_s=20)
        assert back.succeeded and back.to_version == "1"
        assert client.predict(fast_features(), asset_class="crypto", horizon_ms=1000, symbol="S0").version == "1"
        (fast,) = [m for m in client.models() if m.name == "fast"]
        assert fast.policy == "pinned" and fast.active_version == "1"
        assert {v.version for v in fast.versions} == {"1", "2"}
        status = client.status()
        assert status.ready and status.running_switches == () and "fast@1" in status.models_loaded


def test_feed_resumes_across_a_service_restart_without_missing_events(
        built_repo: Path, tmp_path: Path, redis_server: RedisServer) -> None:
    """The subscription reconnects by itself and, the service having Redis, replays what it missed."""
    shutil.copytree(built_repo, tmp_path / "models")
    patient = RetryPolicy(attempts=50, base_delay_s=0.02, max_delay_s=0.5)
    with serving(tmp_path, redis_server.url) as first, remote(first.url, retry=patient) as client, \
            client.switches(model="fast") as feed:
        client.predict(fast_features(), asset_class="crypto", horizon_ms=1000, symbol="R1")
        client.switch("fast", "1")
        before = feed.next(timeout=10)
        assert (before.symbol, before.new_model, before.replay) == ("R1", "fast@1", False) and before.stream_id

        stop_service(first)  # the feed's socket closes under it
        port = int(first.url.rsplit(":", 1)[1])
        second = start_service(first.config, port)
        try:
            client.predict(fast_features(), asset_class="crypto", horizon_ms=1000, symbol="R1")
            op = client.switch("fast", "2")  # published while the feed is still disconnected
            after = feed.next(timeout=30)
            assert (after.symbol, after.old_model, after.new_model) == ("R1", "fast@1", "fast@2")
            # Replayed from the stream if the feed was still reconnecting, live if it was back already:
            # either way it arrives exactly once, after the event seen before the restart.
            assert after.operation_id == op.id and after.stream_id > before.stream_id
            assert feed.state.subscribed == 2 and feed.state.redis
        finally:
            feed.close()  # an open WebSocket would hold the service's graceful drain for its full 5 s
            stop_service(second)


def test_local_fallback_answers_exactly_as_the_service(shared_service: ServiceProcess) -> None:
    bodies: list[dict[str, Any]] = [
        {"features": fast_features(0.3), "asset_class": "crypto", "horizon_ms": 1000, "symbol": "S1"},
        {"features": window_features(0.7), "asset_class": "crypto", "horizon_ms": 120000},
        {"features": fast_features(0.9), "model_name": "backup", "correlation_id": "n1"},
        {"features": fast_features(0.1), "asset_class": "equity", "horizon_ms": 5},  # default model
    ]
    env = {"REMOTE_INFERENCE_ENABLED": "false", "MODEL_ROUTER_CONFIG": str(shared_service.config)}
    with remote(shared_service.url) as far, RemoteInferenceClient(environ=env) as near:
        assert near.is_local and not far.is_local
        for index, body in enumerate(bodies):
            item = PredictInput(**{**body, "correlation_id": body.get("correlation_id", f"c{index}")})
            there, here = far.predict(item), near.predict(item)
            assert here.source == "local" and comparable(here) == comparable(there)
        far_batch = far.predict_batch([PredictInput(**b, correlation_id=f"b{i}") for i, b in enumerate(bodies[:2])])
        near_batch = near.predict_batch([PredictInput(**b, correlation_id=f"b{i}") for i, b in enumerate(bodies[:2])])
        assert [comparable(p) for p in near_batch.predictions] == [comparable(p) for p in far_batch.predictions]
        assert near.route("crypto", 120000) == far.route("crypto", 120000)
        with pytest.raises(NotFound):
            near.predict(fast_features(), model_name="nope")
        with pytest.raises(LocalModeUnsupported):
            near.switch("fast", "1")
        with pytest.raises(LocalModeUnsupported):
            near.switches()


def test_local_mode_refuses_an_invalid_config(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("model_router:\n  rules: []\n")
    with pytest.raises(LocalStartupError, match="default_model"):
        RemoteInferenceClient(remote=False, config=bad, environ=NO_ENV)


# ------------------------------------------------------------------ retries ----


class Scripted(http.server.ThreadingHTTPServer):
    """Answers each request with the next (status, body) of a script; the last entry repeats."""

    daemon_threads = True

    def __init__(self, script: list[tuple[int, dict[str, Any] | None]], *, listen: bool = True) -> None:
        super().__init__(("127.0.0.1", 0), ScriptedHandler, bind_and_activate=False)
        self.script = script
        self.requests: list[tuple[str, dict[str, Any], dict[str, str]]] = []
        self.server_bind()
        self.thread: threading.Thread | None = None
        if listen:
            self.listen()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def listen(self) -> None:
        self.server_activate()
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        if self.thread is not None:
            self.shutdown()
        self.server_close()


class ScriptedHandler(http.server.BaseHTTPRequestHandler):
    server: Scripted

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", 0))
        body = json.loads(self.rfile.read(length) or b"{}")
        self.server.requests.append((self.path, body, dict(self.headers)))
        status, answer = self.server.script[min(len(self.server.requests), len(self.server.script)) - 1]
        if answer is None:
            answer = {"error": {"code": "model_unavailable", "message": "try later", "details": {}}}
        elif "prediction" in answer:
            answer = {**answer, "correlation_id": body.get("correlation_id")}
        payload = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test asserts on ``server.requests`` instead."""


OK_ANSWER = {"prediction": {"signal": "HOLD", "confidence": 0.6, "probabilities": {"SELL": 0.2, "HOLD": 0.6,
             "BUY": 0.2}}, "model": {"name": "fast", "version": "1"}, "rule_index": None, "config_hash": "h",
             "latency_ms": 0.1}
UNAVAILABLE = (503, None)


@pytest.fixture
def scripted() -> Iterator[Callable[..., Scripted]]:
    servers: list[Scripted] = []

    def make(script: list[tuple[int, dict[str, Any] | None]], **kwargs: Any) -> Scripted:
        servers.append(Scripted(script, **kwargs))
        return servers[-1]

    yield make
    for server in servers:
        server.stop()


def test_503_is_retried_with_the_same_body_then_answers(scripted: Callable[..., Scripted]) -> None:
    server = scripted([UNAVAILABLE, UNAVAILABLE, (200, OK_ANSWER)])
    with RemoteInferenceClient(server.url, retry=FAST_RETRY, api_key="api-1", environ=NO_ENV) as client:
        p = client.predict(fast_features(), model_name="fast", correlation_id="r1")
    assert p.correlation_id == "r1" and p.signal == "HOLD"
    assert len(server.requests) == 3
    assert {r[1]["correlation_id"] for r in server.requests} == {"r1"}  # a retry is the same request
    assert all(r[2]["Authorization"] == "Bearer api-1" for r in server.requests)


def test_retries_are_bounded_and_4xx_is_never_retried(scripted: Callable[..., Scripted]) -> None:
    down = scripted([UNAVAILABLE])
    with RemoteInferenceClient(down.url, retry=FAST_RETRY, environ=NO_ENV) as client, \
            pytest.raises(ServiceUnavailable) as exhausted:
        client.predict(fast_features(), model_name="fast")
    assert len(down.requests) == FAST_RETRY.attempts and exhausted.value.code == "model_unavailable"

    bad = scripted([(400, {"error": {"code": "bad_request", "message": "no", "details": {}}}), (200, OK_ANSWER)])
    with RemoteInferenceClient(bad.url, retry=FAST_RETRY, environ=NO_ENV) as client, pytest.raises(BadRequest):
        client.predict(fast_features(), model_name="fast")
    assert len(bad.requests) == 1


class HookedRandom(random.Random):
    """Runs ``hook`` when the client asks for its first backoff delay: after the first attempt failed."""

    def __init__(self, hook: Callable[[], None]) -> None:
        super().__init__(1)
        self.hook: Callable[[], None] | None = hook
        self.delays = 0

    def uniform(self, a: float, b: float) -> float:
        self.delays += 1
        if self.hook is not None:
            hook, self.hook = self.hook, None
            hook()
        return super().uniform(a, b)


def test_connection_refused_is_retried_until_the_service_listens(scripted: Callable[..., Scripted]) -> None:
    server = scripted([(200, OK_ANSWER)], listen=False)  # bound, not listening: connections are refused
    rng = HookedRandom(server.listen)
    with RemoteInferenceClient(server.url, retry=FAST_RETRY, rng=rng, environ=NO_ENV) as client:
        assert client.predict(fast_features(), model_name="fast").signal == "HOLD"
    assert rng.delays == 1 and len(server.requests) == 1

    nobody = scripted([(200, OK_ANSWER)], listen=False)
    with RemoteInferenceClient(nobody.url, retry=FAST_RETRY, environ=NO_ENV) as client, \
            pytest.raises(ServiceUnreachable, match="after 4 attempts"):
        client.models()


async def test_async_client_retries_503_under_trio(scripted: Callable[..., Scripted]) -> None:
    server = scripted([UNAVAILABLE, (200, OK_ANSWER)])
    async with AsyncRemoteInferenceClient(server.url, retry=FAST_RETRY, environ=NO_ENV) as client:
        p = await client.predict(fast_features(), model_name="fast")
    assert len(server.requests) == 2 and p.correlation_id == server.requests[0][1]["correlation_id"]


# ------------------------------------------------------------------ async client (trio) ----


async def test_async_client_predicts_switches_and_follows_the_feed(config_path: Path, repo: Path) -> None:
    build_random_model(repo, "fast", "2", FAST_FEATURES, seed=21)
    async with running_app(config_path) as h, \
            AsyncRemoteInferenceClient(h.url, admin_key=ADMIN_KEY, environ=NO_ENV) as client:
        p = await client.predict(fast_features(), asset_class="crypto", horizon_ms=1000, symbol="A1",
                                 correlation_id="async-1")
        assert (p.correlation_id, p.model, p.version) == ("async-1", "fast", "2")
        batch = await client.predict_batch([PredictInput(fast_features(), model_name="fast", symbol="A2"),
                                            {"features": {}, "model_name": "fast"}])
        assert batch.failed == 1 and batch.items[0].version == "2" and isinstance(batch.items[1], ItemError)
        async with client.switches(model="fast") as events:
            op = await client.switch("fast", "1")
            seen = {}
            with trio.fail_after(10):
                async for event in events:
                    seen[event.symbol] = event
                    if len(seen) == 2:
                        break
        assert set(seen) == {"A1", "A2"}
        assert {(e.old_model, e.new_model, e.operation_id) for e in seen.values()} == {("fast@2", "fast@1", op.id)}
        with trio.fail_after(10):
            done = await client.wait(op.id, poll_s=0.05)
        assert done.succeeded
        assert (await client.operation(op.id)).state == "completed"
        with pytest.raises(NotFound):
            await client.model("nope")
        with pytest.raises(FeedError, match="since needs Redis"):
            async with client.switches(since="1-0"):
                pytest.fail("a refused subscription never starts")


async def test_async_local_mode_equals_the_running_service(config_path: Path) -> None:
    body = PredictInput(fast_features(0.4), "crypto", 1000, symbol="L1", correlation_id="same")
    async with running_app(config_path) as h, \
            AsyncRemoteInferenceClient(h.url, environ=NO_ENV) as far, \
            AsyncRemoteInferenceClient(remote=False, config=config_path, environ=NO_ENV) as near:
        there, here = await far.predict(body), await near.predict(body)
        assert near.is_local and here.source == "local"
        assert comparable(here) == comparable(there)
        with pytest.raises(Unprocessable):
            await near.predict({"a": 1.0}, model_name="fast")
        with pytest.raises(LocalModeUnsupported):
            await near.status()
    missing = config_path.parent / "missing.yml"
    with pytest.raises(LocalStartupError, match="cannot read config"):
        async with AsyncRemoteInferenceClient(remote=False, config=missing, environ=NO_ENV):
            pytest.fail("an unreadable config never starts")
