"""The endpoint health actor: owns the HTTP client of remote versions and checks their endpoints.

Why active checks on top of per-endpoint breakers: a breaker only learns from traffic, so
an endpoint that died while idle would cost the next requests a failed attempt each, and
an endpoint whose breaker opened would only be retried after its open period. Every
``check_seconds`` this actor GETs ``{url}/v2/health/ready`` (the OIP readiness probe, served
by model-router and any KServe v2 server) for every endpoint of every loaded remote version:
a failing check takes the endpoint out of the rotation at once, a passing one puts it back
and closes its breaker. Each distinct URL is checked once per round, however many versions
name it. See docs/remote-models.md.
"""

from __future__ import annotations

import logging

import httpx
import trio

from actors.model_cache import ModelCache
from actors.serving.remote_model import RemoteCaller, RemoteModel

log = logging.getLogger("model_router.endpoints")
# Generous on purpose: a refused connection fails at once; only a hung endpoint waits this long, and a
# loaded but healthy endpoint must not be taken out of the rotation for answering slowly.
CHECK_TIMEOUT_S = 2.0


async def probe(client: httpx.AsyncClient, url: str, timeout: float) -> bool:
    """Whether the endpoint says it is ready (HTTP 200) within ``timeout``."""
    with trio.move_on_after(timeout):
        try:
            response = await client.get(url, timeout=timeout)
        except httpx.HTTPError:
            return False
        return response.status_code == 200
    return False


async def check_round(caller: RemoteCaller, cache: ModelCache) -> dict[str, bool]:
    """Probe every endpoint of the loaded remote versions once; apply the verdicts; return them by URL."""
    client = caller.client
    models = [m for m in cache.view.models.values() if isinstance(m, RemoteModel)]
    urls = sorted({e.ready_url for m in models for e in m.endpoints})
    if client is None or not urls:
        return {}
    verdicts: dict[str, bool] = {}

    async def check(url: str) -> None:
        verdicts[url] = await probe(client, url, CHECK_TIMEOUT_S)

    async with trio.open_nursery() as nursery:
        for url in urls:
            nursery.start_soon(check, url)
    for model in models:
        for index, endpoint in enumerate(model.endpoints):
            ok = verdicts[endpoint.ready_url]
            if ok != model.state.up[index]:
                log.warning("endpoint %s of %s@%s is %s", endpoint.url, model.name, model.version,
                            "up again" if ok else "down (health check failed)")
            model.state = model.state.checked(index, ok)
            caller.metrics.remote_endpoint_up.labels(model=model.name, version=model.version,
                                                     endpoint=endpoint.url).set(1 if ok else 0)
    return verdicts


async def run(
    caller: RemoteCaller,
    cache: ModelCache,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Open the client remote calls share, then check endpoints every ``caller.check_seconds`` until cancelled."""
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
    async with httpx.AsyncClient(limits=limits, timeout=5.0) as client:
        caller.client = client
        task_status.started()
        try:
            while True:
                await check_round(caller, cache)
                await trio.sleep(caller.check_seconds)
        finally:
            caller.client = None
