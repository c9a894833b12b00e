"""The async client, for engines on trio: httpx.AsyncClient (trio through anyio), trio-websocket for the feed.

Use it as an async context manager: ``async with AsyncRemoteInferenceClient() as client``.
Remote calls run on any anyio backend; the local mode and the switch feed need trio
(they start tasks in a trio nursery held by the ``async with``). Same arguments,
environment, retries, result types and errors as :class:`RemoteInferenceClient`.
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import urlencode

import anyio
import httpx
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, HandshakeError, open_websocket_url

from actors.client import calls
from actors.client.errors import (
    FeedError,
    LocalModeUnsupported,
    ModelRouterError,
    RequestTimeout,
    ServiceUnreachable,
    single_error,
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

if sys.version_info >= (3, 11):
    from builtins import BaseExceptionGroup
else:  # trio depends on the backport there
    from exceptiongroup import BaseExceptionGroup

T = TypeVar("T")
RETRYABLE = (httpx.ConnectError, httpx.ConnectTimeout)


class AsyncRemoteInferenceClient:
    """Async client of model-router; arguments and environment as ``RemoteInferenceClient``."""

    def __init__(self, base_url: str | None = None, *, timeout: float | None = None, api_key: str | None = None,
                 admin_key: str | None = None, retry: RetryPolicy | None = None, remote: bool | None = None,
                 config: str | Path | None = None, models: str | Path | None = None,
                 state_file: str | Path | None = None, environ: Mapping[str, str] | None = None,
                 rng: random.Random | None = None) -> None:
        self.settings = ClientSettings.resolve(base_url=base_url, timeout=timeout, api_key=api_key,
                                               admin_key=admin_key, retry=retry, remote=remote, config=config,
                                               models=models, state_file=state_file, environ=environ)
        self._rng = rng or random.Random()
        self._http = httpx.AsyncClient(base_url=self.settings.base_url, timeout=self.settings.timeout_s)
        self._stack = AsyncExitStack()
        self._local: Any = None

    @property
    def is_local(self) -> bool:
        return self._local is not None

    async def __aenter__(self) -> AsyncRemoteInferenceClient:
        await self._stack.__aenter__()
        self._stack.push_async_callback(self._http.aclose)
        if not self.settings.remote:
            from actors.client.local import run_engine

            assert self.settings.config is not None
            nursery = await self._stack.enter_async_context(trio.open_nursery())
            self._stack.callback(nursery.cancel_scope.cancel)
            try:
                self._local = await nursery.start(partial(run_engine, self.settings.config,
                                                          models=self.settings.models,
                                                          state_file=self.settings.state_file))
            except BaseException as exc:
                await self._stack.aclose()
                raise single_error(exc) from None
        return self

    async def __aexit__(self, kind: type[BaseException] | None, value: BaseException | None,
                        traceback: TracebackType | None) -> None:
        self._local = None
        await self._stack.__aexit__(kind, value, traceback)

    # -- execution -------------------------------------------------------------------------

    async def run(self, call: calls.Call[T]) -> T:
        started = time.perf_counter()
        if not self.settings.remote:
            if call.local is None:
                raise LocalModeUnsupported(f"{call.method} {call.path} needs the service (local mode is on)")
            if self._local is None:
                raise ModelRouterError("local mode needs 'async with AsyncRemoteInferenceClient(...)'")
            answer = await self._local.call(call.local, call.body)
            return call.parse(answer, (time.perf_counter() - started) * 1000, "local")
        answer = await self._exchange(call)
        return call.parse(answer, (time.perf_counter() - started) * 1000, "remote")

    async def _exchange(self, call: calls.Call[Any]) -> Any:
        policy = self.settings.retry
        headers = self.settings.headers(admin=call.admin)
        retry = 0
        while True:
            try:
                response = await self._http.request(call.method, call.path, json=call.body, headers=headers)
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
                if response.status_code == 503 and call.retry_503 and retry + 1 < policy.attempts:
                    delay = policy.delay(retry, self._rng, response.headers.get("retry-after"))
                else:
                    return calls.answer_of(call, response)
            retry += 1
            await anyio.sleep(delay)

    # -- predictions -------------------------------------------------------------------------

    async def predict(self, features: Mapping[str, Any] | PredictInput, *, asset_class: str | None = None,
                      horizon_ms: float | None = None, symbol: str | None = None, model_name: str | None = None,
                      model_version: str | None = None, correlation_id: str | None = None,
                      timestamp: Any = None) -> Prediction:
        item = features if isinstance(features, PredictInput) else PredictInput(
            features, asset_class, horizon_ms, symbol, model_name, model_version, correlation_id, timestamp)
        return await self.run(calls.predict(item))

    async def predict_batch(self, items: Iterable[PredictInput | Mapping[str, Any]]) -> BatchResult:
        return await self.run(calls.predict_batch(items))

    async def route(self, asset_class: str, horizon_ms: float, symbol: str | None = None) -> Route:
        return await self.run(calls.route(asset_class, horizon_ms, symbol))

    async def feedback(self, correlation_id: str, outcome: str) -> dict[str, Any]:
        return await self.run(calls.feedback(correlation_id, outcome))

    # -- models and switches -------------------------------------------------------------------

    async def models(self) -> tuple[ModelInfo, ...]:
        return await self.run(calls.models())

    async def model(self, name: str) -> ModelInfo:
        return await self.run(calls.model(name))

    async def switch(self, model: str, version: str, strategy: str = "immediate", *,
                     steps: Iterable[float] | None = None, interval_s: float | None = None,
                     canary_weight: float | None = None, healthy_intervals: int | None = None,
                     split: float | None = None, max_transition_s: float | None = None) -> Operation:
        body = calls.switch_body(version, strategy, steps=steps, interval_s=interval_s, canary_weight=canary_weight,
                                 healthy_intervals=healthy_intervals, split=split, max_transition_s=max_transition_s)
        return await self.run(calls.switch(model, body))

    async def rollback(self, model: str, version: str | None = None) -> Operation:
        return await self.run(calls.rollback(model, version))

    async def operation(self, operation_id: str) -> Operation:
        return await self.run(calls.operation(operation_id))

    async def abort(self, operation_id: str) -> Operation:
        return await self.run(calls.abort(operation_id))

    async def promote(self, operation_id: str) -> Operation:
        return await self.run(calls.promote(operation_id))

    async def wait(self, operation_id: str, *, poll_s: float = 0.25,
                   on_progress: Callable[[Operation], None] | None = None) -> Operation:
        """Poll until the operation ends (bound it with ``trio.fail_after``); ``on_progress`` sees changes."""
        seen: tuple[str, float, int] | None = None
        while True:
            op = await self.operation(operation_id)
            if (op.state, op.weight_percent, op.step) != seen:
                seen = (op.state, op.weight_percent, op.step)
                if on_progress is not None:
                    on_progress(op)
            if op.is_terminal:
                return op
            await anyio.sleep(poll_s)

    async def status(self) -> ServiceStatus:
        return ServiceStatus.from_answers(await self.run(calls.raw_get("/health")),
                                          await self.run(calls.health_ready()),
                                          await self.run(calls.raw_get("/switches")))

    @asynccontextmanager
    async def switches(self, *, symbol: str | None = None, asset_class: str | None = None, model: str | None = None,
                       since: str | None = None, reconnect: bool = True,
                       buffer: int = 0) -> AsyncIterator[trio.MemoryReceiveChannel[SwitchEvent]]:
        """Subscribe to ``/ws/switches`` (trio); subscribed when the ``async with`` body starts.

        ``async with client.switches(model="fast") as events: async for event in events: ...``.
        A task owns the WebSocket and reconnects as the blocking client does (resuming from
        the last stream id with Redis); a refused subscription raises FeedError here.
        """
        if not self.settings.remote:
            raise LocalModeUnsupported("the switch feed needs the service (local mode is on)")
        state = FeedState(symbol, asset_class, model, since)
        send, receive = trio.open_memory_channel[SwitchEvent](buffer)
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self._pump, state, send, reconnect)
                async with receive:
                    yield receive
                nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:  # the nursery wraps even a single error: hand back that error
            raise single_error(group) from None

    async def _pump(self, state: FeedState, send: trio.MemorySendChannel[SwitchEvent], reconnect: bool,
                    *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        policy = self.settings.retry
        headers = [(k, v) for k, v in self.settings.headers(admin=False).items()]
        retry = 0
        async with send:
            while True:
                url = f"{self.settings.ws_url}/ws/switches?{urlencode(feed_query(state))}"
                try:
                    async with open_websocket_url(url, extra_headers=headers,
                                                  connect_timeout=self.settings.timeout_s) as socket:
                        hello = read_feed_message(json.loads(await socket.get_message()), state)
                        if hello is not None:
                            raise FeedError(f"expected the subscription message first, got {hello}")
                        retry = 0
                        task_status.started()
                        task_status = trio.TASK_STATUS_IGNORED
                        while True:
                            event = read_feed_message(json.loads(await socket.get_message()), state)
                            if event is not None:
                                await send.send(event)
                except ConnectionRejected as exc:
                    if exc.status_code < 500:  # refused (a key, a path): asking again changes nothing
                        raise FeedError(f"switch feed refused with HTTP {exc.status_code}") from exc
                    failure: Exception = exc
                except (ConnectionClosed, HandshakeError, OSError, trio.TooSlowError) as exc:
                    if state.subscribed and not reconnect:
                        return
                    failure = exc
                except trio.BrokenResourceError:
                    return  # the subscriber left
                if retry + 1 >= policy.attempts:
                    raise ServiceUnreachable(f"switch feed at {self.settings.ws_url}: {failure}") from failure
                await trio.sleep(policy.delay(retry, self._rng))
                retry += 1
