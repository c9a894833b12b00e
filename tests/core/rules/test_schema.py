"""Tests for actors.core.rules.schema: the JSON view of a validated config."""

from __future__ import annotations

import json

from actors.core.rules import (
    parse_config,
)
from tests.core.rules.rule_docs import (
    make_yaml,
    rule,
)


def test_to_dict_is_json_serialisable() -> None:
    config = parse_config(
        make_yaml(
            [rule("m", asset="crypto", horizon="<5", fallback="f", priority=3)],
            model_thresholds={"m": {"min_accuracy": 0.5}},
        )
    )
    view = json.loads(json.dumps(config.to_dict()))
    assert view["rules"][0] == {
        "index": 0,
        "match": {"asset_class": "crypto", "horizon_ms": "<5", "symbol": "*"},
        "model": "m",
        "fallback": "f",
        "priority": 3,
        "description": "",
    }
    assert view["config"]["default_model"] == "base"
    assert view["thresholds"]["m"]["min_accuracy"] == 0.5
    assert view["reload"]["signal"] == "SIGHUP"
    assert view["config_hash"] == config.config_hash and view["warnings"] == []
