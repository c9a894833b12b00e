"""kill -9 at bad moments, then a restart: the state is the last committed one.

The registry state is written atomically (temp file + fsync + rename), so a SIGKILL
during a switch, an upload or a state write leaves either the previous file or the new
one, never half of one: after the restart the file decodes, no version is lost, and a
deregistered version is not resurrected. The temp file a killed write leaves behind is
removed by the next start (and never while its writer lives).
"""

from __future__ import annotations

import base64
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from actors.build.demo_models import build_random_model
from actors.storage import registry_store
from actors.storage.atomic import TEMP_NAME, remove_stale_temp_files
from tests.conftest import FAST_FEATURES, fast_features, render_config
from tests.faults.procs import ADMIN, ROOT, client, service

ROUTED = {"asset_class": "crypto", "horizon_ms": 5, "features": fast_features()}


def prepare(repo: Path, config: Path) -> Path:
    """fast@1..3 on disk; the state file sits beside the config."""
    build_random_model(repo, "fast", "2", FAST_FEATURES, seed=21)
    build_random_model(repo, "fast", "3", FAST_FEATURES, seed=22)
    config.write_text(render_config(repo))
    return config.parent / "state.json"


def temp_files(*folders: Path) -> set[Path]:
    """Temp files of atomic writes in ``folders`` and below."""
    return {p for folder in folders for p in folder.rglob(".*.tmp") if TEMP_NAME.fullmatch(p.name)}


# A real atomic write, stopped after the data is written and before fsync + rename, then killed.
STALLED_WRITER = """
import os, sys, time
from pathlib import Path
from actors.storage import atomic

def stall(fd):
    print("writing", flush=True)
    time.sleep(120)

atomic.os.fsync = stall
atomic.atomic_write_bytes(Path(sys.argv[1]), b"x" * 65536)
"""


def committed(state: Path) -> registry_store.RegistryState:
    """The state file as a restart reads it; it must always decode (never half-written)."""
    return registry_store.decode(state.read_text())


async def versions_of(http, name: str) -> dict[str, str]:
    body = (await http.get(f"/models/{name}")).json()
    return {v["version"]: v["status"] for v in body["versions"]}


async def test_kill9_mid_gradual_switch_then_restart_resumes_from_the_committed_state(
        config_path: Path, repo: Path) -> None:
    state = prepare(repo, config_path)
    async with service(config_path, state) as proc, client(proc) as http:
        pinned = await http.post("/models/fast/switch", headers=ADMIN, json={"version": "1", "strategy": "immediate"})
        assert pinned.status_code == 202, pinned.text
        with trio.fail_after(10):
            while (await http.get(f"/switches/{pinned.json()['operation_id']}")).json()["state"] != "completed":
                await trio.sleep(0.02)
        gone = await http.delete("/models/fast/versions/3", headers=ADMIN)
        assert gone.status_code == 200, gone.text
        r = await http.post("/models/fast/switch", headers=ADMIN,
                            json={"version": "2", "strategy": "gradual", "steps": [10, 50, 100], "interval_s": 30})
        assert r.status_code == 202, r.text
        op = r.json()["operation_id"]
        with trio.fail_after(10):  # mid-step: the plan sends 10 % to version 2 and waits 30 s
            while (await http.get(f"/switches/{op}")).json().get("weight_percent", 0) < 10:
                await trio.sleep(0.05)
            while op not in committed(state).operations if state.exists() else True:
                await trio.sleep(0.05)
        assert (await http.post("/predict", json=ROUTED)).status_code == 200
        proc.kill9()
    before = committed(state)
    assert "3" in before.record("fast").deregistered
    async with service(config_path, state) as proc, client(proc) as http:
        after = (await http.get(f"/switches/{op}")).json()
        assert after["state"] in ("running", "completed"), after
        assert after["weight_percent"] >= before.operations[op].to_dict()["weight_percent"]
        listed = await versions_of(http, "fast")
        assert set(listed) == {"1", "2", "3"} and listed["3"] == "deregistered", listed
        assert (await http.post("/predict", json=ROUTED)).status_code == 200


async def test_kill9_during_an_upload_leaves_no_half_version(config_path: Path, repo: Path, tmp_path: Path) -> None:
    state = prepare(repo, config_path)
    upload_dir = build_random_model(tmp_path / "upload", "fast", "7", FAST_FEATURES, seed=77)
    content = base64.b64encode((upload_dir / "model.tflite").read_bytes()).decode()
    body = json.dumps({"name": "fast", "version": "7", "model_base64": content,
                       "metadata": {"features": list(FAST_FEATURES), "labels": ["SELL", "HOLD", "BUY"]}}).encode()
    async with service(config_path, state) as proc:
        host, port = proc.url.removeprefix("http://").split(":")
        stream = await trio.open_tcp_stream(host, int(port))
        head = (f"POST /models HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"X-Admin-Key: {ADMIN['X-Admin-Key']}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
        await stream.send_all(head + body[: len(body) // 2])  # killed with half the upload sent
        proc.kill9()
        await stream.aclose()
    # A crash between the upload's two writes (metadata, then model) leaves a folder without a model.
    leftover = repo / "fast" / "8"
    leftover.mkdir()
    (leftover / "metadata.yml").write_text((upload_dir / "metadata.yml").read_text())
    async with service(config_path, state) as proc, client(proc) as http:
        listed = await versions_of(http, "fast")
        assert set(listed) == {"1", "2", "3"}, listed  # neither 7 nor the half-written 8
        for version in ("7", "8"):
            retry = json.loads(body)
            retry["version"] = version
            up = await http.post("/models", headers=ADMIN, json=retry)
            assert up.status_code == 201, up.text  # a leftover never blocks the upload
        assert set(await versions_of(http, "fast")) == {"1", "2", "3", "7", "8"}


async def test_kill9_mid_write_leaves_a_temp_file_the_next_start_removes(config_path: Path, repo: Path) -> None:
    state = prepare(repo, config_path)
    targets = [state, repo / "fast" / "2" / "model.tflite"]
    model_before = targets[1].read_bytes()
    writers = [subprocess.Popen([sys.executable, "-c", STALLED_WRITER, str(target)], cwd=ROOT,
                                stdout=subprocess.PIPE, text=True) for target in targets]
    try:
        for writer in writers:
            assert writer.stdout is not None and writer.stdout.readline().strip() == "writing"
        left = temp_files(state.parent, repo)
        assert len(left) == 2, left
        assert remove_stale_temp_files(state.parent) == 0  # a live writer's file is never taken
        for writer in writers:
            writer.kill()  # SIGKILL mid-write
            writer.wait(timeout=10)
    finally:
        for writer in writers:
            if writer.poll() is None:
                writer.kill()
                writer.wait()
            if writer.stdout is not None:
                writer.stdout.close()
    assert temp_files(state.parent, repo) == left and not state.exists()
    async with service(config_path, state) as proc, client(proc) as http:
        assert temp_files(state.parent, repo) == set()
        assert any("removed 2 temp file(s) left by interrupted writes" in line for line in proc.log.lines)
        assert targets[1].read_bytes() == model_before  # the interrupted write never replaced it
        assert set(await versions_of(http, "fast")) == {"1", "2", "3"}
        assert (await http.post("/predict", json=ROUTED)).status_code == 200


async def kill_loop(config_path: Path, repo: Path, restarts: int) -> None:
    """SIGKILL at random moments while the state file is rewritten; every restart reads a whole file."""
    state = prepare(repo, config_path)
    rng = random.Random(11)
    deregistered: set[str] = set()
    left: set[Path] = set()  # temp files the last kill left (a kill mid-write)
    for round_ in range(restarts):
        async with service(config_path, state) as proc, client(proc) as http:
            assert not [p for p in left if p.exists()], "a start kept a killed write's temp file"
            if state.exists():
                assert committed(state).record("fast").deregistered >= deregistered  # nothing resurrected
            listed = await versions_of(http, "fast")
            assert {"1", "2"} <= set(listed)  # nothing lost
            for version in deregistered:
                assert listed[version] == "deregistered", (round_, listed)
            # Churn the state: switches back and forth write it again and again.
            async with trio.open_nursery() as nursery:
                async def churn() -> None:
                    for i in range(50):
                        await http.post("/models/fast/switch", headers=ADMIN,
                                        json={"version": "1" if i % 2 else "2", "strategy": "immediate"})
                nursery.start_soon(churn)
                await trio.sleep(rng.uniform(0.0, 0.3))  # a random moment, on purpose
                if round_ == 1 and "3" not in deregistered:
                    r = await http.delete("/models/fast/versions/3", headers=ADMIN)
                    if r.status_code == 200:
                        with trio.fail_after(5):
                            while "3" not in (committed(state).record("fast").deregistered
                                              if state.exists() else ()):
                                await trio.sleep(0.02)
                        deregistered.add("3")
                proc.kill9()
                nursery.cancel_scope.cancel()
        assert not list(state.parent.glob("*.corrupt")), "a state file was found half-written"
        left = temp_files(state.parent)


async def test_kill9_in_a_loop_during_state_writes(config_path: Path, repo: Path) -> None:
    await kill_loop(config_path, repo, restarts=3)


@pytest.mark.slow
async def test_kill9_in_a_loop_during_state_writes_soak(config_path: Path, repo: Path) -> None:
    await kill_loop(config_path, repo, restarts=20)
