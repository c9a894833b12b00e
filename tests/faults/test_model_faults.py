"""Model faults, for real: a call that hangs, a call that raises, files corrupted or removed.

Each fault hits one model (``fast``, whose rule falls back to ``backup``); the test
checks that model's reason is visible (/models, /health/detailed), that its fallback
serves, and that the other models (``windowed``) are not affected.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import trio

from tests.conftest import (
    Harness,
    fast_features,
    render_config,
    running_app,
    wait_ready,
    window_features,
)
from tests.faults.backends import FaultyModel, install

ROUTED_FAST = {"asset_class": "crypto", "horizon_ms": 5}
ROUTED_WINDOWED = {"asset_class": "crypto", "horizon_ms": 90_000}


def faulty_config(repo: Path, deadline_ms: int = 200, failures: int = 3) -> str:
    return render_config(repo, config_extra=f"    request_deadline_ms: {deadline_ms}\n",
                         switching=f"    breaker_failures: {failures}\n    breaker_open_seconds: 60\n")


async def version_entry(h: Harness, name: str, version: str = "1") -> tuple[dict, dict]:
    """The version in /models/<name> and in /health/detailed."""
    listed = (await h.client.get(f"/models/{name}")).json()
    in_models = next(v for v in listed["versions"] if v["version"] == version)
    detailed = (await h.client.get("/health/detailed")).json()
    in_health = next((v for v in detailed["versions"] if (v["model"], v["version"]) == (name, version)), {})
    return in_models, in_health


async def test_hanging_call_gets_504_within_the_deadline_and_no_fallback(config_path: Path, repo: Path) -> None:
    """A hung model call is bounded: 504 + error body at the deadline, breaker failures, others unaffected."""
    config_path.write_text(faulty_config(repo))
    async with running_app(config_path) as h:
        await wait_ready(h)
        real = await h.service.cache.get("fast")
        await h.service.cache.get("windowed")
        hanging = FaultyModel(real, hangs=True)
        install(h.service, hanging)
        try:
            results: list[tuple[int, dict, float]] = []

            async def hung_request() -> None:
                started = trio.current_time()
                r = await h.client.post("/predict", json={**ROUTED_FAST, "features": fast_features()})
                results.append((r.status_code, r.json(), trio.current_time() - started))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(hung_request)
                # Other models answer while the call hangs in its worker thread.
                with trio.fail_after(5):
                    while hanging.active == 0:
                        await trio.sleep(0.005)  # polls a thread's counter (no trio event to wait on)
                for _ in range(5):
                    other = await h.predict(**ROUTED_WINDOWED, features=window_features())
                    assert other.status_code == 200 and other.json()["model"]["name"] == "windowed"
                assert not results, "the hung request answered before its deadline"
            status, body, elapsed = results[0]
            assert status == 504 and body["error"]["code"] == "deadline_exceeded", body
            assert body["error"]["details"] == {"model": "fast", "version": "1"}
            assert 0.2 <= elapsed < 1.5  # deadline 200 ms + generous slack; the fallback was not tried
            for _ in range(2):  # waits behind the hung thread: also bounded by its own deadline
                r = await h.predict(**ROUTED_FAST, features=fast_features())
                assert r.status_code == 504
            assert h.service.health.breakers.state(("fast", "1")) == "open"  # 3 failures counted
            served = await h.predict(**ROUTED_FAST, features=fast_features())
            assert served.status_code == 200, served.text
            assert served.json()["model"]["name"] == "backup" and served.json()["fallback_from"] == "fast"
            in_models, in_health = await version_entry(h, "fast")
            assert "request deadline" in in_models["last_error"] and in_models["breaker"] == "open"
            assert "request deadline" in in_health["last_error"] and in_health["breaker"] == "open"
            _, windowed = await version_entry(h, "windowed")
            assert windowed["breaker"] == "closed" and "last_error" not in windowed
        finally:
            hanging.release.set()
        assert await trio.to_thread.run_sync(hanging.idle.wait, 5), "the hung thread was not released"


async def test_batch_with_a_hanging_model_fails_its_items_at_the_deadline(config_path: Path, repo: Path) -> None:
    config_path.write_text(faulty_config(repo, deadline_ms=150))
    async with running_app(config_path) as h:
        await wait_ready(h)
        for _ in range(6):  # backup earns the inline path: past the deadline it still answers
            assert (await h.predict(model_name="backup", features=fast_features())).status_code == 200
        hanging = FaultyModel(await h.service.cache.get("fast"), hangs=True)
        install(h.service, hanging)
        try:
            items = [{"model_name": "fast", "features": fast_features()},
                     {"model_name": "backup", "features": fast_features()}]
            started = trio.current_time()
            r = await h.client.post("/predict/batch", json={"requests": items})
            assert trio.current_time() - started < 1.5
            answers = r.json()["predictions"]
            assert r.status_code == 200 and answers[0]["error"]["code"] == "deadline_exceeded"
            assert answers[1]["model"]["name"] == "backup"
        finally:
            hanging.release.set()
        assert await trio.to_thread.run_sync(hanging.idle.wait, 5)


async def test_model_that_raises_falls_back_and_says_why(config_path: Path, repo: Path) -> None:
    config_path.write_text(faulty_config(repo))
    async with running_app(config_path) as h:
        await wait_ready(h)
        install(h.service, FaultyModel(await h.service.cache.get("fast"), raises=True))
        for _ in range(4):
            r = await h.predict(**ROUTED_FAST, features=fast_features())
            assert r.status_code == 200 and r.json()["model"]["name"] == "backup", r.text
            assert r.json()["fallback_from"] == "fast"
        assert h.service.health.breakers.state(("fast", "1")) == "open"
        in_models, in_health = await version_entry(h, "fast")
        assert "injected fault" in in_models["last_error"] and "injected fault" in in_health["last_error"]
        other = await h.predict(**ROUTED_WINDOWED, features=window_features())
        assert other.status_code == 200 and other.json()["model"]["name"] == "windowed"


def corrupt_truncated(folder: Path) -> None:
    data = (folder / "model.tflite").read_bytes()
    (folder / "model.tflite").write_bytes(data[: len(data) // 3])


def corrupt_random(folder: Path) -> None:
    size = (folder / "model.tflite").stat().st_size
    (folder / "model.tflite").write_bytes(os.urandom(size))


def corrupt_metadata_shape(folder: Path) -> None:
    """The metadata names five features; the model takes three."""
    meta = folder / "metadata.yml"
    text = meta.read_text()
    assert "features: [a, b, c]" in text
    meta.write_text(text.replace("features: [a, b, c]", "features: [a, b, c, d, e]"))


def remove_version(folder: Path) -> None:
    shutil.rmtree(folder)


async def test_corrupt_or_missing_model_files_fall_back_with_a_reason(config_path: Path, repo: Path) -> None:
    """Each corruption of ``fast`` (not loaded yet): a clear load error, the fallback serves, others fine."""
    for corrupt in (corrupt_truncated, corrupt_random, corrupt_metadata_shape):
        folder = repo / "fast" / "1"
        backup = folder.parent / "1.orig"
        shutil.copytree(folder, backup)
        corrupt(folder)
        config_path.write_text(faulty_config(repo))
        async with running_app(config_path) as h:
            await wait_ready(h)
            for _ in range(3):
                r = await h.predict(**ROUTED_FAST, features=fast_features())
                assert r.status_code == 200, (corrupt.__name__, r.text)
                assert r.json()["model"]["name"] == "backup" and r.json()["fallback_from"] == "fast"
            in_models, in_health = await version_entry(h, "fast")
            assert in_models["status"] == "failed" and in_models["error"], (corrupt.__name__, in_models)
            assert in_health.get("breaker", "closed") == "closed"  # a load failure is not a call failure
            other = await h.predict(**ROUTED_WINDOWED, features=window_features())
            assert other.status_code == 200
        shutil.rmtree(folder)
        backup.rename(folder)


async def test_version_folder_removed_while_serving(config_path: Path, repo: Path) -> None:
    """A loaded version keeps serving from memory when its folder goes; a reload says what is missing."""
    config_path.write_text(faulty_config(repo))
    async with running_app(config_path) as h:
        await wait_ready(h)
        assert (await h.predict(**ROUTED_FAST, features=fast_features())).json()["model"]["name"] == "fast"
        remove_version(repo / "fast" / "1")
        for _ in range(3):
            r = await h.predict(**ROUTED_FAST, features=fast_features())
            assert r.status_code == 200 and r.json()["model"]["name"] in ("fast", "backup"), r.text
        reload = await h.admin_post("/reload/fast")
        assert reload.status_code in (404, 503), reload.text
        assert reload.json()["error"]["code"]
        r = await h.predict(**ROUTED_FAST, features=fast_features())
        assert r.status_code == 200, r.text
        other = await h.predict(**ROUTED_WINDOWED, features=window_features())
        assert other.status_code == 200
