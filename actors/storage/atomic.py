"""Atomic file replacement: readers see the old file or the new one, never a mix.

One implementation for every writer (model versions, metadata, the access file, usage):
a temp file in the same folder, written and fsynced, then ``os.replace``.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def atomic_write_bytes(path: Path, data: bytes, *, mode: int = 0o666) -> None:
    """Write via a temp file in the same folder + ``os.replace`` so readers see old or new, never half.

    The file gets ``mode & ~umask`` like any ordinary write (0644 under the usual umask), not
    ``mkstemp``'s 0600: published models are read by other users (the image builds them as root
    and serves them as ``router``). Pass ``mode=0o600`` for a file that holds a secret.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")  # O_EXCL: never another's file
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
