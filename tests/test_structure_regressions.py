"""End-to-end regressions for the defects fixed with the structure work (the real app, real models)."""

from __future__ import annotations

from pathlib import Path

import trio

from actors.build.demo_models import build_random_model
from tests.conftest import FAST_FEATURES, fast_features, running_app

# Zeroing these 64 bytes of the seed-1 ``fast`` model leaves a file the flatbuffer verifier
# accepts and the runtime's tensor setup indexes out of range on (IndexError).
ZEROED_AT = 200


async def test_a_corrupt_version_named_by_a_request_fails_that_request_and_nothing_else(
        config_path: Path, repo: Path) -> None:
    """Regression: an IndexError while loading escaped the cache and ended the process."""
    data = (repo / "fast" / "1" / "model.tflite").read_bytes()
    build_random_model(repo, "fast", "2", FAST_FEATURES, seed=1)
    (repo / "fast" / "2" / "model.tflite").write_bytes(data[:ZEROED_AT] + bytes(64) + data[ZEROED_AT + 64:])
    async with running_app(config_path) as h:
        for _ in range(3):
            r = await h.predict(model_name="fast", model_version="2", features=fast_features())
            assert r.status_code == 503 and r.json()["error"]["code"] == "model_unavailable"
        assert (await h.client.get("/health")).status_code == 200
        ok = await h.predict(model_name="fast", model_version="1", features=fast_features())
        assert ok.status_code == 200 and ok.json()["model"]["version"] == "1"


async def test_model_names_the_repository_cannot_hold_are_400_at_the_edge(config_path: Path) -> None:
    """Regression: '..', '.', '...' and '_x' passed the name check, then the repository raised."""
    async with running_app(config_path) as h:
        for name in ("..", ".", "...", "_x", "a/b"):
            r = await h.admin_post("/models", json={"name": name, "version": "1", "model_base64": "AAAA",
                                                    "metadata": {"features": ["a"]}})
            assert r.status_code == 400, (name, r.text)
            assert r.json()["error"]["code"] == "bad_request"
        assert (await h.client.get("/health")).status_code == 200


async def test_batch_level_fields_are_refused_like_the_single_routes_unknown_fields(config_path: Path) -> None:
    """Regression: a batch-level model_version was silently ignored."""
    item = {"model_name": "fast", "features": fast_features()}
    async with running_app(config_path) as h:
        single = await h.client.post("/predict", json={**item, "modle_version": "2"})
        batch = await h.client.post("/predict/batch", json={"requests": [item], "model_version": "2"})
        assert single.status_code == batch.status_code == 400
        assert batch.json()["error"]["code"] == single.json()["error"]["code"] == "bad_request"
        assert batch.json()["error"]["details"]["unknown"] == ["model_version"]


async def test_a_deregistered_version_stays_out_after_a_restart(config_path: Path, repo: Path) -> None:
    """Regression: the cache preloaded the newest (deregistered) version before the state was restored."""
    build_random_model(repo, "fast", "2", FAST_FEATURES, seed=11)
    async with running_app(config_path) as h:
        pinned = await h.admin_post("/models/fast/switch", json={"version": "1", "strategy": "immediate"})
        assert pinned.status_code == 202, pinned.text
        with trio.fail_after(10):
            await h.service.transitions.wait_until(lambda v: (p := v.plans.get("fast")) is not None
                                                   and p.stable == "1" and not p.candidate)
        r = await h.client.delete("/models/fast/versions/2", headers={"X-Admin-Key": h.service.settings.admin_key})
        assert r.status_code == 200, r.text
    async with running_app(config_path, preload=("fast",)) as h:
        served = await h.predict(model_name="fast", features=fast_features())
        assert served.status_code == 200 and served.json()["model"]["version"] == "1"
        refused = await h.predict(model_name="fast", model_version="2", features=fast_features())
        assert refused.status_code == 409 and refused.json()["error"]["code"] == "version_deregistered"
        assert ("fast", "2") not in h.service.cache.view.models
