"""The model cache actor: loads TFLite models off the event loop and keeps an LRU.

Request handlers call :meth:`ModelCache.lookup` first: a dict read on an immutable
:class:`CacheView`, no await, no lock. On a miss they ``await cache.get(...)``, which
sends a request to the actor over a memory channel. The actor coalesces concurrent
requests for the same model, loads in a worker thread (so the event loop never blocks
on file I/O or interpreter allocation), evicts least-recently-used models under a count
and byte budget, then publishes a new view by rebinding one reference.

A model that fails to load is recorded with its reason and never affects the others.
Without an explicit version the newest version that loads is served, so a broken new
version folder leaves the previous one answering.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
import outcome
import trio

from actors import mailbox
from actors.core.cache_policy import Resident, plan_evictions
from actors.core.errors import Conflict, RouterError, not_found, unavailable
from actors.core.rules import RouterConfig
from actors.core.versions import ModelKey, latest_version
from actors.mailbox import Envelope, ask, tell
from actors.serving.metrics import Metrics
from actors.serving.remote_model import RemoteModel, load_remote
from actors.storage.model_repo import list_repository, names_endpoints, version_dir
from actors.storage.tflite_backend import LoadedModel, ModelLoadError, load_model

log = logging.getLogger("model_router.model_cache")

FAILURE_RETRY_S = 10.0


def load_version(folder: Path, name: str, version: str) -> LoadedModel | RemoteModel:
    """A version folder (blocking): a remote version when its metadata names endpoints, else TFLite."""
    if names_endpoints(folder):
        return load_remote(folder, name, version)
    return load_model(folder, name, version)


@attrs.frozen
class CacheLimits:
    max_models: int = 16
    max_bytes: int = 256 * 1024 * 1024


@attrs.frozen
class CacheView:
    """What request handlers read: replaced whole, never mutated after publication."""

    models: Mapping[ModelKey, LoadedModel] = attrs.field(factory=dict)
    active: Mapping[str, str] = attrs.field(factory=dict)
    catalog: Mapping[str, tuple[str, ...]] = attrs.field(factory=dict)
    failures: Mapping[ModelKey, str] = attrs.field(factory=dict)


@attrs.frozen
class LoadResult:
    model: LoadedModel | None = None
    previous_version: str | None = None


@attrs.frozen
class LoadRequest:
    """Load ``name`` (``version`` None: the serving, else active, else newest loadable version)."""

    name: str
    version: str | None
    force: bool = False


@attrs.frozen
class ReloadRequest:
    """Rescan the repository and load the newest version of ``name`` afresh."""

    name: str


@attrs.frozen
class UnloadRequest:
    """Drop ``name@version`` from memory (a drained version after a switch, a deregistration)."""

    name: str
    version: str


CacheRequest = LoadRequest | ReloadRequest | UnloadRequest


@attrs.define
class ModelCache:
    """The handle request handlers hold; the actor is the only writer of ``view``."""

    requests: trio.MemorySendChannel[Envelope[CacheRequest]]
    # Versions taken out of service (the transition manager's registry): never handed out.
    excluded: Callable[[str], frozenset[str]] = lambda name: frozenset()
    view: CacheView = attrs.field(factory=CacheView)
    last_used: dict[ModelKey, float] = attrs.field(factory=dict)

    def lookup(self, name: str, version: str | None = None) -> LoadedModel | None:
        """Lock-free fast path: the loaded model, or None when the actor must load it."""
        view = self.view
        key = (name, version if version is not None else view.active.get(name, ""))
        model = view.models.get(key)
        if model is not None:
            self.last_used[key] = trio.current_time()
        return model

    async def get(self, name: str, version: str | None = None, *, force: bool = False) -> LoadedModel:
        """The model, loading it if needed; ``force`` retries a version that failed recently."""
        if version is not None and version in self.excluded(name):
            raise Conflict("version_deregistered", f"{name}@{version} is deregistered",
                           {"model": name, "version": version})
        model = self.lookup(name, version)
        if model is not None:
            return model
        result: LoadResult = await ask(self.requests, LoadRequest(name, version, force))
        assert result.model is not None
        return result.model

    async def reload(self, name: str) -> LoadResult:
        return await ask(self.requests, ReloadRequest(name))  # type: ignore[no-any-return]

    async def unload(self, name: str, version: str) -> None:
        await ask(self.requests, UnloadRequest(name, version))

    def preload(self, names: tuple[str, ...]) -> None:
        """Fire-and-forget loads (startup, a reload that names a new default model)."""
        for name in names:
            if self.lookup(name) is None and not tell(self.requests, LoadRequest(name, None)):
                log.warning("preload of %s skipped: cache request queue full", name)

    def rules_applied(self, config: RouterConfig, started_at: float) -> None:
        """New rules are in force: have their default model loaded before it is asked for."""
        self.preload((config.settings.default_model,))


@attrs.define
class _CacheActor:
    """State owned by the actor task; handlers see it only through ``cache.view``."""

    root: Path
    limits: CacheLimits
    metrics: Metrics
    cache: ModelCache
    pinned: Callable[[], frozenset[str]]
    pinned_versions: Callable[[], frozenset[ModelKey]]
    excluded: Callable[[str], frozenset[str]]
    # The version to prefer when a load names none: the one the traffic plan serves.
    preferred: Callable[[str], str | None] = lambda name: None
    waiters: dict[tuple[str, str | None], list[Envelope[CacheRequest]]] = attrs.field(factory=dict)
    failed_at: dict[ModelKey, float] = attrs.field(factory=dict)

    def publish(self, **changes: Any) -> None:
        self.cache.view = attrs.evolve(self.cache.view, **changes)
        models = self.cache.view.models
        self.metrics.models_loaded.set(len(models))
        self.metrics.model_cache_bytes.set(sum(m.size_bytes for m in models.values()))

    async def rescan(self) -> Mapping[str, tuple[str, ...]]:
        """Re-read the repository folder (a directory scan: in a worker thread)."""
        catalog = await trio.to_thread.run_sync(list_repository, self.root)
        self.publish(catalog=catalog)
        return catalog

    async def candidates(self, name: str, version: str | None) -> tuple[str, ...]:
        catalog = self.cache.view.catalog
        if name not in catalog or (version is not None and version not in catalog[name]):
            catalog = await self.rescan()
        excluded = self.excluded(name)
        versions = tuple(v for v in catalog.get(name, ()) if v not in excluded)
        if version is not None:
            return (version,) if version in versions else ()
        first = [v for v in (self.preferred(name), self.cache.view.active.get(name)) if v in versions]
        newest_first = sorted(versions, key=int, reverse=True)
        return tuple(dict.fromkeys([*first, *newest_first]))

    async def load_one(self, name: str, version: str) -> LoadedModel:
        path = version_dir(self.root, name, version)
        started = trio.current_time()
        try:
            # A remote version (metadata naming endpoints) loads as a RemoteModel (docs/remote-models.md).
            model = await trio.to_thread.run_sync(load_version, path, name, version)
        except ModelLoadError:
            raise
        except Exception as exc:  # a corrupt file can fail anywhere in the runtime: still just "failed"
            log.error("loading %s@%s raised %s", name, version, type(exc).__name__, exc_info=exc)
            raise ModelLoadError(f"{type(exc).__name__} while loading: {exc}"[:500]) from exc
        log.info("loaded %s@%s in %.1f ms (%d bytes)", name, version,
                 (trio.current_time() - started) * 1000, model.size_bytes)
        return model

    def install(self, model: LoadedModel, *, make_active: bool) -> str | None:
        key = (model.name, model.version)
        pinned = self.pinned_keys()
        view = self.cache.view
        resident = [
            Resident(k, m.size_bytes, self.cache.last_used.get(k, -math.inf), pinned=k in pinned)
            for k, m in view.models.items() if k != key
        ]
        plan = plan_evictions(resident, incoming_bytes=model.size_bytes,
                              max_models=self.limits.max_models, max_bytes=self.limits.max_bytes)
        if not plan.fits:
            log.warning("model cache over budget after loading %s@%s (pinned models fill it)", *key)
        models = {k: m for k, m in view.models.items() if k not in plan.evict}
        for evicted in plan.evict:
            self.cache.last_used.pop(evicted, None)
            log.info("evicted %s@%s (least recently used)", *evicted)
        models[key] = model
        self.cache.last_used[key] = trio.current_time()
        previous = view.active.get(model.name)
        active = dict(view.active)
        if make_active or model.name not in active:
            active[model.name] = model.version
        active = {n: v for n, v in active.items() if (n, v) in models}
        failures = {k: r for k, r in view.failures.items() if k != key}
        self.publish(models=models, active=active, failures=failures)
        return previous

    def pinned_keys(self) -> frozenset[ModelKey]:
        active = self.cache.view.active
        return frozenset((n, active[n]) for n in self.pinned() if n in active) | self.pinned_versions()

    def unload(self, request: UnloadRequest) -> LoadResult:
        view = self.cache.view
        key = (request.name, request.version)
        if key in view.models:
            self.cache.last_used.pop(key, None)
            models = {k: m for k, m in view.models.items() if k != key}
            active = {n: v for n, v in view.active.items() if (n, v) in models}
            if request.name not in active:
                remaining = [v for (n, v) in models if n == request.name]
                if remaining:
                    active[request.name] = latest_version(remaining)
            self.publish(models=models, active=active)
            log.info("unloaded %s@%s", *key)
        return LoadResult()

    def unload_idle(self, cutoff: float) -> tuple[ModelKey, ...]:
        """Drop unpinned models last used before ``cutoff`` (trio clock)."""
        pinned = self.pinned_keys()
        view = self.cache.view
        idle = tuple(k for k in view.models
                     if k not in pinned and self.cache.last_used.get(k, -math.inf) < cutoff)
        if idle:
            for key in idle:
                self.cache.last_used.pop(key, None)
                log.info("unloaded %s@%s (idle longer than cache_ttl_seconds)", *key)
            models = {k: m for k, m in view.models.items() if k not in idle}
            active = {n: v for n, v in view.active.items() if (n, v) in models}
            self.publish(models=models, active=active)
        return idle

    def record_failure(self, name: str, version: str, reason: str) -> None:
        log.error("model %s@%s failed to load: %s", name, version, reason)
        self.metrics.model_load_failures.labels(model_name=name).inc()
        failures = dict(self.cache.view.failures)
        failures[(name, version)] = reason
        self.failed_at[(name, version)] = trio.current_time()
        self.publish(failures=failures)

    def failed_recently(self, key: ModelKey) -> bool:
        """A version that failed within ``FAILURE_RETRY_S`` is not retried on every request."""
        return trio.current_time() - self.failed_at.get(key, -math.inf) < FAILURE_RETRY_S

    async def handle_load(self, request: LoadRequest) -> None:
        key = (request.name, request.version)
        versions = await self.candidates(request.name, request.version)
        if not versions:
            self.answer(key, outcome.Error(self.missing(request.name, request.version)))
            return
        reasons: dict[str, str] = {}
        for version in versions:
            loaded = self.cache.view.models.get((request.name, version))
            if loaded is not None:
                self.answer(key, outcome.Value(LoadResult(model=loaded)))
                return
            if not request.force and self.failed_recently((request.name, version)):
                reasons[version] = self.cache.view.failures.get((request.name, version), "failed recently")
                continue
            try:
                model = await self.load_one(request.name, version)
            except ModelLoadError as exc:
                reasons[version] = exc.reason
                self.record_failure(request.name, version, exc.reason)
                continue
            self.install(model, make_active=False)
            self.answer(key, outcome.Value(LoadResult(model=model)))
            return
        self.answer(key, outcome.Error(unavailable(
            "model_unavailable", f"model {request.name!r} could not be loaded",
            model=request.name, reasons=reasons)))

    async def handle_reload(self, request: ReloadRequest) -> LoadResult:
        catalog = await self.rescan()
        excluded = self.excluded(request.name)
        versions = tuple(v for v in catalog.get(request.name, ()) if v not in excluded)
        if not versions:
            raise self.missing(request.name, None)
        newest = latest_version(versions)
        try:
            model = await self.load_one(request.name, newest)
        except ModelLoadError as exc:
            self.record_failure(request.name, newest, exc.reason)
            raise Conflict(
                "model_reload_failed",
                f"{request.name}@{newest} failed to load; the previous version keeps serving",
                {"model": request.name, "version": newest, "reason": exc.reason,
                 "serving": self.cache.view.active.get(request.name)}) from exc
        previous = self.install(model, make_active=True)
        return LoadResult(model=model, previous_version=previous)

    def missing(self, name: str, version: str | None) -> RouterError:
        catalog = self.cache.view.catalog
        if version is not None and version in self.excluded(name):
            return Conflict("version_deregistered", f"{name}@{version} is deregistered",
                            {"model": name, "version": version})
        if name not in catalog:
            return not_found("model_not_found", f"model {name!r} is not in the repository",
                             model=name, available=sorted(catalog))
        return not_found("version_not_found", f"model {name!r} has no version {version!r}",
                         model=name, version=version, available=list(catalog[name]))

    def answer(self, key: tuple[str, str | None], result: outcome.Outcome[LoadResult]) -> None:
        for envelope in self.waiters.pop(key, []):
            envelope.answer(result)

    async def load_for_waiters(self, request: LoadRequest) -> None:
        """One coalesced load; whatever goes wrong fails these waiters only (supervision)."""
        key = (request.name, request.version)
        try:
            await self.handle_load(request)
        except Exception as exc:
            self.answer(key, mailbox.failure("model_cache", request, exc))


async def _sweep_idle(actor: _CacheActor, ttl_seconds: Callable[[], float]) -> None:
    """Unload models idle longer than the config's ``cache_ttl_seconds`` (0 disables)."""
    while True:
        ttl = ttl_seconds()
        await trio.sleep(max(ttl / 4, 1.0) if ttl > 0 else 30.0)
        ttl = ttl_seconds()
        if ttl > 0:
            actor.unload_idle(trio.current_time() - ttl)


async def run(
    root: Path,
    limits: CacheLimits,
    metrics: Metrics,
    cache: ModelCache,
    requests: trio.MemoryReceiveChannel[Envelope[CacheRequest]],
    *,
    pinned: Callable[[], frozenset[str]],
    pinned_versions: Callable[[], frozenset[ModelKey]] = frozenset,
    excluded: Callable[[str], frozenset[str]] = lambda name: frozenset(),
    preload: tuple[str, ...] = (),
    ttl_seconds: Callable[[], float] = lambda: 0.0,
    preferred: Callable[[str], str | None] = lambda name: None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve load and reload requests until cancelled.

    Reports started once the repository has been scanned and preloads are queued; the
    loads themselves complete in the background (``/health/ready`` tells when).
    """
    actor = _CacheActor(root, limits, metrics, cache, pinned, pinned_versions, excluded, preferred)
    await actor.rescan()
    async with requests, trio.open_nursery() as nursery:
        cache.preload(preload)
        nursery.start_soon(_sweep_idle, actor, ttl_seconds)
        task_status.started()
        async for envelope in requests:
            request = envelope.message
            if isinstance(request, ReloadRequest):
                nursery.start_soon(mailbox.handle, "model_cache", envelope, actor.handle_reload)
                continue
            if isinstance(request, UnloadRequest):
                await mailbox.handle("model_cache", envelope, _sync(actor.unload))
                continue
            key = (request.name, request.version)
            joining = key in actor.waiters
            actor.waiters.setdefault(key, []).append(envelope)
            if not joining:
                nursery.start_soon(actor.load_for_waiters, request)


def _sync(function: Callable[[Any], LoadResult]) -> Callable[[Any], Awaitable[LoadResult]]:
    async def call(message: Any) -> LoadResult:
        return function(message)

    return call


def cache_limits(max_models: int, model_cache_mb: float) -> CacheLimits:
    return CacheLimits(max_models=max_models, max_bytes=math.ceil(model_cache_mb * 1024 * 1024))
