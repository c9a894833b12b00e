"""Remote versions end to end: two real model-router processes as the endpoints of a front service.

The endpoints are ``python app.py`` processes serving the conftest ``fast`` TFLite model on
their data ports; the front runs in-process with a repository whose ``remote`` model has one
version naming both endpoints (weights 3:1) and whose rule falls back to ``backup``.
Progress is read from the processes' own log lines and from the front's state, never slept on.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest
import trio

from actors import endpoint_health
from actors.storage.model_repo import Endpoint, parse_metadata, write_remote_version
from tests.conftest import FAST_FEATURES, fast_features, free_port, render_config, running_app
from tests.test_app_process import LogReader

ROOT = Path(__file__).resolve().parents[2]
RULES = textwrap.dedent("""\
    - match: {asset_class: "crypto"}
      model: remote
      fallback: backup
      priority: 10
    """)


class Endpoint_:
    """One endpoint process: a model-router serving ``fast`` on a fixed data port (so it can restart there)."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.port = free_port()
        self.data_port = free_port()
        self.process: subprocess.Popen[str] | None = None
        self.log: LogReader | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.data_port}"

    def start(self) -> None:
        env = {**os.environ, "MODEL_ROUTER_ADMIN_KEY": "endpoint-test-key", "PRELOAD_MODELS": "fast"}
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "app.py"), "--config", str(self.config), "--host", "127.0.0.1",
             "--port", str(self.port), "--data-port", str(self.data_port)],
            cwd=ROOT, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        self.log = LogReader(self.process)

    async def ready(self) -> None:
        assert self.log is not None
        await self.log.wait_for(f"data plane on {self.url}", timeout=20)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)


def remote_sample(metrics_text: str, endpoint: str, outcome: str) -> float:
    """A ``model_router_remote_requests_total`` value from the exposition text (0 when absent)."""
    for line in metrics_text.splitlines():
        if (line.startswith("model_router_remote_requests_total{") and f'endpoint="{endpoint}"' in line
                and f'outcome="{outcome}"' in line and 'model="remote"' in line):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def counts(client: httpx.AsyncClient, a: Endpoint_, b: Endpoint_, outcome: str = "ok") -> tuple[float, float]:
    text = (await client.get("/metrics")).text
    return remote_sample(text, a.url, outcome), remote_sample(text, b.url, outcome)


async def test_weighted_split_failover_fallback_and_recovery(repo: Path, tmp_path: Path) -> None:
    endpoint_config = tmp_path / "endpoint.yml"
    endpoint_config.write_text(render_config(repo, default="fast"))
    a, b = Endpoint_(endpoint_config), Endpoint_(endpoint_config)
    front_repo = tmp_path / "front-models"
    shutil.copytree(repo / "backup", front_repo / "backup")
    labels = parse_metadata((repo / "fast" / "1" / "metadata.yml").read_text()).labels
    metadata = parse_metadata(textwrap.dedent(f"""\
        features: {list(FAST_FEATURES)}
        labels: {list(labels)}
        timeout_ms: 5000
        endpoints:
          - {{url: "{a.url}", model: fast, weight: 3}}
          - {{url: "{b.url}", model: fast, version: 1, weight: 1}}
        """))
    assert metadata.endpoints == (Endpoint(a.url, "fast", None, 3.0), Endpoint(b.url, "fast", "1", 1.0))
    write_remote_version(front_repo, "remote", "1", metadata)
    front_config = tmp_path / "front.yml"
    front_config.write_text(render_config(front_repo, rules=RULES, default="backup"))
    routed = {"asset_class": "crypto", "horizon_ms": 5}
    try:
        a.start()
        b.start()
        await a.ready()
        await b.ready()
        async with running_app(front_config, endpoint_check_seconds=0.2) as front:
            # The same answer as the endpoint's own model, for the same features.
            async with httpx.AsyncClient(base_url=a.url, timeout=10) as direct:
                for value in (0.1, 0.5, 2.0):
                    own = (await direct.post("/predict", json={"model_name": "fast",
                                                               "features": fast_features(value)})).json()
                    via = (await front.predict(**routed, features=fast_features(value))).json()
                    assert via["model"] == {"name": "remote", "version": "1"}
                    assert "fallback_from" not in via
                    assert via["prediction"]["signal"] == own["prediction"]["signal"]
                    for label, p in own["prediction"]["probabilities"].items():
                        assert via["prediction"]["probabilities"][label] == pytest.approx(p, abs=2e-6)
            # A batch through the front is one OIP call to an endpoint, answered row by row.
            batch = (await front.client.post("/predict/batch", json={"requests": [
                {**routed, "features": fast_features(v)} for v in (0.1, 0.5, 2.0)]})).json()
            assert batch["failed"] == 0
            assert [p["model"]["name"] for p in batch["predictions"]] == ["remote"] * 3

            # Weights 3:1 split the traffic 3:1 (smooth weighted round robin is exact; bound generously).
            before = await counts(front.client, a, b)
            for i in range(200):
                r = await front.predict(**routed, features=fast_features(i / 100))
                assert r.status_code == 200 and r.json()["model"]["name"] == "remote"
            after = await counts(front.client, a, b)
            to_a, to_b = after[0] - before[0], after[1] - before[1]
            assert to_a + to_b == 200
            assert 130 <= to_a <= 170, (to_a, to_b)

            # One endpoint dies: every request is still answered by the remote model (failover
            # inside the call), and after its breaker opens it gets no more attempts.
            a.kill()
            before = await counts(front.client, a, b)
            for i in range(60):
                r = await front.predict(**routed, features=fast_features(i / 10))
                assert r.status_code == 200, r.text
                assert r.json()["model"]["name"] == "remote" and "fallback_from" not in r.json()
            after = await counts(front.client, a, b)
            assert after[1] - before[1] == 60 and after[0] == before[0]
            errors_a = (await counts(front.client, a, b, "error"))[0]
            assert errors_a <= 3  # the breaker's threshold, or fewer when the health check noticed first
            verdicts = await endpoint_health.check_round(front.service.predictor.remote, front.service.cache)
            assert verdicts == {f"{a.url}/v2/health/ready": False, f"{b.url}/v2/health/ready": True}

            # Both die: routed requests answer from the rule's fallback model.
            b.kill()
            own = (await front.predict(model_name="backup", features=fast_features())).json()
            for _ in range(10):
                r = await front.predict(**routed, features=fast_features())
                assert r.status_code == 200, r.text
                body = r.json()
                assert body["model"]["name"] == "backup" and body["fallback_from"] == "remote"
                assert body["prediction"] == own["prediction"]

            # One comes back on its port: the periodic health check lets it in again.
            a.start()
            await a.ready()
            with trio.fail_after(5):
                while True:
                    body = (await front.predict(**routed, features=fast_features())).json()
                    if body["model"]["name"] == "remote":
                        break
                    await trio.sleep(0.05)
            text = (await front.client.get("/metrics")).text
            assert f'model_router_remote_endpoint_up{{endpoint="{a.url}",model="remote",version="1"}} 1.0' in text
            assert f'model_router_remote_endpoint_up{{endpoint="{b.url}",model="remote",version="1"}} 0.0' in text
            assert "model_router_remote_latency_seconds_count" in text
    finally:
        a.kill()
        b.kill()
