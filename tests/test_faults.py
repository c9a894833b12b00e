"""Faults and bad input, end to end: the real app on a real port, real files, real models.

Regression tests for issue 11: a routed model's last version cannot be deleted, no answer or
event carries the server's absolute paths, and a switch answered 202 survives a kill -9.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import trio

from actors.build.demo_models import build_random_model
from actors.storage import registry_store
from tests.conftest import ADMIN_KEY, FAST_FEATURES, fast_features, free_port, render_config, running_app, wait_ready
from tests.test_app_process import LogReader, start


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


async def test_a_switch_answered_202_survives_a_kill_9_at_once_and_completes(config_path: Path, repo: Path) -> None:
    """The operation is on disk before the 202: SIGKILL right after it, restart, it resumes and completes.

    fast@2 is the newest version, so it serves at start; the switch goes back to fast@1.
    """
    build_random_model(repo, "fast", "2", FAST_FEATURES, seed=4)
    state_file = config_path.parent / "registry.json"
    env = {"MODEL_ROUTER_STATE_FILE": str(state_file)}
    port = free_port()
    process = start(config_path, port, env)
    log = LogReader(process)
    try:
        await log.wait_for("serving")
        body = json.dumps({"version": "1", "strategy": "gradual", "steps": [50, 100], "interval_s": 0.2}).encode()
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(b"POST /models/fast/switch HTTP/1.1\r\nHost: t\r\nX-Admin-Key: proc-test-key\r\n"
                              b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        answer = b""
        with trio.fail_after(10):
            while b"}}" not in answer:  # kill the moment the whole answer is in
                answer += await stream.receive_some(65536)
        process.kill()
        await stream.aclose()
        assert answer.startswith(b"HTTP/1.1 202"), answer
        operation_id = json.loads(answer.partition(b"\r\n\r\n")[2])["operation_id"]
        await trio.to_thread.run_sync(process.wait, 10)
        assert operation_id in registry_store.decode(state_file.read_text()).operations

        process = start(config_path, port, env)
        log = LogReader(process)
        await log.wait_for_all({f"resuming switch {operation_id}": 1, f"switch {operation_id} completed": 1,
                                f"on http://127.0.0.1:{port}": 1})
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            operation = (await client.get(f"/switches/{operation_id}")).json()
            assert operation["state"] == "completed", operation
            served = await client.post("/predict", json={"model_name": "fast", "features": fast_features()})
            assert served.json()["model"] == {"name": "fast", "version": "1"}
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
