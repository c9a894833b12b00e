"""The rules file on disk: a bounded read, and the backups a good reload leaves behind.

Blocking calls: the config watcher runs them in a worker thread.
"""

from __future__ import annotations

import math
import os
import re
import time
from pathlib import Path

from actors.core.rules import RouterConfig

MAX_CONFIG_BYTES = 1024 * 1024


def read_config_text(path: Path) -> str:
    """Read the file with a size bound; OSError and UnicodeError propagate with their reason."""
    with path.open("rb") as handle:
        data = handle.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        raise ValueError(f"config file is larger than {MAX_CONFIG_BYTES} bytes")
    return data.decode("utf-8")


def resolve_repository(config_path: Path, config: RouterConfig, override: Path | None) -> Path:
    """The model repository: ``override`` if given, else the config's path relative to its folder."""
    if override is not None:
        return override
    return (config_path.parent / config.settings.model_repository).resolve()


def backup_name(stem: str, timestamp: float, config_hash: str) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(timestamp))
    millis = int(math.modf(timestamp)[0] * 1000)
    return f"{stem}.{stamp}.{millis:03d}Z.{config_hash}.yml"


def is_backup_of(stem: str, name: str) -> bool:
    """Exactly ``<stem>.<YYYYmmddTHHMMSS>.<mmm>Z.<hash>.yml``: another config's backups never match."""
    return re.fullmatch(re.escape(stem) + r"\.\d{8}T\d{6}\.\d{3}Z\.[^.]+\.yml", name) is not None


def backups_to_prune(names: list[str], keep: int) -> list[str]:
    """Oldest first beyond ``keep``; names sort by time because the stamp is fixed-width UTC."""
    return sorted(names)[: max(0, len(names) - keep)]


def write_backup(folder: Path, stem: str, text: str, config_hash: str, keep: int) -> Path:
    """Keep the previous good file (blocking; runs in a worker thread)."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / backup_name(stem, time.time(), config_hash)
    tmp = target.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, target)
    existing = [p.name for p in folder.iterdir() if is_backup_of(stem, p.name)]
    for name in backups_to_prune(existing, keep):
        (folder / name).unlink(missing_ok=True)
    return target
