"""The model cache actor: lazy loads off the loop, coalescing, failures, reloads, LRU and TTL.

Every test runs the real actor (``actors/model_cache.py``) in a nursery against a private copy
of the shared model repository; models are real TFLite files loaded in worker threads.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from actors import model_cache
from actors.build.demo_models import build_random_model
from actors.core.errors import RouterError
from actors.mailbox import Envelope
from actors.model_cache import CacheLimits, CacheRequest, ModelCache, _CacheActor
from actors.serving.metrics import Metrics
from actors.storage.model_repo import MODEL_FILE
from actors.storage.tflite_backend import LoadedModel, load_model
from actors.web.errors import http_status
from tests.conftest import FAST_FEATURES

GARBAGE = b"this is not a flatbuffer" * 8


@attrs.define
class Running:
    cache: ModelCache
    metrics: Metrics


@asynccontextmanager
async def running_cache(
    root: Path,
    *,
    limits: CacheLimits | None = None,
    pinned: frozenset[str] = frozenset(),
    preload: tuple[str, ...] = (),
    ttl_seconds: float = 0.0,
    preferred: Callable[[str], str | None] = lambda name: None,
    excluded: Callable[[str], frozenset[str]] = lambda name: frozenset(),
) -> AsyncIterator[Running]:
    """Start the cache actor with ``nursery.start``; cancel it on exit."""
    metrics = Metrics()
    send, recv = trio.open_memory_channel[Envelope[CacheRequest]](64)
    cache = ModelCache(send, excluded=excluded)
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(
            model_cache.run, root, limits or CacheLimits(), metrics, cache, recv, excluded=excluded,
            pinned=lambda: pinned, preload=preload, ttl_seconds=lambda: ttl_seconds, preferred=preferred))
        yield Running(cache, metrics)
        nursery.cancel_scope.cancel()


@attrs.define
class CountingLoader:
    """Wraps ``load_model``: counts calls per (name, version), optionally waits on a gate."""

    calls: list[tuple[str, str]] = attrs.field(factory=list)
    gate: threading.Event | None = None
    entered: threading.Event = attrs.field(factory=threading.Event)

    def __call__(self, path: Path, name: str, version: str) -> LoadedModel:
        self.calls.append((name, version))
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(timeout=10), "test never opened the load gate"
        return load_model(path, name, version)

    async def wait_entered(self) -> None:
        """Block (in a worker thread, with a timeout) until a load has started."""
        assert await trio.to_thread.run_sync(self.entered.wait, 5), "no load started"


@pytest.fixture
def loader(monkeypatch: pytest.MonkeyPatch) -> CountingLoader:
    counting = CountingLoader()
    monkeypatch.setattr(model_cache, "load_model", counting)
    return counting


def corrupt(repo: Path, name: str, version: str) -> None:
    (repo / name / version / MODEL_FILE).write_bytes(GARBAGE)


def add_version(repo: Path, name: str, version: str, *, broken: bool = False) -> None:
    build_random_model(repo, name, version, FAST_FEATURES, seed=int(version) + 10)
    if broken:
        corrupt(repo, name, version)


async def api_error(call: Callable[[], Any]) -> RouterError:
    with trio.fail_after(10), pytest.raises(RouterError) as info:
        await call()
    return info.value


# ------------------------------------------------------------------ loading ----


async def test_lazy_load_on_get_and_lookup_fast_path(repo: Path, loader: CountingLoader) -> None:
    """Nothing loads at start; ``get`` loads once; afterwards ``lookup`` answers without the actor."""
    async with running_cache(repo) as running:
        cache = running.cache
        assert cache.view.catalog == {"backup": ("1",), "fast": ("1",), "windowed": ("1",)}
        assert cache.lookup("fast") is None
        assert cache.view.models == {}
        with trio.fail_after(10):
            model = await cache.get("fast")
        assert (model.name, model.version) == ("fast", "1")
        assert model.metadata.features == FAST_FEATURES
        assert cache.lookup("fast") is model
        assert cache.lookup("fast", "1") is model
        assert cache.view.active == {"fast": "1"}
        assert await cache.get("fast") is model
        assert loader.calls == [("fast", "1")]
        assert running.metrics.registry.get_sample_value("model_router_models_loaded") == 1


async def test_preload_loads_in_background(repo: Path, loader: CountingLoader) -> None:
    """``preload`` names are loaded without any caller asking."""
    async with running_cache(repo, preload=("backup",)) as running:
        with trio.fail_after(10):
            while running.cache.lookup("backup") is None:
                await trio.testing.wait_all_tasks_blocked()
        assert loader.calls == [("backup", "1")]


async def test_concurrent_gets_coalesce_into_one_load(repo: Path, loader: CountingLoader) -> None:
    """Five concurrent ``get``s of one model while its load is in flight cause exactly one load."""
    loader.gate = threading.Event()
    results: list[LoadedModel] = []

    async def fetch() -> None:
        results.append(await running.cache.get("windowed"))

    async with running_cache(repo) as running:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                for _ in range(5):
                    nursery.start_soon(fetch)
                await loader.wait_entered()  # the single load is parked at the gate
                await trio.testing.wait_all_tasks_blocked()  # all five requests are queued
                assert loader.calls == [("windowed", "1")]
                loader.gate.set()
        assert len(results) == 5
        assert all(r is results[0] for r in results)
        assert loader.calls == [("windowed", "1")]


async def test_corrupt_model_is_503_with_reason_and_others_still_load(repo: Path) -> None:
    """A garbage model.tflite fails with 503 model_unavailable naming why; other models are unaffected."""
    corrupt(repo, "backup", "1")
    async with running_cache(repo) as running:
        cache = running.cache
        error = await api_error(lambda: cache.get("backup"))
        assert http_status(error) == 503 and error.code == "model_unavailable"
        assert set(error.details["reasons"]) == {"1"}
        assert "corrupt" in error.details["reasons"]["1"]
        assert "corrupt" in cache.view.failures[("backup", "1")]
        with trio.fail_after(10):
            fast = await cache.get("fast")
        assert fast.name == "fast" and cache.lookup("backup") is None
        failures = running.metrics.registry.get_sample_value(
            "model_router_model_load_failures_total", {"model_name": "backup"})
        assert failures == 1


# Zeroing these 64 bytes of the seed-1 ``fast`` model leaves a file the flatbuffer verifier
# accepts but the runtime's tensor setup indexes out of range on (IndexError, not a load error).
ZEROED_AT = 200


async def test_a_load_that_raises_anything_marks_the_version_failed_and_the_actor_goes_on(repo: Path) -> None:
    """Supervision: any exception while loading fails that load only (regression: IndexError killed the service)."""
    data = (repo / "fast" / "1" / MODEL_FILE).read_bytes()
    add_version(repo, "fast", "2")
    (repo / "fast" / "2" / MODEL_FILE).write_bytes(data[:ZEROED_AT] + bytes(64) + data[ZEROED_AT + 64:])
    async with running_cache(repo) as running:
        cache = running.cache
        error = await api_error(lambda: cache.get("fast", "2"))
        assert http_status(error) == 503 and error.code == "model_unavailable"
        assert cache.view.failures[("fast", "2")]
        with trio.fail_after(10):
            assert (await cache.get("fast", "1")).version == "1"
            assert (await cache.get("windowed")).name == "windowed"


async def test_an_unexpected_exception_in_the_loader_is_a_failed_load(
        repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever the backend raises (here a KeyError), the version is marked failed with the reason."""
    def explode(path: Path, name: str, version: str) -> LoadedModel:
        if name == "fast":
            raise KeyError("subgraph 0")
        return load_model(path, name, version)

    monkeypatch.setattr(model_cache, "load_model", explode)
    async with running_cache(repo) as running:
        error = await api_error(lambda: running.cache.get("fast"))
        assert "KeyError" in error.details["reasons"]["1"]
        assert "KeyError" in running.cache.view.failures[("fast", "1")]
        with trio.fail_after(10):
            assert (await running.cache.get("backup")).name == "backup"


async def test_preload_loads_the_version_the_plan_serves_not_the_newest(repo: Path) -> None:
    """Regression: a model pinned to an older version preloaded its newest version instead."""
    add_version(repo, "fast", "2")
    async with running_cache(repo, preload=("fast",), preferred=lambda name: "1" if name == "fast" else None
                             ) as running:
        with trio.fail_after(10):
            while running.cache.lookup("fast") is None:
                await running.cache.get("fast")
        assert set(running.cache.view.models) == {("fast", "1")}


async def test_a_deregistered_version_is_never_loaded_or_handed_out(repo: Path) -> None:
    """Regression: after a restart a deregistered newest version was preloaded and served."""
    add_version(repo, "fast", "2")
    async with running_cache(repo, preload=("fast",), excluded=lambda name: frozenset({"2"})) as running:
        with trio.fail_after(10):
            assert (await running.cache.get("fast")).version == "1"
        error = await api_error(lambda: running.cache.get("fast", "2"))
        assert http_status(error) == 409 and error.code == "version_deregistered"
        assert ("fast", "2") not in running.cache.view.models


async def test_unknown_model_is_404_model_not_found(repo: Path) -> None:
    """A model absent from the repository: 404 ``model_not_found`` listing what exists."""
    async with running_cache(repo) as running:
        error = await api_error(lambda: running.cache.get("nope"))
        assert http_status(error) == 404 and error.code == "model_not_found"
        assert error.details["available"] == ["backup", "fast", "windowed"]


async def test_unknown_version_is_404_version_not_found(repo: Path) -> None:
    """An existing model with a missing version: 404 ``version_not_found``."""
    async with running_cache(repo) as running:
        error = await api_error(lambda: running.cache.get("fast", "9"))
        assert http_status(error) == 404 and error.code == "version_not_found"
        assert error.details["available"] == ["1"]


async def test_explicit_version_added_after_start_is_found(repo: Path) -> None:
    """Asking for a version not yet in the catalog rescans the repository."""
    async with running_cache(repo) as running:
        add_version(repo, "fast", "2")
        with trio.fail_after(10):
            model = await running.cache.get("fast", "2")
        assert model.version == "2"
        assert running.cache.view.catalog["fast"] == ("1", "2")


async def test_newest_loadable_version_served_when_newest_is_broken(
        repo: Path, loader: CountingLoader) -> None:
    """Without a version the newest that loads is served; the broken newer one is recorded."""
    add_version(repo, "fast", "2", broken=True)
    async with running_cache(repo) as running:
        with trio.fail_after(10):
            model = await running.cache.get("fast")
        assert model.version == "1"
        assert loader.calls == [("fast", "2"), ("fast", "1")]
        assert ("fast", "2") in running.cache.view.failures
        assert running.cache.view.active["fast"] == "1"


# ------------------------------------------------------------------ reload ----


async def test_reload_activates_new_version(repo: Path) -> None:
    """``reload`` picks up a new version folder and makes it the active one."""
    async with running_cache(repo) as running:
        cache = running.cache
        with trio.fail_after(10):
            old = await cache.get("fast")
            add_version(repo, "fast", "2")
            result = await cache.reload("fast")
        assert result.model is not None and result.model.version == "2"
        assert result.previous_version == "1"
        assert cache.view.active["fast"] == "2"
        assert cache.lookup("fast") is result.model
        assert cache.lookup("fast", "1") is old  # still resident, just not active


async def test_reload_of_broken_newer_version_is_409_and_old_keeps_serving(repo: Path) -> None:
    """A broken new version fails the reload with 409; the previous version stays active."""
    async with running_cache(repo) as running:
        cache = running.cache
        with trio.fail_after(10):
            old = await cache.get("fast")
        add_version(repo, "fast", "2", broken=True)
        error = await api_error(lambda: cache.reload("fast"))
        assert http_status(error) == 409 and error.code == "model_reload_failed"
        assert error.details["version"] == "2" and error.details["serving"] == "1"
        assert "corrupt" in error.details["reason"]
        assert cache.lookup("fast") is old
        assert ("fast", "2") in cache.view.failures


async def test_reload_unknown_model_is_404(repo: Path) -> None:
    """Reloading a model that is not in the repository is 404."""
    async with running_cache(repo) as running:
        error = await api_error(lambda: running.cache.reload("ghost"))
        assert http_status(error) == 404 and error.code == "model_not_found"


async def test_reload_caller_cancelled_does_not_crash_actor(repo: Path, loader: CountingLoader) -> None:
    """A reload caller that gives up (HTTP timeout, client gone) must not kill the cache actor.

    Known bug (reported): ``handle_reload`` answers with ``await request.reply.send(...)`` and
    does not catch ``BrokenResourceError`` when the caller already closed its reply channel
    (``handle_load``'s ``answer`` does), so the error escapes the actor's nursery.
    """
    loader.gate = threading.Event()
    async with running_cache(repo) as running:
        with trio.CancelScope() as caller:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(running.cache.reload, "fast")
                await loader.wait_entered()  # the reload's load is parked at the gate
                assert loader.calls == [("fast", "1")]
                caller.cancel()
        assert caller.cancelled_caught
        loader.gate.set()
        with trio.fail_after(10):
            while running.cache.lookup("fast") is None:  # the reload installs, then answers
                await trio.testing.wait_all_tasks_blocked()
            await trio.testing.wait_all_tasks_blocked()
            model = await running.cache.get("backup")
        assert model.name == "backup"
        assert running.cache.view.active["fast"] == "1"


# ------------------------------------------------------------------ eviction ----


async def test_lru_eviction_keeps_pinned_default(repo: Path) -> None:
    """With room for two, loading a third evicts the least recently used unpinned model, never the pin."""
    async with running_cache(repo, limits=CacheLimits(max_models=2), pinned=frozenset({"backup"})) as running:
        cache = running.cache
        with trio.fail_after(20):
            await cache.get("backup")  # oldest, but pinned
            await cache.get("fast")
            await cache.get("windowed")
            assert set(cache.view.models) == {("backup", "1"), ("windowed", "1")}
            assert cache.lookup("fast") is None
            assert "fast" not in cache.view.active
            await cache.get("fast")
            assert set(cache.view.models) == {("backup", "1"), ("fast", "1")}
        assert running.metrics.registry.get_sample_value("model_router_models_loaded") == 2


async def test_lru_eviction_follows_lookups(repo: Path) -> None:
    """Touching a model through ``lookup`` makes it recent: the other unpinned model goes instead."""
    build_random_model(repo, "extra", "1", FAST_FEATURES, seed=7)
    async with running_cache(repo, limits=CacheLimits(max_models=3), pinned=frozenset({"backup"})) as running:
        cache = running.cache
        with trio.fail_after(20):
            await cache.get("backup")
            await cache.get("fast")
            await cache.get("windowed")
            assert cache.lookup("fast") is not None  # fast is now more recent than windowed
            await cache.get("extra")
        assert set(cache.view.models) == {("backup", "1"), ("fast", "1"), ("extra", "1")}


async def test_byte_budget_evicts(repo: Path) -> None:
    """A byte budget that holds one model evicts the previous unpinned one."""
    async with running_cache(repo) as probe:
        with trio.fail_after(10):
            size = (await probe.cache.get("fast")).size_bytes
    limits = CacheLimits(max_models=16, max_bytes=int(size * 1.5))
    async with running_cache(repo, limits=limits) as running:
        with trio.fail_after(20):
            await running.cache.get("fast")
            await running.cache.get("backup")
        assert set(running.cache.view.models) == {("backup", "1")}


# ------------------------------------------------------------------ idle TTL ----


async def test_ttl_unloads_idle_unpinned_models(repo: Path, autojump_clock: trio.testing.MockClock) -> None:
    """With ``ttl_seconds`` the sweeper drops models idle longer than the TTL; pinned ones stay."""
    async with running_cache(repo, pinned=frozenset({"backup"}), ttl_seconds=10.0) as running:
        cache = running.cache
        await cache.get("backup")
        await cache.get("fast")
        await trio.sleep(6)  # virtual time: idle 6 s < 10 s
        assert cache.lookup("fast") is not None  # the lookup also refreshes last use
        await trio.sleep(8)  # idle 8 s since the lookup
        assert ("fast", "1") in cache.view.models
        await trio.sleep(15)  # idle 23 s
        assert ("fast", "1") not in cache.view.models
        assert "fast" not in cache.view.active
        assert ("backup", "1") in cache.view.models
        assert running.metrics.registry.get_sample_value("model_router_models_loaded") == 1


async def test_ttl_zero_disables_unloading(repo: Path, autojump_clock: trio.testing.MockClock) -> None:
    """TTL 0 means models stay loaded however long they are idle."""
    async with running_cache(repo, ttl_seconds=0.0) as running:
        await running.cache.get("fast")
        await trio.sleep(3600)
        assert ("fast", "1") in running.cache.view.models


async def test_unload_idle_directly(repo: Path) -> None:
    """``_CacheActor.unload_idle`` drops exactly the unpinned models used before the cutoff."""
    send, _recv = trio.open_memory_channel[Envelope[CacheRequest]](1)
    cache = ModelCache(send)
    actor = _CacheActor(repo, CacheLimits(), Metrics(), cache, lambda: frozenset({"backup"}), frozenset,
                        lambda name: frozenset())
    await actor.rescan()
    for name in ("backup", "fast", "windowed"):
        model = await trio.to_thread.run_sync(load_model, repo / name / "1", name, "1")
        actor.install(model, make_active=False)
    cache.last_used.update({("backup", "1"): 0.0, ("fast", "1"): 5.0, ("windowed", "1"): 20.0})
    assert actor.unload_idle(cutoff=10.0) == (("fast", "1"),)
    assert set(cache.view.models) == {("backup", "1"), ("windowed", "1")}
    assert cache.view.active == {"backup": "1", "windowed": "1"}
    assert ("fast", "1") not in cache.last_used
    assert actor.unload_idle(cutoff=10.0) == ()
