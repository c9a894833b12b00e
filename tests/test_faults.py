"""Faults and bad input, end to end: the real app on a real port, real files, real models.

Regression tests for issue 11: a routed model's last version cannot be deleted, and no answer
or event carries the server's absolute paths.
"""

from __future__ import annotations

import json
from pathlib import Path

import trio

from actors.build.demo_models import build_random_model
from tests.conftest import ADMIN_KEY, FAST_FEATURES, fast_features, render_config, running_app, wait_ready


async def test_deleting_the_last_version_of_a_routed_model_is_refused(config_path: Path) -> None:
    """windowed@1 (rule 1's model, not loaded yet) was deletable; routed requests then got 404."""
    async with running_app(config_path) as h:
        await wait_ready(h)
        refused = await h.client.delete("/models/windowed/versions/1", headers={"X-Admin-Key": ADMIN_KEY})
        assert refused.status_code == 409, refused.text
        error = refused.json()["error"]
        assert error["code"] == "version_routed"
        assert error["details"]["rules"] == [{"index": 1, "description": "crypto long", "as": "model"}]
        answer = await h.predict(asset_class="crypto", horizon_ms=90_000,
                                 features={"x": [0.1] * 4, "y": [0.2] * 4})
        assert answer.status_code == 200 and answer.json()["model"] == {"name": "windowed", "version": "1"}



async def test_no_answer_or_event_carries_an_absolute_server_path(tmp_path: Path, repo: Path) -> None:
    folder = tmp_path / "conf"
    folder.mkdir()
    config = folder / "rules.yml"
    text = render_config(repo).replace(json.dumps(str(repo)), "../models")
    assert str(tmp_path) not in text
    config.write_text(text)
    build_random_model(repo, "fast", "2", FAST_FEATURES, seed=4)
    model_file = repo / "fast" / "2" / "model.tflite"
    model_file.write_bytes(model_file.read_bytes()[:-8] + bytes(8))  # no longer its recorded sha256
    async with running_app(config) as h:
        await wait_ready(h)
        seen: list[str] = []

        async def ask(method: str, path: str, **kwargs: object) -> None:
            response = await h.client.request(method, path, headers={"X-Admin-Key": ADMIN_KEY}, **kwargs)
            seen.append(f"{method} {path} -> {response.status_code} {response.text}")

        await ask("POST", "/models", json={"name": "fast", "version": "7"})  # no such folder
        await ask("POST", "/models", json={"name": "fast", "version": "2"})  # corrupt: refused
        config.rename(folder / "moved.yml")
        await ask("POST", "/config/reload")  # the file is gone: "cannot read"
        (folder / "moved.yml").rename(config)
        await ask("POST", "/config/reload")
        for path in ("/stats", "/reload/events", "/models", "/models/fast", "/models/fast/versions",
                     "/health", "/health/detailed", "/rules", "/switches"):
            await ask("GET", path)
        with trio.fail_after(5):
            await ask("POST", "/predict", json={"model_name": "fast", "features": fast_features()})
    joined = "\n".join(seen)
    assert "fast/7 has no model.tflite" in joined
    assert "fast/2: model.tflite does not match the sha256 in metadata.yml" in joined
    assert "cannot read rules.yml: No such file or directory" in joined
    assert str(tmp_path) not in joined, [line for line in seen if str(tmp_path) in line]
