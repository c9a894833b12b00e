"""The real CLI in its own process: `python app.py --config --host --port`, signals, exit codes.

Progress is read from the process's own log lines (event-driven), never by sleeping.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trio

from tests.conftest import RedisServer, fast_features, free_port, render_config

ROOT = Path(__file__).resolve().parent.parent


class LogReader:
    """Reads the child's stderr line by line in a worker thread."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        assert process.stderr is not None
        self.stream = process.stderr
        self.lines: list[str] = []

    async def wait_for_all(self, wanted: dict[str, int], timeout: float = 30.0) -> None:
        """Until each text has appeared in the log (so far and from now on) the given number of times."""
        with trio.fail_after(timeout):
            while any(sum(text in line for line in self.lines) < count for text, count in wanted.items()):
                line = await trio.to_thread.run_sync(self.stream.readline, abandon_on_cancel=True)
                if not line:
                    raise AssertionError(f"process exited early:\n{''.join(self.lines)}")
                self.lines.append(line)

    async def wait_for(self, text: str, timeout: float = 20.0) -> str:
        with trio.move_on_after(timeout):
            return await self._read_until(text)
        raise AssertionError(f"no {text!r} within {timeout:g} s; the process logged:\n{''.join(self.lines)}")

    async def _read_until(self, text: str) -> str:
        while True:
            line = await trio.to_thread.run_sync(self.stream.readline, abandon_on_cancel=True)
            if not line:
                raise AssertionError(f"process exited before logging {text!r}:\n{''.join(self.lines)}")
            self.lines.append(line)
            if text in line:
                return line


def start(config: Path, port: int, env_extra: dict[str, str] | None = None, *args: str) -> subprocess.Popen[str]:
    """``python app.py`` on 127.0.0.1:``port`` with the test admin key; ``args`` are further options."""
    env = {**os.environ, "MODEL_ROUTER_ADMIN_KEY": "proc-test-key", **(env_extra or {})}
    return subprocess.Popen(
        [sys.executable, str(ROOT / "app.py"), "--config", str(config), "--host", "127.0.0.1",
         "--port", str(port), *args],
        cwd=ROOT, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )


def start_workers(config: Path, port: int, *args: str) -> subprocess.Popen[str]:
    """Two workers under the supervisor, sharing one state file beside the config."""
    return start(config, port, None, "--workers", "2", "--state-file", str(config.parent / "state.json"), *args)


async def test_sighup_reloads_and_sigterm_stops_gracefully(config_path: Path, repo: Path) -> None:
    port = free_port()
    process = start(config_path, port, {"PRELOAD_MODELS": "windowed"})
    log = LogReader(process)
    try:
        await log.wait_for(f"serving {config_path} on http://127.0.0.1:{port}")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            r = await client.post("/predict", json={"asset_class": "crypto", "horizon_ms": 5,
                                                    "features": fast_features()})
            assert r.status_code == 200 and r.json()["model"]["name"] == "fast"
            health = (await client.get("/health")).json()
            assert "windowed@1" in health["models_loaded"] or "windowed" in "".join(log.lines)

            # Disable file watching so only the signal can trigger the next reload.
            config_path.write_text(render_config(repo, default="fast", reload="    enabled: false\n"))
            await log.wait_for("reload (file) ok")
            config_path.write_text(render_config(repo, default="windowed", reload="    enabled: false\n"))
            process.send_signal(signal.SIGHUP)
            await log.wait_for("reload (signal) ok")
            rules = (await client.get("/rules")).json()
            assert rules["config"]["default_model"] == "windowed"

        process.send_signal(signal.SIGTERM)
        await log.wait_for("received SIGTERM")
        await log.wait_for("model-router stopped")
        code = await trio.to_thread.run_sync(process.wait, 10)
        assert code == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


async def test_sigint_exits_zero_and_invalid_config_exits_two(config_path: Path, tmp_path: Path) -> None:
    port = free_port()
    process = start(config_path, port)
    log = LogReader(process)
    try:
        await log.wait_for("serving")
        process.send_signal(signal.SIGINT)
        await log.wait_for("model-router stopped")
        assert await trio.to_thread.run_sync(process.wait, 10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    bad = tmp_path / "bad.yml"
    bad.write_text("model_router:\n  rules:\n    - match: {horizon_ms: '>>5'}\n      model: fast\n")
    result = await trio.run_process(
        [sys.executable, str(ROOT / "app.py"), "--config", str(bad), "--port", str(free_port())],
        cwd=ROOT, capture_stderr=True, check=False)
    assert result.returncode == 2
    message = result.stderr.decode()
    assert "rules[0].match.horizon_ms" in message and "default" in message


async def test_two_workers_share_the_port_and_reload_together(config_path: Path, repo: Path,
                                                              redis_server: RedisServer) -> None:
    config_path.write_text(render_config(repo, redis_url=redis_server.url))
    port = free_port()
    process = start_workers(config_path, port)
    log = LogReader(process)
    try:
        await log.wait_for_all({"command stream followed": 2, "serving": 2})
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            r = await client.post("/config/reload", headers={"X-Admin-Key": "proc-test-key"})
            assert r.status_code == 200
            line = await log.wait_for("reload (control) ok")  # the other worker followed
            assert " w1 " in line or " w2 " in line
            workers = set()
            with trio.fail_after(10):
                while len(workers) < 2:  # new connections are spread over both workers
                    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as fresh:
                        workers.add((await fresh.get("/health")).json()["worker"])
            assert workers == {1, 2}
        process.send_signal(signal.SIGTERM)
        await log.wait_for("all workers stopped")
        assert await trio.to_thread.run_sync(process.wait, 15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


async def test_two_workers_share_the_data_port_too(config_path: Path) -> None:
    """With --workers 2 each worker binds the data port with SO_REUSEPORT: both answer on it."""
    port, data_port = free_port(), free_port()
    process = start_workers(config_path, port, "--data-port", str(data_port))
    log = LogReader(process)
    try:
        await log.wait_for_all({f"data plane on http://127.0.0.1:{data_port}": 2})
        workers = set()
        with trio.fail_after(10):
            while len(workers) < 2:  # each new connection may land on either worker
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{data_port}", timeout=10) as fresh:
                    answer = await fresh.post("/predict", json={"model_name": "fast", "features": fast_features()})
                    assert answer.status_code == 200
                    workers.add((await fresh.get("/health")).json()["worker"])
        assert workers == {1, 2}
        process.send_signal(signal.SIGTERM)
        await log.wait_for("all workers stopped")
        assert await trio.to_thread.run_sync(process.wait, 15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


async def test_sigterm_answers_what_the_data_plane_read_then_exits_0(config_path: Path) -> None:
    """Pipelined requests fully sent before SIGTERM are all answered; then new connections are refused."""
    port, data_port = free_port(), free_port()
    process = start(config_path, port, {"MODEL_ROUTER_DATA_PORT": str(data_port)})
    log = LogReader(process)
    try:
        await log.wait_for(f"data plane on http://127.0.0.1:{data_port}")
        body = json.dumps({"model_name": "fast", "features": fast_features()}).encode()
        request = (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        stream = await trio.open_tcp_stream("127.0.0.1", data_port)
        async with stream:
            await stream.send_all(b"GET /health/ready HTTP/1.1\r\nHost: x\r\n\r\n")
            with trio.fail_after(10):
                assert (await stream.receive_some(65536)).startswith(b"HTTP/1.1 200")  # warm: the model loaded
            await stream.send_all(request * 20)  # one write: the server reads all 20 in one receive
            with trio.fail_after(10):
                received = await stream.receive_some(65536)  # it has read them: now stop it
            process.send_signal(signal.SIGTERM)
            with trio.fail_after(10):
                while received.count(b"HTTP/1.1 ") < 20:
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        break
                    received += chunk
        assert received.count(b"HTTP/1.1 200 OK") == 20, received[-500:]
        assert await trio.to_thread.run_sync(process.wait, 15) == 0
        with pytest.raises(OSError):
            await trio.open_tcp_stream("127.0.0.1", data_port)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


async def test_json_logs_carry_the_request_id_on_both_ports(config_path: Path) -> None:
    """--log-format json: every log line is one JSON object; a request's X-Request-ID is on the lines it causes."""
    port, data_port = free_port(), free_port()
    process = start(config_path, port, None, "--data-port", str(data_port), "--log-format", "json")
    log = LogReader(process)
    try:
        await log.wait_for(f"data plane on http://127.0.0.1:{data_port}")
        echoed = {}
        for base, request_id in ((port, "req-main-7f3a"), (data_port, "req-data-51c2")):
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{base}", timeout=10) as client:
                r = await client.post("/predict", headers={"X-Request-ID": request_id},
                                      json={"model_name": "ghost", "features": fast_features(),
                                            "correlation_id": f"corr-{request_id}"})
                assert r.status_code == 404
                echoed[request_id] = r.headers["x-request-id"]
                generated = await client.get("/health")
                assert generated.headers["x-request-id"]  # none given: one is generated and echoed
            await log.wait_for(request_id)
        assert echoed == {"req-main-7f3a": "req-main-7f3a", "req-data-51c2": "req-data-51c2"}
        process.send_signal(signal.SIGTERM)
        await log.wait_for("model-router stopped")
        assert await trio.to_thread.run_sync(process.wait, 15) == 0
        assert process.stderr is not None
        rest = await trio.to_thread.run_sync(process.stderr.read)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    # The TFLite runtime's native notice ("INFO: Created TensorFlow Lite XNNPACK delegate") is
    # written by C++ straight to stderr, past Python's logging; every other line is JSON.
    lines = [line for line in [*log.lines, *rest.splitlines()] if line.strip() and "TensorFlow Lite" not in line]
    entries = [json.loads(line) for line in lines]
    assert all({"time", "level", "logger", "message", "worker"} <= set(e) for e in entries)
    assert any(e["message"].startswith("model-router") and "serving" in e["message"] for e in entries)
    for request_id in ("req-main-7f3a", "req-data-51c2"):
        about = [e for e in entries if e.get("request_id") == request_id]
        assert about, f"no line with request_id {request_id}"
        assert any("POST /predict -> 404" in e["message"] and e["correlation_id"] == f"corr-{request_id}"
                   for e in about), about


async def test_workers_exit_when_the_supervisor_is_killed(config_path: Path) -> None:
    """A supervisor killed with SIGKILL leaves no orphan worker serving the port."""
    port = free_port()
    process = start_workers(config_path, port)
    log = LogReader(process)
    try:
        await log.wait_for_all({"serving": 2})
        pids: set[int] = set()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            with trio.fail_after(10):
                while len(pids) < 2:
                    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as fresh:
                        pids.add((await fresh.get("/health")).json()["pid"])
            assert (await client.get("/health")).status_code == 200
        process.kill()
        process.wait()
        with trio.fail_after(15):
            while any(_alive(pid) for pid in pids):
                await trio.sleep(0.05)  # polling the process table: there is no event to wait on
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by init) is not serving
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except OSError:
        return False
