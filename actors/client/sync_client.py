"""The blocking client: httpx for calls, websockets' sync client for the switch feed.

For a trading engine's strategy loop that is plain Python (no event loop). One client
holds one connection pool; make one per process and share it between threads (httpx's
``Client`` is thread-safe). ``REMOTE_INFERENCE_ENABLED=false`` (or ``remote=False``)
runs the same models in process instead, answering ``predict``, ``predict_batch`` and
``route`` with the same result types; operator calls then raise ``LocalModeUnsupported``.
"""

from __future__ import annotations

import contextlib
import json
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import urlencode

import httpx
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from actors.client import calls
from actors.client.errors import (
    FeedError,
    LocalModeUnsupported,
    RequestTimeout,
    ServiceUnreachable,
)
from actors.client.feed_protocol import FeedState, feed_query, read_feed_message
from actors.client.results import (
    BatchResult,
    ModelInfo,
    Operation,
    PredictInput,
    Prediction,
    Route,
    ServiceStatus,
    SwitchEvent,
)
from actors.client.settings import ClientSettings, RetryPolicy

T = TypeVar("T")
RETRYABLE = (httpx.ConnectError, httpx.ConnectTimeout)


class RemoteInferenceClient:
    """Blocking client of model-router; see ``docs/client.md``.

    Arguments override the environment: ``base_url`` (``REMOTE_INFERENCE_URL``), ``timeout``
    seconds (``REMOTE_INFERENCE_TIMEOUT``), ``api_key`` (``MODEL_ROUTER_API_KEY``, sent as a
    bearer token), ``admin_key`` (``MODEL_ROUTER_ADMIN_KEY[_FILE]``, sent as ``X-Admin-Key``
    on operator calls), ``remote`` (``REMOTE_INFERENCE_ENABLED``), and for the local mode
    ``config``/``models``/``state_file`` (``MODEL_ROUTER_CONFIG``, ``MODEL_REPOSITORY``,
    ``MODEL_ROUTER_STATE_FILE``), exactly as the service reads them.
    """

    def __init__(self, base_url: str | None = None, *, timeout: float | None = None, api_key: str | None = None,
                 admin_key: str | None = None, retry: RetryPolicy | None = None, remote: bool | None = None,
                 config: str | Path | None = None, models: str | Path | None = None,
                 state_file: str | Path | None = None, environ: Mapping[str, str] | None = None,
                 rng: random.Random | None = None) -> None:
        self.settings = ClientSettings.resolve(base_url=base_url, timeout=timeout, api_key=api_key,
                                               admin_key=admin_key, retry=retry, remote=remote, config=config,
                                               models=models, state_file=state_file, environ=environ)
        self._rng = rng or random.Random()
        self._http = httpx.Client(base_url=self.settings.base_url, timeout=self.settings.timeout_s)
        self._local = None
        if not self.settings.remote:
            from actors.client.local import LocalThread  # the service's code: imported only when used

            assert self.settings.config is not None
            self._local = LocalThread(self.settings.config, models=self.settings.models,
                                      state_file=self.settings.state_file)

    @property
    def is_local(self) -> bool:
        return self._local is not None

    def close(self) -> None:
        self._http.close()
        if self._local is not None:
            self._local.close()
            self._local = None

    def __enter__(self) -> RemoteInferenceClient:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    # -- execution -------------------------------------------------------------------------

    def run(self, call: calls.Call[T]) -> T:
        """Execute one call: in process when local and possible, else over HTTP with retries."""
        started = time.perf_counter()
        if self._local is not None:
            if call.local is None:
                raise LocalModeUnsupported(f"{call.method} {call.path} needs the service (local mode is on)")
            answer = self._local.call(call.local, call.body)
            return call.parse(answer, (time.perf_counter() - started) * 1000, "local")
        answer = self._exchange(call)
        return call.parse(answer, (time.perf_counter() - started) * 1000, "remote")

    def _exchange(self, call: calls.Call[Any]) -> Any:
        policy = self.settings.retry
        headers = self.settings.headers(admin=call.admin)
        retry = 0
        while True:
            try:
                response = self._http.request(call.method, call.path, json=call.body, headers=headers)
            except RETRYABLE as exc:
                if retry + 1 >= policy.attempts:
                    raise ServiceUnreachable(f"{self.settings.base_url}: {exc} (after {retry + 1} attempts)") from exc
                delay = policy.delay(retry, self._rng)
            except httpx.TimeoutException as exc:
                raise RequestTimeout(f"{call.method} {call.path}: no answer within {self.settings.timeout_s} s") \
                    from exc
            except httpx.TransportError as exc:
                raise ServiceUnreachable(f"{self.settings.base_url}: {exc}") from exc
            else:
                status = response.status_code
                if status == 503 and call.retry_503 and retry + 1 < policy.attempts:
                    delay = policy.delay(retry, self._rng, response.headers.get("retry-after"))
                else:
                    return calls.answer_of(call, response)
            retry += 1
            time.sleep(delay)

    # -- predictions -------------------------------------------------------------------------

    def predict(self, features: Mapping[str, Any] | PredictInput, *, asset_class: str | None = None,
                horizon_ms: float | None = None, symbol: str | None = None, model_name: str | None = None,
                model_version: str | None = None, correlation_id: str | None = None,
                timestamp: Any = None) -> Prediction:
        """One prediction, routed by (asset_class, horizon_ms[, symbol]) or addressed by model_name.

        ``correlation_id`` is generated when not given and comes back in the result (it is
        the key of ``feedback``, and with no symbol the key of sticky version assignment).
        """
        item = features if isinstance(features, PredictInput) else PredictInput(
            features, asset_class, horizon_ms, symbol, model_name, model_version, correlation_id, timestamp)
        return self.run(calls.predict(item))

    def predict_batch(self, items: Iterable[PredictInput | Mapping[str, Any]]) -> BatchResult:
        """Many predictions in one call; items for the same model version run as one interpreter call."""
        return self.run(calls.predict_batch(items))

    def route(self, asset_class: str, horizon_ms: float, symbol: str | None = None) -> Route:
        return self.run(calls.route(asset_class, horizon_ms, symbol))

    def feedback(self, correlation_id: str, outcome: str) -> dict[str, Any]:
        """The realised label of an earlier prediction (accuracy in health and A/B reports)."""
        return self.run(calls.feedback(correlation_id, outcome))

    # -- models and switches -------------------------------------------------------------------

    def models(self) -> tuple[ModelInfo, ...]:
        return self.run(calls.models())

    def model(self, name: str) -> ModelInfo:
        return self.run(calls.model(name))

    def switch(self, model: str, version: str, strategy: str = "immediate", *, steps: Iterable[float] | None = None,
               interval_s: float | None = None, canary_weight: float | None = None,
               healthy_intervals: int | None = None, split: float | None = None,
               max_transition_s: float | None = None) -> Operation:
        """Start a switch (admin); returns the operation as started. ``wait`` follows it to the end."""
        body = calls.switch_body(version, strategy, steps=steps, interval_s=interval_s, canary_weight=canary_weight,
                                 healthy_intervals=healthy_intervals, split=split, max_transition_s=max_transition_s)
        return self.run(calls.switch(model, body))

    def rollback(self, model: str, version: str | None = None) -> Operation:
        return self.run(calls.rollback(model, version))

    def operation(self, operation_id: str) -> Operation:
        return self.run(calls.operation(operation_id))

    def abort(self, operation_id: str) -> Operation:
        return self.run(calls.abort(operation_id))

    def promote(self, operation_id: str) -> Operation:
        return self.run(calls.promote(operation_id))

    def wait(self, operation_id: str, *, poll_s: float = 0.25, timeout_s: float | None = None,
             on_progress: Callable[[Operation], None] | None = None) -> Operation:
        """Poll the operation until it ends; ``on_progress`` sees every change of state or weight."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        seen: tuple[str, float, int] | None = None
        while True:
            op = self.operation(operation_id)
            if (op.state, op.weight_percent, op.step) != seen:
                seen = (op.state, op.weight_percent, op.step)
                if on_progress is not None:
                    on_progress(op)
            if op.is_terminal:
                return op
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"operation {operation_id} still {op.state} after {timeout_s} s")
            time.sleep(poll_s)

    def status(self) -> ServiceStatus:
        return ServiceStatus.from_answers(self.run(calls.raw_get("/health")), self.run(calls.health_ready()),
                                          self.run(calls.raw_get("/switches")))

    def switches(self, *, symbol: str | None = None, asset_class: str | None = None, model: str | None = None,
                 since: str | None = None, reconnect: bool = True) -> SwitchSubscription:
        """Subscribe to ``/ws/switches``; connected (and subscribed) when this returns.

        Use as ``with client.switches(model="fast") as feed: for event in feed: ...``.
        """
        if self._local is not None:
            raise LocalModeUnsupported("the switch feed needs the service (local mode is on)")
        subscription = SwitchSubscription(self.settings, FeedState(symbol, asset_class, model, since), reconnect,
                                          self._rng)
        try:
            subscription.open()
        except BaseException:
            subscription.close()
            raise
        return subscription


class SwitchSubscription:
    """A live ``/ws/switches`` subscription: iterate it for :class:`SwitchEvent` objects.

    When the connection drops (service restart, or the service dropping a subscriber that
    fell behind), it reconnects with the retry policy, resuming from the last stream id
    when the service has Redis (so nothing is missed); without Redis, events published
    while disconnected are lost, as the service documents.
    """

    def __init__(self, settings: ClientSettings, state: FeedState, reconnect: bool, rng: random.Random) -> None:
        self.settings = settings
        self.state = state
        self.reconnect = reconnect
        self._rng = rng
        self._socket: ClientConnection | None = None
        self._exit = contextlib.ExitStack()
        self._closed = False

    def open(self) -> None:
        """Connect and read the service's ``subscribed`` message (retrying refused connections)."""
        policy = self.settings.retry
        retry = 0
        while True:
            try:
                # Entered as a context manager: the form every websockets version since 13 supports.
                self._socket = self._exit.enter_context(connect(
                    f"{self.settings.ws_url}/ws/switches?{urlencode(feed_query(self.state))}",
                    additional_headers=self.settings.headers(admin=False), open_timeout=self.settings.timeout_s))
                hello = read_feed_message(json.loads(self._socket.recv(timeout=self.settings.timeout_s)), self.state)
                if hello is not None:
                    raise FeedError(f"expected the subscription message first, got {hello}")
                return
            except InvalidStatus as exc:
                self._drop()
                if exc.response.status_code < 500:  # refused (a key, a path): asking again changes nothing
                    raise FeedError(f"switch feed refused with HTTP {exc.response.status_code}") from exc
                failure: Exception = exc
            except (OSError, InvalidHandshake, TimeoutError) as exc:
                self._drop()
                failure = exc
            if retry + 1 >= policy.attempts:
                raise ServiceUnreachable(f"switch feed at {self.settings.ws_url}: {failure}") from failure
            time.sleep(policy.delay(retry, self._rng))
            retry += 1

    def _drop(self) -> None:
        self._exit.close()
        self._socket = None

    def next(self, timeout: float | None = None) -> SwitchEvent:
        """The next event; ``TimeoutError`` after ``timeout`` seconds without one, FeedError once closed."""
        event = self._next(timeout)
        if event is None:
            raise FeedError("the switch feed subscription is closed")
        return event

    def _next(self, timeout: float | None) -> SwitchEvent | None:
        while not self._closed and self._socket is not None:
            try:
                raw = self._socket.recv(timeout=timeout)
            except ConnectionClosed:
                self._drop()
                if self._closed or not self.reconnect:
                    return None
                self.open()
                continue
            event = read_feed_message(json.loads(raw), self.state)
            if event is not None:
                return event
        return None

    def __iter__(self) -> Iterator[SwitchEvent]:
        return self

    def __next__(self) -> SwitchEvent:
        event = self._next(None)
        if event is None:
            raise StopIteration
        return event

    def close(self) -> None:
        self._closed = True
        self._drop()

    def __enter__(self) -> SwitchSubscription:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()
