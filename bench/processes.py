"""Processes the benches start and wait for: free ports, a private redis-server, readiness, a rules file.

One copy for every bench script (they run as scripts, so they import this as a sibling
module, like ``rulesets``).
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
from pathlib import Path

import httpx
import trio


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def build_bench_repository(root: Path, model: str, default_model: str, features: tuple[str, ...]) -> Path:
    """``root/models``: ``model`` v1 and ``default_model`` v1, random MLPs over ``features``
    (fixed seeds): the repository of the switching benches; they add ``model`` v2 themselves."""
    from actors.build.demo_models import build_random_model  # the benches put the repository on sys.path

    repo = root / "models"
    build_random_model(repo, model, "1", features, seed=1)
    build_random_model(repo, default_model, "1", features, seed=3)
    return repo


def write_bench_rules(root: Path, repo: Path, model: str, default_model: str) -> Path:
    """``root/conf/rules.yml``: one rule (crypto under a minute -> ``model``), ``model`` preloaded,
    performance logging, reload watching and backups off: the fixed config of the switching benches."""
    path = root / "conf" / "rules.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "model_router:\n"
        "  rules:\n"
        '    - match: {asset_class: "crypto", horizon_ms: "<60000"}\n'
        f"      model: {model}\n"
        '      description: "crypto, sub-minute"\n'
        "  config:\n"
        f"    default_model: {default_model}\n"
        f'    model_repository: "{repo}"\n'
        f"    preload_models: [{model}]\n"
        "    performance_logging: false\n"
        "  reload:\n"
        "    enabled: false\n"
        "    backup_on_reload: false\n"
    )
    return path


def start_redis(folder: Path) -> tuple[subprocess.Popen[str], str]:
    """A private redis-server on a free port (no persistence), and its URL, once it accepts connections."""
    port = free_port()
    process = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "no", "--dir", str(folder)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    for line in process.stdout:
        if "Ready to accept connections" in line:
            return process, f"redis://127.0.0.1:{port}/0"
    raise RuntimeError("redis-server exited before it was ready")


async def wait_ready(client: httpx.AsyncClient, url: str = "", process: subprocess.Popen[bytes] | None = None,
                     timeout_s: float = 60.0) -> None:
    """Until ``url/health/ready`` answers 200 (a service still starting refuses connections)."""
    with trio.fail_after(timeout_s):
        while True:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"the service exited with {process.returncode}")
            with contextlib.suppress(httpx.TransportError):
                if (await client.get(f"{url}/health/ready")).status_code == 200:
                    return
            await trio.sleep(0.1)  # a bench polls: the service is another process
