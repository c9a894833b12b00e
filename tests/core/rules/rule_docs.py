"""Config documents and assertions shared by the rules tests, so each test states only what it varies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from actors.core.rules import (
    ConfigError,
    RoutingSnapshot,
    compile_snapshot,
    parse_config,
)

CONF_PATH = Path(__file__).resolve().parents[3] / "conf" / "model_router_rules.yml"


DEMO_MODELS = frozenset({"tlob_tiny", "patchtst_small", "timesnet_base", "mamba_ts_small"})


def make_yaml(rules: list[dict[str, Any]], default: str = "base", **sections: Any) -> str:
    """Build a config document from plain data so each test states only what it varies."""
    router: dict[str, Any] = {"rules": rules, "config": {"default_model": default}}
    router.update(sections)
    return yaml.safe_dump({"model_router": router}, sort_keys=False)


def rule(model: str, asset: str = "*", horizon: str = "*", symbol: str = "*", **extra: Any) -> dict[str, Any]:
    return {"match": {"asset_class": asset, "horizon_ms": horizon, "symbol": symbol}, "model": model, **extra}


def snapshot_for(rules: list[dict[str, Any]], **kwargs: Any) -> RoutingSnapshot:
    return compile_snapshot(parse_config(make_yaml(rules)), **kwargs)


def config_error(text: str, **kwargs: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(text, **kwargs)
    return info.value


def paths_of(err: ConfigError) -> list[str]:
    return [d["path"] for d in err.details]


def detail_for(err: ConfigError, path: str) -> str:
    matches = [d["message"] for d in err.details if d["path"] == path]
    assert matches, f"no problem at {path!r}; got {err.details}"
    return matches[0]


ASSET_GLOBS = ["*", "crypto", "cry*", "fx*", "fx_spot", "us_?tocks", "[cf]*", "[!c]*", "*_stocks"]


SYMBOL_GLOBS = ["*", "*", "*", "BTC*", "ETH?USD", "*USD", "[BE]*"]


def billion_laughs(levels: int = 9) -> str:
    """A config whose rules are an alias bomb: a few hundred bytes standing for 9**9 scalars."""
    lines = ['x0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"x{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + f"\nmodel_router:\n  rules: *a{levels}\n  config: {{default_model: m}}\n"
