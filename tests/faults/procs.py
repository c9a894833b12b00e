"""The real service in a subprocess (``python app.py``) on a free port, for kill -9 and signal tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import httpx

from tests.conftest import free_port
from tests.test_app_process import LogReader

ROOT = Path(__file__).resolve().parent.parent.parent
ADMIN = {"X-Admin-Key": "proc-test-key"}


@attrs.define
class Proc:
    process: subprocess.Popen[str]
    log: LogReader
    url: str

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill9(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)


def spawn(config: Path, state: Path, port: int, extra_env: dict[str, str] | None = None) -> Proc:
    env = {**os.environ, "MODEL_ROUTER_ADMIN_KEY": "proc-test-key", **(extra_env or {})}
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "app.py"), "--config", str(config), "--host", "127.0.0.1",
         "--port", str(port), "--state-file", str(state), "--log-level", "INFO"],
        cwd=ROOT, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    return Proc(process, LogReader(process), f"http://127.0.0.1:{port}")


@asynccontextmanager
async def service(config: Path, state: Path, port: int | None = None,
                  extra_env: dict[str, str] | None = None) -> AsyncIterator[Proc]:
    """Start the service and wait until it serves; SIGKILL it on the way out if it still runs."""
    proc = spawn(config, state, port or free_port(), extra_env)
    try:
        await proc.log.wait_for(f"on {proc.url}", timeout=30)
        yield proc
    finally:
        if proc.process.poll() is None:
            proc.process.kill()
            proc.process.wait()
        if proc.process.stderr is not None:
            proc.process.stderr.close()


def client(proc: Proc) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=proc.url, timeout=10)
