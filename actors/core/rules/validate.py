"""Validation of a whole config document: ``parse_config`` and the router's own ``config`` section.

Pure (no file, network or clock access) so the reload actor can validate a candidate config
before swapping it in; every problem in the document is collected and raised as one ConfigError.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import attrs

from actors.core.rules.fields import (
    _check_keys,
    _mapping,
    _ModelRefs,
    _opt_bool,
    _opt_int,
    _opt_number,
    _opt_str,
)
from actors.core.rules.problems import (
    DOCUMENT_PATH,
    ConfigError,
    _describe,
    _echo,
    _join,
    _path_key,
    _Problems,
    _summary,
)
from actors.core.rules.rule_section import _parse_rules
from actors.core.rules.schema import RouterConfig, RouterSettings
from actors.core.rules.settings import (
    _parse_access,
    _parse_data_plane,
    _parse_reload,
    _parse_switching,
    _parse_thresholds,
)
from actors.core.rules.shadowing import _shadow_warnings
from actors.core.rules.yaml_reader import _Invalid, _load_yaml

_TOP_KEYS = ("rules", "config", "model_thresholds", "reload", "switching", "data_plane", "default_model", "access")
_CONFIG_KEYS = tuple(f.name for f in attrs.fields(RouterSettings))


def _parse_preload(m: Mapping[Any, Any], path: str, probs: _Problems, refs: _ModelRefs) -> tuple[str, ...]:
    value = m.get("preload_models", [])
    ppath = _join(path, "preload_models")
    if value is None:
        return ()
    if not isinstance(value, list):
        probs.add(ppath, f"expected a list of model names, got {_describe(value)}")
        return ()
    names: list[str] = []
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item:
            probs.add(f"{ppath}[{i}]", f"expected a model name, got {_describe(item)}")
            continue
        refs.add(f"{ppath}[{i}]", item)
        names.append(item)
    return tuple(names)


def _resolve_default_model(root: Mapping[Any, Any], cfg: Mapping[Any, Any], probs: _Problems) -> str | None:
    """Accept either ``model_router.default_model`` or ``config.default_model``, not a conflict."""
    top = _opt_str(root, "default_model", "", probs, None)
    inner = _opt_str(cfg, "default_model", "config", probs, None)
    if top is not None and inner is not None and top != inner:
        probs.add("config.default_model", f"conflicts with default_model {_echo(top)} given at model_router level")
    chosen = inner if inner is not None else top
    if chosen is None and "default_model" not in root and "default_model" not in cfg:
        probs.add("config.default_model", "missing default model (set config.default_model)")
    return chosen


def _parse_settings(root: Mapping[Any, Any], probs: _Problems, refs: _ModelRefs) -> RouterSettings:
    path = "config"
    cfg = _mapping(root.get("config"), path, probs) or {}
    _check_keys(cfg, _CONFIG_KEYS, path, probs)
    default_model = _resolve_default_model(root, cfg, probs)
    path_of_default = "config.default_model" if "default_model" in cfg else "default_model"
    refs.add(path_of_default, default_model)
    d = RouterSettings(default_model="")
    return RouterSettings(
        default_model=default_model or "",
        redis_url=_opt_str(cfg, "redis_url", path, probs, None, nullable=True),
        max_latency_us=_opt_number(cfg, "max_latency_us", path, probs, d.max_latency_us, positive=True),
        cache_ttl_seconds=_opt_int(cfg, "cache_ttl_seconds", path, probs, d.cache_ttl_seconds, lo=0),
        performance_logging=_opt_bool(cfg, "performance_logging", path, probs, d.performance_logging),
        model_repository=_opt_str(cfg, "model_repository", path, probs, d.model_repository) or "",
        preload_models=_parse_preload(cfg, path, probs, refs),
        max_cached_models=_opt_int(cfg, "max_cached_models", path, probs, d.max_cached_models, lo=1),
        model_cache_mb=_opt_number(cfg, "model_cache_mb", path, probs, d.model_cache_mb, positive=True),
        max_batch_items=_opt_int(cfg, "max_batch_items", path, probs, d.max_batch_items, lo=1),
        request_deadline_ms=_opt_number(cfg, "request_deadline_ms", path, probs, d.request_deadline_ms,
                                        positive=True),
        rules_source=_rules_source(cfg, path, probs),
    )


def _rules_source(cfg: Mapping[Any, Any], path: str, probs: _Problems) -> str:
    value = _opt_str(cfg, "rules_source", path, probs, "file") or "file"
    if value not in ("file", "redis"):
        probs.add(f"{path}.rules_source", f"must be 'file' or 'redis', got {_describe(value)}")
        return "file"
    return value

def _router_root(data: Any, probs: _Problems) -> dict[Any, Any] | None:
    if not isinstance(data, dict):
        message = f"top level must be a mapping with a 'model_router' key, got {_describe(data)}"
        probs.add(DOCUMENT_PATH, message)
        return None
    for key in data:
        if key != "model_router":
            message = f"unknown top-level key {_echo(key)} (only 'model_router' is allowed)"
            probs.add(f"{DOCUMENT_PATH}.{_path_key(key)}", message)
    if "model_router" not in data:
        probs.add(DOCUMENT_PATH, "missing top-level key 'model_router'")
        return None
    root = _mapping(data["model_router"], "model_router", probs)
    if root is not None:
        _check_keys(root, _TOP_KEYS, "", probs)
    return root


def _hash_data(data: Any) -> str:
    """Hash the parsed data, not the text, so comment and whitespace edits keep the hash."""
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:12]


def parse_config(text: str, *, known_models: frozenset[str] | None = None) -> RouterConfig:
    """Validate a config document and return it, or raise ConfigError listing every problem.

    ``known_models`` (when given) makes references to models missing from the repository
    errors, so a reload cannot route traffic to a model that cannot be loaded.
    """
    probs = _Problems()
    try:
        data = _load_yaml(text, probs)
    except _Invalid:
        raise ConfigError(_summary(probs.details), probs.details) from None
    return _validate(data, probs, known_models)


def _validate(data: Any, probs: _Problems, known_models: frozenset[str] | None) -> RouterConfig:
    """Validate parsed data (``probs`` may already hold duplicate-key problems)."""
    root = _router_root(data, probs)
    if root is None:
        if not probs.details:
            probs.add(DOCUMENT_PATH, "no usable 'model_router' section")
        raise ConfigError(_summary(probs.details), probs.details)
    refs = _ModelRefs()
    rules = _parse_rules(root.get("rules"), probs, refs)
    settings = _parse_settings(root, probs, refs)
    thresholds = _parse_thresholds(root.get("model_thresholds"), probs, refs)
    reload_settings = _parse_reload(root.get("reload"), probs)
    switching = _parse_switching(root.get("switching"), probs)
    data_plane = _parse_data_plane(root.get("data_plane"), probs)
    access = _parse_access(root.get("access"), probs)
    if known_models is not None:
        refs.check(frozenset(known_models), probs)
    if probs.details:
        raise ConfigError(_summary(probs.details), probs.details)
    return RouterConfig(
        rules=rules,
        settings=settings,
        thresholds=thresholds,
        reload=reload_settings,
        config_hash=_hash_data(data),
        warnings=_shadow_warnings(rules),
        switching=switching,
        data_plane=data_plane,
        access=access,
    )


