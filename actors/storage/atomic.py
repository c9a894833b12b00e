"""Atomic file replacement: readers see the old file or the new one, never a mix.

One implementation for every writer (model versions, metadata, the state file, stream
cursors, the rules file, the access file, usage): a temp file ``.{name}.{16 hex}.tmp`` in the
same folder, written and fsynced, then ``os.replace``.

A kill -9 mid-write leaves that temp file behind. :func:`remove_stale_temp_files` clears
them at start-up, and only them: the exact name pattern, regular files, and only when no
live writer holds the file. A writer holds an exclusive ``flock`` on its temp file from
creation until the rename, and the kernel drops a killed process's locks, so a sweep by
one worker never takes a file another worker (or replica sharing the folder) is writing.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import secrets
import stat
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger("model_router.storage")

#: flock errors of a filesystem that has no locks: writes go on unlocked, sweeps leave such files alone.
_NO_LOCKS = frozenset({errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL})

#: The temp names :func:`atomic_write_bytes` makes, and the only names the sweep removes.
TEMP_NAME = re.compile(r"\..+\.[0-9a-f]{16}\.tmp")


def temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")


def _names(tmp: Path, fd: int) -> bool:
    """Whether ``tmp`` still names the open file ``fd``."""
    try:
        return os.stat(tmp, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _open_locked_temp(path: Path, mode: int) -> tuple[Path, int]:
    """Create a fresh temp file (O_EXCL: never another's) and lock it; retried if a sweep took it meanwhile."""
    while True:
        tmp = temp_path(path)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:
            if exc.errno in _NO_LOCKS:
                return tmp, fd  # no locks here: and no sweep removes a file it cannot lock
            os.close(fd)
            raise
        except BaseException:
            os.close(fd)
            raise
        # A sweep could have locked and removed it between the create and our lock: then the
        # name is gone and we start again under a new one.
        if _names(tmp, fd):
            return tmp, fd
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes, *, mode: int = 0o666) -> None:
    """Write via a temp file in the same folder + ``os.replace`` so readers see old or new, never half.

    The file gets ``mode & ~umask`` like any ordinary write (0644 under the usual umask), not
    ``mkstemp``'s 0600: published models are read by other users (the image builds them as root
    and serves them as ``router``). Pass ``mode=0o600`` for a file that holds a secret. The temp
    file stays locked until it is renamed (see the module docstring).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp, fd = _open_locked_temp(path, mode)
    try:
        with os.fdopen(fd, "wb") as handle:  # closing it releases the lock, after the rename
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _remove_if_unheld(candidate: Path) -> bool:
    """Remove one temp file unless a live writer holds its lock; True if it was removed."""
    try:
        fd = os.open(candidate, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except (FileNotFoundError, PermissionError):
        return False  # renamed or removed meanwhile, or not ours to read
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # a live writer holds it
        except OSError as exc:
            if exc.errno in _NO_LOCKS:
                return False  # cannot tell a live writer from a dead one: leave it
            raise
        candidate.unlink(missing_ok=True)  # under our lock: a writer that locks after us retries
        return True
    finally:
        os.close(fd)


def remove_stale_temp_files(folder: Path, *, depth: int = 0) -> int:
    """Remove the temp files interrupted writes left in ``folder`` (and ``depth`` levels below); the count.

    Only regular files named exactly like :func:`atomic_write_bytes`'s temp files, and only
    those no live writer holds. A folder that does not exist or cannot be listed counts 0.
    """
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.ENOTDIR, errno.EACCES):
            raise
        return 0
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            if depth > 0:
                removed += remove_stale_temp_files(Path(entry.path), depth=depth - 1)
        elif TEMP_NAME.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
            try:
                removed += _remove_if_unheld(Path(entry.path))
            except OSError as exc:  # a start-up cleanup never stops the start
                log.warning("could not remove the stale temp file %s: %s", entry.path, exc)
    return removed


def sweep(folders: Iterable[tuple[Path, int]]) -> int:
    """:func:`remove_stale_temp_files` over (folder, depth) pairs, each folder once; the total."""
    seen: set[Path] = set()
    total = 0
    for folder, depth in folders:
        resolved = folder.resolve()
        if resolved not in seen:
            seen.add(resolved)
            total += remove_stale_temp_files(resolved, depth=depth)
    return total
