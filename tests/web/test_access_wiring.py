"""Starting access control: the start-up warning when open routes listen beyond loopback."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from actors.core.rules import parse_config
from actors.lifecycle import ActorGroup
from actors.redis_bus import disabled_outbox
from actors.serving.metrics import Metrics
from actors.web.access_wiring import start_access, usage_file

CONFIG = "model_router:\n  rules: []\n  config: {default_model: a}\n"


@pytest.mark.parametrize(("host", "warned"), [("0.0.0.0", True), ("127.0.0.1", False)])
async def test_open_routes_beyond_loopback_are_warned_about(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                            host: str, warned: bool) -> None:
    config = parse_config(CONFIG)
    metrics = Metrics()
    async with trio.open_nursery() as nursery:
        group = ActorGroup(nursery)
        gate = await start_access(group, config_path=tmp_path / "rules.yml", config=config, policy=None,
                                  metrics=metrics, outbox=disabled_outbox(metrics), redis_url=None,
                                  admin_key="k", state_folder=tmp_path / "state", host=host)
        assert gate.policy is None and gate.break_glass is not None and gate.budget is not None
        await group.stop_all()
    assert ("open to anyone" in caplog.text) is warned


def test_usage_file_sits_beside_the_access_file_else_in_the_state_folder(tmp_path: Path) -> None:
    with_access = parse_config(CONFIG + "  access: {file: keys/access.yml}\n")
    beside = tmp_path / "keys" / "access.usage.json"
    assert usage_file(tmp_path / "rules.yml", with_access, tmp_path / "state") == beside
    assert usage_file(tmp_path / "rules.yml", parse_config(CONFIG), tmp_path / "state") == (
        tmp_path / "state" / "rules.usage.json")
