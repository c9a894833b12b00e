"""Config storms, for real, on the watched file while a steady load of predictions runs.

The file is deleted, replaced by a directory, by a dangling symlink, by garbage, by a
truncated write, by a YAML alias bomb, by a 50 MB file, and edited 100 times in one
second. Throughout, the last good config keeps serving and the load sees only 200s;
after the storm the final file is the one in force. (The tests run as root, which
chmod 000 does not stop, hence the directory and the symlink for "unreadable".)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import httpx
import trio

from actors.core.rules import parse_config
from tests.conftest import Harness, fast_features, render_config, running_app, wait_ready
from tests.core.rules.rule_docs import billion_laughs


def rules_text(repo: Path, tag: int) -> str:
    """A valid config whose hash differs by ``tag`` (the rule's description)."""
    return render_config(repo, rules=(
        '- match: {asset_class: "crypto", horizon_ms: "<60000"}\n'
        "  model: fast\n  fallback: backup\n"
        f"  description: edit {tag}\n"))


def replace(path: Path, write: Callable[[Path], None]) -> None:
    """Write the new content beside the file, then swap it in (what editors and deploy tools do)."""
    tmp = path.with_name(path.name + ".new")
    write(tmp)
    os.replace(tmp, path)


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        path.rmdir()
    else:
        path.unlink(missing_ok=True)


def faults(repo: Path) -> list[tuple[str, Callable[[Path], None]]]:
    good = rules_text(repo, 0)

    def delete(path: Path) -> None:
        path.unlink()

    def directory(path: Path) -> None:
        path.unlink()
        path.mkdir()

    def dangling(path: Path) -> None:
        path.unlink()
        path.symlink_to(path.with_name("nowhere.yml"))

    def garbage(path: Path) -> None:
        replace(path, lambda tmp: tmp.write_bytes(os.urandom(4096)))

    def truncated(path: Path) -> None:
        path.write_text(good[: len(good) // 2 - 7])  # an in-place write caught half way

    def bomb(path: Path) -> None:
        replace(path, lambda tmp: tmp.write_text(billion_laughs()))

    def huge(path: Path) -> None:
        def write(tmp: Path) -> None:
            with tmp.open("w") as handle:
                handle.write(good)
                chunk = "# " + "x" * 1021 + "\n"
                for _ in range(50 * 1024):
                    handle.write(chunk)
        replace(path, write)

    return [("deleted", delete), ("directory", directory), ("dangling symlink", dangling),
            ("garbage", garbage), ("truncated", truncated), ("alias bomb", bomb), ("50 MB", huge)]


async def steady_load(h: Harness, stop: trio.Event, statuses: list[int]) -> None:
    async with httpx.AsyncClient(base_url=h.url, timeout=10) as client:
        while not stop.is_set():
            r = await client.post("/predict", json={"asset_class": "crypto", "horizon_ms": 5,
                                                    "features": fast_features()})
            statuses.append(r.status_code)


async def next_attempt(h: Harness, seen: int, timeout: float = 5.0) -> dict:
    with trio.fail_after(timeout):
        return (await h.service.watcher.wait_for_attempt(seen)).to_dict()


async def reloaded(h: Harness, config_hash: str, timeout: float = 5.0) -> None:
    """Until an attempt succeeds with ``config_hash`` (a removal may add failed attempts first)."""
    with trio.fail_after(timeout):
        while True:
            event = await h.service.watcher.wait_for_attempt(h.service.watcher.attempts - 1)
            if event.success and event.config_hash == config_hash:
                return
            await h.service.watcher.wait_for_attempt(h.service.watcher.attempts)


async def test_config_storm_keeps_the_last_good_config_serving(config_path: Path, repo: Path) -> None:
    config_path.write_text(rules_text(repo, 0))
    good_hash = parse_config(rules_text(repo, 0)).config_hash
    async with running_app(config_path) as h:
        await wait_ready(h)
        assert h.service.router.config.config_hash == good_hash
        statuses: list[int] = []
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(steady_load, h, stop, statuses)
            for name, fault in faults(repo):
                seen = h.service.watcher.attempts
                fault(config_path)
                event = await next_attempt(h, seen)
                assert not event["success"], (name, event)
                assert h.service.router.config.config_hash == good_hash, name
                remove(config_path)
                config_path.write_text(rules_text(repo, 0))
                await reloaded(h, good_hash)
            # 100 edits in one second: the last one is the config in force once the storm is over.
            final = 0
            with trio.move_on_after(1.0):
                for final in range(1, 101):
                    config_path.write_text(rules_text(repo, final))
                    await trio.sleep(0.01)
            final_hash = parse_config(rules_text(repo, final)).config_hash
            await reloaded(h, final_hash)
            stop.set()
        assert statuses and set(statuses) == {200}, f"{len(statuses)} requests, statuses {set(statuses)}"
        assert len(statuses) > 50
