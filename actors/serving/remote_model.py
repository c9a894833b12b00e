"""Remote versions: a model version answered by other servers over the Open Inference Protocol.

Why OIP as the wire format: the service already serves it (``/v2/models/{name}/infer``), so
another model-router is an endpoint as is, and so is any KServe v2 / Triton server. A
remote version's ``metadata.yml`` keeps ``features``, ``window`` and ``labels`` so request
validation and answers are identical to a local version; only ``predict`` differs: instead
of an interpreter call it is an awaited HTTP call, which the predictor takes on a separate
branch (the dynamic batcher and the synchronous fast path stay local-only).

Per call: the endpoints whose health check is up and whose breaker admits a call are
eligible; smooth weighted round robin (``actors/core/endpoint_pick.py``) picks one; if that
call fails (refused, timeout, HTTP error, bad answer) the other eligible endpoints are
tried, heaviest first. When none is left the call raises ``Unavailable``, which sends the
predictor down its usual chain (stable version, the rule's fallback, the default model).

Each endpoint has its own circuit breaker (``actors/core/breaker.py`` with the trio clock)
and an ``up`` flag set by the active health checks of ``actors/endpoint_health.py``; a
passing check closes an open breaker, so a restarted endpoint is back within one check.
State lives in one immutable ``EndpointsState`` per model, rebound after each change, and
is only touched from the event loop thread.
"""

from __future__ import annotations

import itertools
import os
import time
from pathlib import Path
from typing import Any

import attrs
import httpx
import numpy as np
import trio

from actors.core.breaker import Breaker, BreakerSettings, allow, on_failure, on_success, release_probe
from actors.core.endpoint_pick import failover_order, pick
from actors.core.errors import Unavailable
from actors.serving.metrics import Metrics
from actors.storage.model_repo import (
    METADATA_FILE,
    MODEL_FILE,
    Endpoint,
    MetadataError,
    ModelMetadata,
    parse_metadata,
)
from actors.storage.tflite_backend import ModelLoadError

# A dead endpoint is skipped after a few failures in a row; the active health check (or a
# probe after the open period) lets it back in.
ENDPOINT_BREAKER = BreakerSettings(failure_threshold=3, open_seconds=5.0, half_open_probes=1)
_REQUEST_IDS = itertools.count(1)
_ID_PREFIX = os.urandom(4).hex()


@attrs.frozen
class EndpointsState:
    """Per-endpoint breaker, health-check verdict and round-robin credit of one remote version."""

    breakers: tuple[Breaker, ...]
    up: tuple[bool, ...]
    credit: tuple[float, ...]

    @classmethod
    def fresh(cls, count: int) -> EndpointsState:
        """Endpoints start up: a new version serves before its first health check has run."""
        return cls((Breaker(),) * count, (True,) * count, (0.0,) * count)

    def with_breaker(self, index: int, breaker: Breaker) -> EndpointsState:
        return attrs.evolve(self, breakers=_replace(self.breakers, index, breaker))

    def checked(self, index: int, ok: bool) -> EndpointsState:
        """A health check verdict; a pass also closes an open breaker (the endpoint answers again)."""
        breakers = _replace(self.breakers, index, Breaker()) if ok else self.breakers
        return attrs.evolve(self, up=_replace(self.up, index, ok), breakers=breakers)


def _replace(values: tuple[Any, ...], index: int, value: Any) -> tuple[Any, ...]:
    return (*values[:index], value, *values[index + 1:])


@attrs.define(eq=False)
class RemoteModel:
    """A loaded remote version: the face of ``LoadedModel`` the cache and predictor use, minus weights."""

    name: str
    version: str
    path: Path
    metadata: ModelMetadata
    loaded_at: float
    state: EndpointsState
    size_bytes: int = 0  # holds no weights: never the reason the cache evicts something

    @property
    def input_dim(self) -> int:
        return self.metadata.input_dim

    @property
    def n_labels(self) -> int:
        return len(self.metadata.labels)

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        return self.metadata.endpoints

    @property
    def weights(self) -> tuple[float, ...]:
        return tuple(e.weight for e in self.metadata.endpoints)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Remote versions are awaited (``RemoteCaller.call``); a synchronous call is a wiring bug."""
        raise RuntimeError(f"{self.name}@{self.version} is remote: it is called through RemoteCaller")


def load_remote(folder: Path, name: str, version: str) -> RemoteModel:
    """Load a remote version folder (blocking: reads metadata.yml; run it in a worker thread)."""
    folder = Path(folder)
    shown = f"{name}/{version}"
    try:
        metadata = parse_metadata((folder / METADATA_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"cannot read {shown}/{METADATA_FILE}: {exc}") from exc
    except MetadataError as exc:
        raise ModelLoadError(f"invalid metadata in {shown}/{METADATA_FILE}: {exc}") from exc
    if not metadata.remote:
        raise ModelLoadError(f"{shown}/{METADATA_FILE} names no endpoints")
    if (folder / MODEL_FILE).exists():
        raise ModelLoadError(f"{shown} has both {MODEL_FILE} and endpoints: keep one or the other")
    return RemoteModel(name, version, folder, metadata, time.time(), EndpointsState.fresh(len(metadata.endpoints)))


class RemoteFailure(Exception):
    """One endpoint call failed; ``outcome`` is its metrics label (error or timeout)."""

    def __init__(self, outcome: str, reason: str) -> None:
        super().__init__(reason)
        self.outcome = outcome


def infer_body(model: RemoteModel, rows: np.ndarray) -> dict[str, Any]:
    """An OIP infer request: the model's input rows as the single FP32 ``features`` tensor."""
    return {
        "id": f"{_ID_PREFIX}-{next(_REQUEST_IDS)}",
        "inputs": [{"name": "features", "datatype": "FP32", "shape": [int(rows.shape[0]), int(rows.shape[1])],
                    "data": rows.reshape(-1).tolist()}],
        "outputs": [{"name": "probabilities", "parameters": {"binary_data": False}}],
    }


def read_probabilities(body: Any, rows: int, labels: int) -> np.ndarray:
    """The ``probabilities`` output of an OIP answer (or its only output), as ``[rows, labels]``."""
    outputs = body.get("outputs") if isinstance(body, dict) else None
    if not isinstance(outputs, list) or not outputs:
        raise RemoteFailure("error", "answer has no outputs")
    named = [o for o in outputs if isinstance(o, dict) and o.get("name") == "probabilities"]
    output = named[0] if named else outputs[0] if len(outputs) == 1 else None
    if not isinstance(output, dict) or not isinstance(output.get("data"), list):
        raise RemoteFailure("error", "answer has no JSON 'probabilities' output")
    try:
        values = np.asarray(output["data"], dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise RemoteFailure("error", f"'probabilities' is not numeric: {exc}") from exc
    if values.size != rows * labels:
        raise RemoteFailure("error", f"'probabilities' has {values.size} values, expected {rows} x {labels}")
    return values.reshape(rows, labels)


@attrs.define
class RemoteCaller:
    """Calls remote versions' endpoints; the HTTP client is opened by ``actors/endpoint_health.py``."""

    metrics: Metrics
    check_seconds: float = 2.0
    settings: BreakerSettings = ENDPOINT_BREAKER
    client: httpx.AsyncClient | None = None

    async def call(self, model: RemoteModel, rows: np.ndarray) -> np.ndarray:
        """Probabilities for ``rows`` from the first endpoint that answers; ``Unavailable`` if none does."""
        weights = model.weights
        now = trio.current_time()
        state = model.state
        eligible = [up and allow(b, now, self.settings)[0] for up, b in zip(state.up, state.breakers, strict=True)]
        first, credit = pick(weights, state.credit, eligible)
        model.state = attrs.evolve(model.state, credit=credit)
        if first is None:
            for endpoint in model.endpoints:
                self.count(model, endpoint, "refused")
            raise Unavailable("endpoints_unavailable", f"{model.name}@{model.version}: every endpoint is down",
                              {"model": model.name, "version": model.version})
        reasons: dict[str, str] = {}
        for index in failover_order(weights, eligible, first):
            endpoint = model.endpoints[index]
            admitted, breaker = allow(model.state.breakers[index], trio.current_time(), self.settings)
            model.state = model.state.with_breaker(index, breaker)
            if not admitted:
                self.count(model, endpoint, "refused")
                continue
            started = time.perf_counter()
            try:
                probabilities = await self.post(model, endpoint, rows)
            except RemoteFailure as failure:
                model.state = model.state.with_breaker(
                    index, on_failure(model.state.breakers[index], trio.current_time(), self.settings))
                self.count(model, endpoint, failure.outcome)
                reasons[endpoint.url] = str(failure)
                continue
            except BaseException:
                model.state = model.state.with_breaker(index, release_probe(model.state.breakers[index]))
                raise
            model.state = model.state.with_breaker(
                index, on_success(model.state.breakers[index], trio.current_time(), self.settings))
            self.metrics.remote_latency_s.labels(model=model.name, version=model.version,
                                                 endpoint=endpoint.url).observe(time.perf_counter() - started)
            self.count(model, endpoint, "ok")
            return probabilities
        raise Unavailable("endpoints_unavailable", f"{model.name}@{model.version}: no endpoint answered",
                          {"model": model.name, "version": model.version, "endpoints": reasons})

    async def post(self, model: RemoteModel, endpoint: Endpoint, rows: np.ndarray) -> np.ndarray:
        """One OIP call, bounded by the version's ``timeout_ms`` as a whole (connect + send + answer)."""
        if self.client is None:
            raise RemoteFailure("error", "the endpoint client is not running")
        timeout = model.metadata.timeout_ms / 1000
        with trio.move_on_after(timeout) as scope:
            try:
                response = await self.client.post(endpoint.infer_url, json=infer_body(model, rows), timeout=timeout)
            except httpx.TimeoutException as exc:
                raise RemoteFailure("timeout", f"timed out: {exc}") from exc
            except httpx.HTTPError as exc:
                raise RemoteFailure("error", f"{type(exc).__name__}: {exc}") from exc
        if scope.cancelled_caught:
            raise RemoteFailure("timeout", f"no answer within {model.metadata.timeout_ms} ms")
        if response.status_code != 200:
            raise RemoteFailure("error", f"HTTP {response.status_code}: {response.text[:200]}")
        try:
            body = response.json()
        except ValueError as exc:
            raise RemoteFailure("error", "answer is not JSON") from exc
        probabilities = read_probabilities(body, int(rows.shape[0]), model.n_labels)
        if not np.isfinite(probabilities).all():
            raise RemoteFailure("error", "answer has non-finite probabilities")
        return probabilities

    def count(self, model: RemoteModel, endpoint: Endpoint, outcome: str) -> None:
        self.metrics.remote_requests.labels(model=model.name, version=model.version, endpoint=endpoint.url,
                                            outcome=outcome).inc()
