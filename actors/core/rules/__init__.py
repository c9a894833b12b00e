"""Routing rules: config validation and the compiled, memoized model selector (pure logic).

Layout, leaves first (each module imports only modules above it):
  problems      ConfigError, the problem collector, bounded echoes of bad values
  horizons      HorizonRange and parse_horizon (the ``horizon_ms`` expressions)
  globs         glob checks, coverage and compiled matchers
  fields        field validators shared by the section parsers
  settings      other actors' settings in the same YAML (reload, switching, thresholds) + parsers
  schema        Rule, RouterSettings, RouterConfig, Selection
  yaml_nodes    libyaml composer, node->data converter, duplicate keys, alias-expanded size
  yaml_subset   the fast line-based reader of plain block YAML
  yaml_reader   text -> data: fast subset, then libyaml, then SafeConstructor (alias bomb limit)
  shadowing     warnings for rules an earlier rule makes unreachable
  rule_section  the ``rules:`` list -> Rule objects
  validate      parse_config: the whole document -> RouterConfig or ConfigError
  snapshot      RoutingSnapshot, compile_snapshot, select_model (the hot path)
"""

from actors.core.rules.horizons import HorizonRange, parse_horizon
from actors.core.rules.problems import DOCUMENT_PATH, ConfigError
from actors.core.rules.schema import RouterConfig, RouterSettings, Rule, Selection
from actors.core.rules.settings import (
    ALLOWED_SIGNALS,
    AccessSettings,
    DataPlaneSettings,
    ModelThreshold,
    ReloadSettings,
    SwitchingSettings,
)
from actors.core.rules.snapshot import DEFAULT_MEMO_LIMIT, RoutingSnapshot, compile_snapshot, select_model
from actors.core.rules.validate import parse_config
from actors.core.rules.yaml_reader import MAX_EXPANDED_CHARS, MAX_EXPANDED_NODES

__all__ = [
    "ALLOWED_SIGNALS",
    "DEFAULT_MEMO_LIMIT",
    "DOCUMENT_PATH",
    "MAX_EXPANDED_CHARS",
    "MAX_EXPANDED_NODES",
    "AccessSettings",
    "ConfigError",
    "DataPlaneSettings",
    "HorizonRange",
    "ModelThreshold",
    "ReloadSettings",
    "RouterConfig",
    "RouterSettings",
    "RoutingSnapshot",
    "Rule",
    "Selection",
    "SwitchingSettings",
    "compile_snapshot",
    "parse_config",
    "parse_horizon",
    "select_model",
]
