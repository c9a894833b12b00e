"""Shared fixtures: real TFLite models, a real Redis server, the real app on port 0.

Models are written by the project's own builder (random weights: fast, deterministic).
Redis tests get a private ``redis-server`` on a free port, so they can stop and restart
it without touching the machine's shared instance. The app runs in-process on
127.0.0.1:0 with Hypercorn, and tests talk to it over TCP with httpx.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import socket
import subprocess
import textwrap
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import redis
import trio

import app

# Services the tests start as processes serve no data plane unless a test asks for one: the
# default port (8001) would collide between tests and with a `make run` on the same machine.
os.environ.setdefault("MODEL_ROUTER_DATA_PORT", "0")
from actors.build.demo_models import build_random_model
from actors.web.service import Service

ADMIN_KEY = "test-admin-key-not-a-secret"
FAST_FEATURES = ("a", "b", "c")
WINDOW_FEATURES = ("x", "y")
WINDOW = 4


@pytest.fixture(scope="session")
def built_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three small models: ``fast`` and ``backup`` (features a, b, c), ``windowed`` (x, y; window 4)."""
    root = tmp_path_factory.mktemp("model-repo")
    build_random_model(root, "fast", "1", FAST_FEATURES, seed=1)
    build_random_model(root, "backup", "1", FAST_FEATURES, seed=3)
    build_random_model(root, "windowed", "1", WINDOW_FEATURES, window=WINDOW, seed=2)
    return root


@pytest.fixture
def repo(built_repo: Path, tmp_path: Path) -> Path:
    """A private copy each test may add versions to or corrupt."""
    target = tmp_path / "models"
    shutil.copytree(built_repo, target)
    return target


def render_config(
    repo: Path,
    *,
    rules: str | None = None,
    default: str = "backup",
    redis_url: str | None = None,
    reload: str = "",
    config_extra: str = "",
    switching: str = "",
) -> str:
    rules = (
        rules
        if rules is not None
        else textwrap.dedent("""\
        - match: {asset_class: "crypto", horizon_ms: "<60000"}
          model: fast
          fallback: backup
          priority: 10
          description: crypto short
        - match: {asset_class: "crypto", horizon_ms: ">=60000"}
          model: windowed
          priority: 20
          description: crypto long
        """)
    )
    body = textwrap.indent(rules, "    ")
    redis_line = json.dumps(redis_url)
    return (
        "model_router:\n"
        f"  rules:\n{body}"
        "  config:\n"
        f"    default_model: {default}\n"
        f"    redis_url: {redis_line}\n"
        f"    model_repository: {json.dumps(str(repo))}\n"
        f"{config_extra}"
        "  reload:\n"
        "    debounce_ms: 20\n"
        f"{reload}"
        + (f"  switching:\n{switching}" if switching else "")
    )


@pytest.fixture
def config_path(tmp_path: Path, repo: Path) -> Path:
    folder = tmp_path / "conf"
    folder.mkdir()
    path = folder / "rules.yml"
    path.write_text(render_config(repo))
    return path


@pytest.fixture
def restored_thresholds() -> Iterator[None]:
    """The garbage collector's thresholds as they were: a test that sets them (the service does) puts them back."""
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)


def fast_features(value: float = 0.5) -> dict[str, float]:
    return {name: value for name in FAST_FEATURES}


def window_features(value: float = 0.25) -> dict[str, list[float]]:
    return {name: [value] * WINDOW for name in WINDOW_FEATURES}


@attrs.frozen
class Harness:
    """A running app and an HTTP client bound to it."""

    url: str
    service: Service
    client: httpx.AsyncClient
    data_url: str | None = None

    async def predict(self, **body: Any) -> httpx.Response:
        return await self.client.post("/predict", json=body)

    async def admin_post(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.client.post(path, headers={"X-Admin-Key": ADMIN_KEY}, **kwargs)


@asynccontextmanager
async def running_app(config: Path, **options: Any) -> AsyncIterator[Harness]:
    """Start the whole service on 127.0.0.1:0; stop it gracefully on exit."""
    options.setdefault("admin_key", ADMIN_KEY)
    opts = app.Options(config=config, host="127.0.0.1", port=0, **options)
    async with trio.open_nursery() as nursery:
        running: app.Running = await nursery.start(app.serve, opts)
        try:
            async with httpx.AsyncClient(base_url=running.url, timeout=10) as client:
                yield Harness(running.url, running.service, client, running.data_url)
        finally:
            running.service.stop.set()


async def wait_ready(harness: Harness) -> None:
    """Wait (event-driven) until the default model is loaded."""
    default = harness.service.router.config.settings.default_model
    await harness.service.cache.get(default)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@attrs.define
class RedisServer:
    """A private redis-server: start, stop (SIGKILL-free shutdown), restart on the same port."""

    folder: Path
    port: int = attrs.field(factory=free_port)
    process: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.folder),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert self.process.stdout is not None
        for line in self.process.stdout:  # blocks until Redis says it is ready, or exits
            if "Ready to accept connections" in line:
                return
        raise RuntimeError(f"redis-server on port {self.port} exited before it was ready")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=5, decode_responses=True)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed (.ci/run installs it)")
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


class Subscriber:
    """A real Redis pub/sub subscriber; blocking reads run in a worker thread."""

    def __init__(self, server: RedisServer, channel: str) -> None:
        # Keep the client: a collected client disconnects its pool, pub/sub connection included.
        self.client = server.client()
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.subscribe(channel)
        self.pubsub.get_message(timeout=5)  # the subscribe confirmation

    async def next_json(self, timeout: float = 5.0) -> dict[str, Any]:
        message = await trio.to_thread.run_sync(
            lambda: self.pubsub.get_message(ignore_subscribe_messages=True, timeout=timeout)
        )
        assert message is not None, "no message within the timeout"
        return json.loads(message["data"])

    def close(self) -> None:
        self.pubsub.close()
        self.client.close()
