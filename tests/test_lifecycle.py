"""Actors start in order (each only once the previous one is ready) and stop in reverse."""

from __future__ import annotations

import gc
import json
import logging
import sys
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.testing

import app
from actors.lifecycle import ActorGroup, JsonFormatter, configure_logging, settle_heap
from actors.serving.request_context import REQUEST_ID, accepted_request_id, new_request_id


async def slow_actor(name: str, startup_s: float, log: list[str],
                     *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
    await trio.sleep(startup_s)  # virtual time: loading state, binding, warming up
    log.append(f"{name} ready at {trio.current_time():.0f}")
    task_status.started(f"{name}-handle")
    try:
        await trio.sleep_forever()
    finally:
        log.append(f"{name} stopped")


async def test_start_in_order_stop_in_reverse(autojump_clock: trio.testing.MockClock) -> None:
    log: list[str] = []
    async with trio.open_nursery() as nursery:
        group = ActorGroup(nursery)
        assert await group.start("first", partial(slow_actor, "first", 5, log)) == "first-handle"
        assert await group.start("second", partial(slow_actor, "second", 2, log)) == "second-handle"
        assert log == ["first ready at 5", "second ready at 7"]  # the second waited for the first
        await group.stop_all()
        assert log[2:] == ["second stopped", "first stopped"]


async def test_an_actor_that_fails_to_start_fails_the_start(autojump_clock: trio.testing.MockClock) -> None:
    """A start-up failure ends the service (the one case besides a signal)."""

    async def broken(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await trio.sleep(1)
        raise OSError("cannot bind")

    caught = None
    try:
        async with trio.open_nursery() as nursery:
            await ActorGroup(nursery).start("broken", broken)
    except BaseException as exc:  # trio wraps it in an ExceptionGroup
        caught = exc
    assert caught is not None and "cannot bind" in repr(caught)


def test_json_formatter_fields_context_and_extra() -> None:
    formatter = JsonFormatter(worker=3)
    record = logging.LogRecord("model_router.web", logging.INFO, __file__, 1, "answered %s", ("x",), None)
    entry = json.loads(formatter.format(record))
    assert entry["level"] == "INFO" and entry["logger"] == "model_router.web" and entry["worker"] == 3
    assert entry["message"] == "answered x" and entry["time"].endswith("Z")
    assert "request_id" not in entry and "correlation_id" not in entry
    token = REQUEST_ID.set("req-9")
    try:
        record.correlation_id = "corr-1"  # what extra={"correlation_id": ...} sets
        entry = json.loads(formatter.format(record))
    finally:
        REQUEST_ID.reset(token)
    assert entry["request_id"] == "req-9" and entry["correlation_id"] == "corr-1"
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        failed = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    line = formatter.format(failed)
    assert "\n" not in line and "ValueError: boom" in json.loads(line)["exception"]


def test_gc_thresholds_option_environment_and_refusal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "rules.yml"
    assert app.parse_options(["--config", str(config)], {})[0].gc_thresholds == app.DEFAULT_GC_THRESHOLDS
    environ = {"MODEL_ROUTER_GC_THRESHOLDS": "python"}
    assert app.parse_options(["--config", str(config)], environ)[0].gc_thresholds == (700, 10, 10)
    argv = ["--config", str(config), "--gc-thresholds", "5000,10,20"]
    assert app.parse_options(argv, environ)[0].gc_thresholds == (5000, 10, 20)  # the option wins
    with pytest.raises(SystemExit) as exited:
        app.parse_options(["--config", str(config), "--gc-thresholds", "0,10,10"], {})
    assert exited.value.code == 2
    assert "argument --gc-thresholds: GC thresholds must be at least 1" in capsys.readouterr().err


def test_log_format_option_and_environment(tmp_path: Path) -> None:
    config = tmp_path / "rules.yml"
    assert app.parse_options(["--config", str(config)], {})[0].log_format == "plain"
    assert app.parse_options(["--config", str(config)], {"MODEL_ROUTER_LOG_FORMAT": "JSON"})[0].log_format == "json"
    assert app.parse_options(["--config", str(config), "--log-format", "plain"],
                             {"MODEL_ROUTER_LOG_FORMAT": "json"})[0].log_format == "plain"
    with pytest.raises(SystemExit):
        app.parse_options(["--config", str(config)], {"MODEL_ROUTER_LOG_FORMAT": "yaml"})
    with pytest.raises(ValueError, match="log format"):
        configure_logging("INFO", "yaml")


def test_request_ids_are_kept_when_safe_and_replaced_otherwise() -> None:
    assert accepted_request_id(b"abc-123") == "abc-123"
    for unsafe in (None, b"", b"a\nforged line", b"x" * 129, "caf\u00e9"):
        generated = accepted_request_id(unsafe)
        assert generated.startswith("r") and generated.isascii() and generated != unsafe
    assert new_request_id() != new_request_id()


def test_settle_heap_freezes_the_start_up_heap_and_applies_the_thresholds(restored_thresholds: None) -> None:
    survivor = [object() for _ in range(100)]  # start-up state: lives as long as the process
    frozen_before = gc.get_freeze_count()
    settle_heap((12_345, 11, 12))
    assert gc.get_threshold() == (12_345, 11, 12)
    assert gc.get_freeze_count() >= frozen_before + 1  # the list, at least, left the collector's walks
    assert not any(obj is survivor for obj in gc.get_objects())
