"""Atomic writes and the start-up sweep of their leftovers (actors/storage/atomic.py)."""

from __future__ import annotations

import errno
import fcntl
import os
import threading
from pathlib import Path

import pytest

from actors.storage import atomic
from actors.storage.atomic import TEMP_NAME, atomic_write_bytes, remove_stale_temp_files, sweep

HEX = "0123456789abcdef"


def plant(folder: Path, name: str, data: bytes = b"half a write") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(data)
    return path


def test_the_pattern_is_exactly_the_writers_temp_name(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    assert TEMP_NAME.fullmatch(atomic.temp_path(target).name)
    for other in ("state.json", ".state.json.tmp", f"state.json.{HEX}.tmp", f".state.json.{HEX[:15]}.tmp",
                  f".state.json.{HEX.upper()}.tmp", f".state.json.{HEX}.tmp.bak", f".state.json.{HEX}0.tmp",
                  ".state.json.lock", "model_router_rules.20261202T061305.123Z.abc.tmp"):
        assert not TEMP_NAME.fullmatch(other), other


def test_sweep_removes_leftovers_and_nothing_else(tmp_path: Path) -> None:
    """Only regular files named like a temp file, in the folder and ``depth`` levels down."""
    leftovers = [plant(tmp_path, f".state.json.{HEX}.tmp"),
                 plant(tmp_path / "fast" / "2", f".model.tflite.{HEX}.tmp"),
                 plant(tmp_path / "fast" / "2", f".metadata.yml.{'f' * 16}.tmp")]
    kept = [plant(tmp_path, "state.json"), plant(tmp_path, ".state.json.tmp"), plant(tmp_path, f"x.{HEX}.tmp"),
            plant(tmp_path / "fast" / "2" / "deeper", f".model.tflite.{HEX}.tmp")]  # below depth 2
    (tmp_path / f".dir.{HEX}.tmp").mkdir()  # a folder with the name: not ours
    (tmp_path / f".link.{HEX}.tmp").symlink_to(tmp_path / "state.json")  # a symlink: never followed
    assert remove_stale_temp_files(tmp_path, depth=2) == 3
    assert not any(p.exists() for p in leftovers)
    assert all(p.exists() for p in kept)
    assert (tmp_path / f".dir.{HEX}.tmp").is_dir() and (tmp_path / "state.json").read_bytes() == b"half a write"
    assert (tmp_path / f".link.{HEX}.tmp").is_symlink()
    assert remove_stale_temp_files(tmp_path / "missing") == 0


def test_sweep_leaves_a_file_a_live_writer_holds(tmp_path: Path) -> None:
    """A writer holds its temp file locked until the rename: a sweep (another worker's start) skips it."""
    held = plant(tmp_path, f".state.json.{HEX}.tmp")
    fd = os.open(held, os.O_WRONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert remove_stale_temp_files(tmp_path) == 0
        assert held.exists()
    finally:
        os.close(fd)  # the writer is gone (a kill -9 drops its locks the same way)
    assert remove_stale_temp_files(tmp_path) == 1
    assert not held.exists()


def test_a_write_swept_between_create_and_lock_starts_again_under_a_new_name(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The one window a sweep can take a live writer's file: the writer notices and retries."""
    real_flock = fcntl.flock
    swept: list[int] = []

    def sweep_first(fd: int, operation: int) -> None:
        if operation == fcntl.LOCK_EX and not swept:  # the writer's blocking lock, first time only
            swept.append(remove_stale_temp_files(tmp_path))
        real_flock(fd, operation)

    monkeypatch.setattr(atomic.fcntl, "flock", sweep_first)
    atomic_write_bytes(tmp_path / "state.json", b"new")
    assert swept == [1]  # the sweep did take the first temp file
    assert (tmp_path / "state.json").read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_writes_and_sweeps_at_once_never_lose_a_write(tmp_path: Path) -> None:
    """Real threads: one writer rewriting, one sweeper sweeping; every write lands, no temp file stays."""
    target = tmp_path / "state.json"
    stop = threading.Event()
    errors: list[BaseException] = []

    def sweeper() -> None:
        while not stop.is_set():
            try:
                remove_stale_temp_files(tmp_path)
            except BaseException as exc:  # reported by the assertion below
                errors.append(exc)

    thread = threading.Thread(target=sweeper)
    thread.start()
    try:
        for i in range(300):
            atomic_write_bytes(target, f"write {i}".encode())
            assert target.read_bytes() == f"write {i}".encode()
    finally:
        stop.set()
        thread.join()
    assert errors == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_sweep_visits_each_folder_once_and_totals(tmp_path: Path) -> None:
    plant(tmp_path / "state", f".state.json.{HEX}.tmp")
    plant(tmp_path / "models" / "fast" / "1", f".model.tflite.{HEX}.tmp")
    assert sweep([(tmp_path / "state", 0), (tmp_path / "state" / ".." / "state", 0),
                  (tmp_path / "models", 2), (tmp_path / "nowhere", 0)]) == 2


def test_a_filesystem_without_locks_still_takes_writes_and_its_leftovers_stay(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where flock is not supported, writing goes on unlocked, and a sweep that cannot tell a live
    writer from a dead one removes nothing."""
    def no_locks(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(atomic.fcntl, "flock", no_locks)
    atomic_write_bytes(tmp_path / "state.json", b"new")
    assert (tmp_path / "state.json").read_bytes() == b"new"
    left = plant(tmp_path, f".state.json.{HEX}.tmp")
    assert remove_stale_temp_files(tmp_path) == 0
    assert left.exists()
