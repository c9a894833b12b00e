"""Every file the service publishes is readable by other users; secrets are not.

The image builds the demo models as root and serves them as ``router``, and on shared hosts one user
uploads models while another serves them: published files must get an ordinary write's mode
(``0o666 & ~umask``), not ``mkstemp``'s 0600. Each writer is driven through its real entry point:
the demo build CLI, ``POST /models``, a config edit (reload backup) and the state file saved on stop.
A non-default umask (0o027) shows the mode follows the umask rather than being hard-coded.
"""

from __future__ import annotations

import base64
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import trio

import app
from actors.build.demo_models import build_random_model
from actors.storage.atomic import atomic_write_bytes
from actors.storage.model_repo import METADATA_FILE, MODEL_FILE
from tests.conftest import FAST_FEATURES, render_config, running_app

ROOT = Path(__file__).resolve().parents[2]


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@contextmanager
def process_umask(mask: int) -> Iterator[None]:
    """Umask is process-wide: set it for the block only and restore the runner's own."""
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def test_demo_build_cli_writes_world_readable_models(tmp_path: Path) -> None:
    """What the Containerfile runs as root: the ``router`` user must be able to read every file."""
    out = tmp_path / "models"
    with process_umask(0o022):  # the child inherits it, as the image build's RUN does
        subprocess.run([sys.executable, "-m", "actors.build.demo_models", "--out", str(out)], cwd=ROOT, check=True,
                       capture_output=True)
    files = sorted(p for p in out.rglob("*") if p.is_file())
    assert {p.name for p in files} == {METADATA_FILE, MODEL_FILE} and len(files) == 8
    assert {p.relative_to(out).as_posix(): oct(mode_of(p)) for p in files} == {
        p.relative_to(out).as_posix(): oct(0o644) for p in files}
    assert {oct(mode_of(p)) for p in out.rglob("*") if p.is_dir()} == {oct(0o755)}


async def test_upload_backup_and_state_file_follow_the_umask(tmp_path: Path, repo: Path) -> None:
    """``POST /models``, a reload backup and the state file: ``0o666 & ~0o027`` = 0o640, folders 0o750."""
    upload = build_random_model(tmp_path / "upload", "fast", "3", FAST_FEATURES, seed=33)
    content = base64.b64encode((upload / MODEL_FILE).read_bytes()).decode()
    body = {"name": "fast", "version": "3", "model_base64": content,
            "metadata": {"features": list(FAST_FEATURES), "labels": ["SELL", "HOLD", "BUY"], "window": 1}}
    conf = tmp_path / "conf"
    conf.mkdir()
    config = conf / "rules.yml"
    config.write_text(render_config(repo))
    state_file = app.state_path(app.Options(config=config))
    with process_umask(0o027):
        async with running_app(config) as h:
            created = await h.admin_post("/models", json=body)
            assert created.status_code == 201, created.text
            seen = h.service.watcher.attempts
            config.write_text(render_config(repo, default="fast"))
            with trio.fail_after(2):
                event = await h.service.watcher.wait_for_attempt(seen)
            assert event.success
    published = {
        "uploaded metadata": repo / "fast" / "3" / METADATA_FILE,
        "uploaded model": repo / "fast" / "3" / MODEL_FILE,
        "state file": state_file,
        **{f"backup {p.name}": p for p in (conf / "backups").iterdir()},
    }
    assert len(published) == 4, sorted(published)  # exactly one backup
    assert {name: oct(mode_of(p)) for name, p in published.items()} == {name: oct(0o640) for name in published}
    assert oct(mode_of(repo / "fast" / "3")) == oct(0o750)


def test_secrets_stay_private_whatever_the_umask(tmp_path: Path) -> None:
    """``mode=0o600`` (admin key, key hashes) is never widened; a permissive umask still gives 0644 at most."""
    with process_umask(0o000):
        atomic_write_bytes(tmp_path / "admin.key", b"not-a-real-key", mode=0o600)
    with process_umask(0o022):
        atomic_write_bytes(tmp_path / "public.bin", b"x")
    assert oct(mode_of(tmp_path / "admin.key")) == oct(0o600)
    assert oct(mode_of(tmp_path / "public.bin")) == oct(0o644)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["admin.key", "public.bin"]  # no temp file left
