"""Routing rules: config validation and the compiled, memoized model selector.

This module is pure logic (no file, network or clock access) so that the reload actor can
validate a candidate config before swapping it in, and so the hot path (``select``) can be
tested exhaustively against a brute-force reference.  Callers read files, resolve
``model_repository`` against the config folder and decide what to do with warnings.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import hashlib
import json
import math
import operator
import re
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs
import yaml

__all__ = [
    "DEFAULT_MEMO_LIMIT",
    "ConfigError",
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

#: Memo entries kept per snapshot before the memo is cleared; asset classes and symbols come
#: from clients, so the memo must never grow without bound.
DEFAULT_MEMO_LIMIT = 8192

DOCUMENT_PATH = "<document>"
ALLOWED_SIGNALS = ("SIGHUP", "SIGUSR1", "SIGUSR2")
_WILDCARD_CHARS = frozenset("*?[")
_GLOB_CHARS_RE = re.compile(r"^[A-Za-z0-9_\-./:*?\[\]!]+$")
_HORIZON_TERM_RE = re.compile(r"^\s*(<=|>=|<|>)\s*(\d+(?:\.\d+)?)\s*$")
_SAFE_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


# --------------------------------------------------------------------------- errors


class ConfigError(ValueError):
    """Every problem found in a config, so an operator can fix them all in one edit.

    ``message`` is a one-line summary for logs and HTTP responses; ``details`` holds one
    ``{"path": ..., "message": ...}`` dict per problem, with paths relative to ``model_router``.
    """

    def __init__(self, message: str, details: Iterable[Mapping[str, str]] = ()) -> None:
        self.message = message
        self.details: tuple[dict[str, str], ...] = tuple(dict(d) for d in details)
        super().__init__(message)

    def __str__(self) -> str:
        lines = [self.message]
        lines.extend(f"  {d['path']}: {d['message']}" for d in self.details)
        return "\n".join(lines)


# --------------------------------------------------------------------------- horizon ranges


def _fmt_number(value: float) -> str:
    """Render bounds without a spurious ``.0`` so labels read like the config."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


@attrs.frozen
class HorizonRange:
    """An interval of horizons in ms; ``None`` bounds are unbounded (``*`` has both None)."""

    lo: float | None
    lo_inclusive: bool
    hi: float | None
    hi_inclusive: bool
    text: str

    def contains(self, v: float) -> bool:
        """True when ``v`` lies in the interval (the reference semantics for buckets)."""
        lo, hi = self.lo, self.hi
        if lo is not None and not (v > lo or (self.lo_inclusive and v == lo)):
            return False
        return hi is None or v < hi or (self.hi_inclusive and v == hi)

    def covers(self, other: HorizonRange) -> bool:
        """True when every value in ``other`` is also in ``self`` (used for shadow warnings)."""
        return self._lo_covers(other) and self._hi_covers(other)

    def _lo_covers(self, other: HorizonRange) -> bool:
        if self.lo is None:
            return True
        if other.lo is None or other.lo < self.lo:
            return False
        return other.lo > self.lo or self.lo_inclusive or not other.lo_inclusive

    def _hi_covers(self, other: HorizonRange) -> bool:
        if self.hi is None:
            return True
        if other.hi is None or other.hi > self.hi:
            return False
        return other.hi < self.hi or self.hi_inclusive or not other.hi_inclusive

    def is_empty(self) -> bool:
        """True when no value can satisfy the range, which is always a config mistake."""
        if self.lo is None or self.hi is None:
            return False
        if self.lo != self.hi:
            return self.lo > self.hi
        return not (self.lo_inclusive and self.hi_inclusive)

    def points(self) -> tuple[float, ...]:
        """Finite bounds; the snapshot buckets horizons by these critical points."""
        return tuple(p for p in (self.lo, self.hi) if p is not None)


def _tighter_lo(cur: tuple[float | None, bool], new: tuple[float, bool]) -> tuple[float | None, bool]:
    """Intersect two lower bounds: the larger wins, exclusive wins a tie."""
    if cur[0] is None or new[0] > cur[0]:
        return new
    if new[0] == cur[0]:
        return (cur[0], cur[1] and new[1])
    return cur


def _tighter_hi(cur: tuple[float | None, bool], new: tuple[float, bool]) -> tuple[float | None, bool]:
    """Intersect two upper bounds: the smaller wins, exclusive wins a tie."""
    if cur[0] is None or new[0] < cur[0]:
        return new
    if new[0] == cur[0]:
        return (cur[0], cur[1] and new[1])
    return cur


def parse_horizon(expr: str) -> HorizonRange:
    """Parse ``*``, ``<N``, ``<=N``, ``>N``, ``>=N`` or an ``&`` conjunction of those.

    Raises ValueError for anything else, including empty ranges, because a rule that can
    never match is always a typo rather than intent.
    """
    if not isinstance(expr, str):
        raise ValueError(f"horizon expression must be a string, got {type(expr).__name__}")
    text = expr.strip()
    if text == "*":
        return HorizonRange(None, False, None, False, text)
    if not text:
        raise ValueError("empty horizon expression (use '*' for any horizon)")
    lo: tuple[float | None, bool] = (None, False)
    hi: tuple[float | None, bool] = (None, False)
    for term in text.split("&"):
        m = _HORIZON_TERM_RE.match(term)
        if m is None:
            raise ValueError(
                f"invalid horizon term {term.strip()!r} in {text!r}: expected '*' alone or "
                "terms like '<N', '<=N', '>N', '>=N' (N a non-negative number) joined by '&'"
            )
        op, value = m.group(1), float(m.group(2))
        if op[0] == ">":
            lo = _tighter_lo(lo, (value, op == ">="))
        else:
            hi = _tighter_hi(hi, (value, op == "<="))
    rng = HorizonRange(lo[0], lo[1], hi[0], hi[1], text)
    if rng.is_empty():
        raise ValueError(f"horizon expression {text!r} is an empty range and can never match")
    return rng


# --------------------------------------------------------------------------- globs


@functools.lru_cache(maxsize=4096)
def _glob_problem(pattern: str) -> str | None:
    """Explain why ``pattern`` is not an acceptable glob, or None when it is fine."""
    if not pattern:
        return "empty glob (use '*' to match anything)"
    if not _GLOB_CHARS_RE.match(pattern):
        bad = sorted({c for c in pattern if not _GLOB_CHARS_RE.match(c)})
        return f"glob {pattern!r} contains disallowed characters {''.join(bad)!r}"
    return _bracket_problem(pattern)


def _bracket_problem(pattern: str) -> str | None:
    """Reject unbalanced or empty ``[...]`` classes, which fnmatch would silently treat as text."""
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "]":
            return f"glob {pattern!r} has an unbalanced ']'"
        if ch == "[":
            close = pattern.find("]", i + 1)
            body = pattern[i + 1 : close] if close != -1 else ""
            if close == -1 or "[" in body:
                return f"glob {pattern!r} has an unbalanced '['"
            if body in ("", "!"):
                return f"glob {pattern!r} has an empty character class"
            i = close
        i += 1
    return None


def _has_wildcard(pattern: str) -> bool:
    return not _WILDCARD_CHARS.isdisjoint(pattern)


def _pattern_covers(a: str, b: str) -> bool:
    """Conservative 'every string matching b matches a' test for shadow warnings."""
    return a == "*" or a == b or (not _has_wildcard(b) and fnmatch.fnmatchcase(b, a))


@functools.lru_cache(maxsize=4096)
def _compile_glob(pattern: str) -> Callable[[str], Any]:
    """Cheapest matcher for a validated glob: equality for literals, a regex otherwise.

    Cached: matchers are pure, and a reload mostly compiles the globs of the previous one.
    """
    if pattern == "*":
        return _always
    if not _has_wildcard(pattern):
        return functools.partial(operator.eq, pattern)
    return re.compile(fnmatch.translate(pattern)).match


def _always(_: str) -> bool:
    return True


# --------------------------------------------------------------------------- value objects


@attrs.frozen
class Rule:
    """One validated routing rule; ``index`` is its 0-based position in the file."""

    index: int
    asset_class: str
    horizon: HorizonRange
    symbol: str
    model: str
    fallback: str | None
    priority: int
    description: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-able view, shaped like the YAML so operators recognise it."""
        return {
            "index": self.index,
            "match": {
                "asset_class": self.asset_class,
                "horizon_ms": self.horizon.text,
                "symbol": self.symbol,
            },
            "model": self.model,
            "fallback": self.fallback,
            "priority": self.priority,
            "description": self.description,
        }


@attrs.frozen
class RouterSettings:
    """The ``config`` section; ``model_repository`` is left relative for the caller to resolve."""

    default_model: str
    redis_url: str | None = None
    max_latency_us: float = 50
    cache_ttl_seconds: int = 300
    performance_logging: bool = True
    model_repository: str = "models"
    preload_models: tuple[str, ...] = ()
    max_cached_models: int = 16
    model_cache_mb: float = 256
    max_batch_items: int = 1024
    # The whole request's budget for model calls: past it the answer is 504, no fallback.
    request_deadline_ms: float = 500


@attrs.frozen
class ModelThreshold:
    """Per-model health limits; None means 'not checked'."""

    max_latency_ms: float | None = None
    min_accuracy: float | None = None
    min_samples: int = 100


@attrs.frozen
class ReloadSettings:
    """How the reload actor watches and backs up the config."""

    enabled: bool = True
    signal: str = "SIGHUP"
    validation: bool = True
    backup_on_reload: bool = True
    debounce_ms: int = 100
    backup_count: int = 10


@attrs.frozen
class SwitchingSettings:
    """Health limits the switching machinery applies (circuit breakers and alert thresholds)."""

    breaker_failures: int = 5
    breaker_open_seconds: float = 30.0
    alert_error_rate: float = 0.05
    alert_latency_p95_ms: float = 5000.0
    min_requests: int = 20


@attrs.frozen
class RouterConfig:
    """A fully validated config; ``config_hash`` identifies it in selections and metrics."""

    rules: tuple[Rule, ...]
    settings: RouterSettings
    thresholds: tuple[tuple[str, ModelThreshold], ...]
    reload: ReloadSettings
    config_hash: str
    warnings: tuple[str, ...] = ()
    switching: SwitchingSettings = attrs.field(factory=SwitchingSettings)

    def threshold_for(self, model: str) -> ModelThreshold | None:
        """Thresholds configured for ``model``, or None when it has none."""
        for name, threshold in self.thresholds:
            if name == model:
                return threshold
        return None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able view for the admin API and reload logs."""
        settings = attrs.asdict(self.settings)
        settings["preload_models"] = list(self.settings.preload_models)
        return {
            "rules": [r.to_dict() for r in self.rules],
            "config": settings,
            "thresholds": {name: attrs.asdict(t) for name, t in self.thresholds},
            "reload": attrs.asdict(self.reload),
            "switching": attrs.asdict(self.switching),
            "config_hash": self.config_hash,
            "warnings": list(self.warnings),
        }


@attrs.frozen
class Selection:
    """The routing decision; instances are shared, never mutate or rebuild them per request."""

    model: str
    rule_index: int | None
    config_hash: str
    fallback: str | None
    description: str


# --------------------------------------------------------------------------- validation helpers


class _Problems:
    """Collects every problem so one parse reports them all."""

    def __init__(self) -> None:
        self.details: list[dict[str, str]] = []

    def add(self, path: str, message: str) -> None:
        self.details.append({"path": path, "message": message})


def _join(base: str, key: str) -> str:
    return key if not base else f"{base}.{key}"


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


def _check_keys(mapping: Mapping[Any, Any], allowed: tuple[str, ...], path: str, probs: _Problems) -> None:
    """Unknown keys are errors so typos (``priorty``) never silently fall back to defaults."""
    for key in mapping:
        if key not in allowed:
            probs.add(_join(path, str(key)), f"unknown key {key!r} (allowed: {', '.join(allowed)})")


def _mapping(value: Any, path: str, probs: _Problems, *, what: str = "a mapping") -> dict[Any, Any] | None:
    """Treat null as an empty section; anything else but a mapping is an error."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    probs.add(path, f"expected {what}, got {_describe(value)}")
    return None


def _opt_str(m: Mapping[Any, Any], key: str, path: str, probs: _Problems, default: str | None,
             *, nullable: bool = False) -> str | None:
    if key not in m or (nullable and m[key] is None):
        return default
    value = m[key]
    if not isinstance(value, str) or not value:
        probs.add(_join(path, key), f"expected a non-empty string, got {_describe(value)}")
        return default
    return value


def _opt_bool(m: Mapping[Any, Any], key: str, path: str, probs: _Problems, default: bool) -> bool:
    value = m.get(key, default)
    if not isinstance(value, bool):
        probs.add(_join(path, key), f"expected true or false, got {_describe(value)}")
        return default
    return value


def _opt_int(m: Mapping[Any, Any], key: str, path: str, probs: _Problems, default: int,
             lo: int | None = None, hi: int | None = None) -> int:
    value = m.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        probs.add(_join(path, key), f"expected an integer, got {_describe(value)}")
        return default
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        bounds = f">= {lo}" if hi is None else f"between {lo} and {hi}"
        probs.add(_join(path, key), f"must be {bounds}, got {value}")
        return default
    return value


def _opt_number(m: Mapping[Any, Any], key: str, path: str, probs: _Problems, default: float | None,
                *, positive: bool = False, unit: bool = False) -> float | None:
    value = m.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        probs.add(_join(path, key), f"expected a finite number, got {_describe(value)}")
        return default
    if positive and value <= 0:
        probs.add(_join(path, key), f"must be > 0, got {value}")
        return default
    if unit and not 0 <= value <= 1:
        probs.add(_join(path, key), f"must be between 0 and 1, got {value}")
        return default
    return value


# --------------------------------------------------------------------------- section parsers


_TOP_KEYS = ("rules", "config", "model_thresholds", "reload", "switching", "default_model")
_RULE_KEYS = ("match", "model", "fallback", "priority", "description")
_MATCH_KEYS = ("asset_class", "horizon_ms", "symbol")
_CONFIG_KEYS = tuple(f.name for f in attrs.fields(RouterSettings))
_THRESHOLD_KEYS = tuple(f.name for f in attrs.fields(ModelThreshold))
_RELOAD_KEYS = tuple(f.name for f in attrs.fields(ReloadSettings))
_SWITCHING_KEYS = tuple(f.name for f in attrs.fields(SwitchingSettings))


class _ModelRefs:
    """Every place a model is named, checked against ``known_models`` after parsing."""

    def __init__(self) -> None:
        self.refs: list[tuple[str, str]] = []

    def add(self, path: str, name: str | None) -> None:
        if name is not None:
            self.refs.append((path, name))

    def check(self, known: frozenset[str], probs: _Problems) -> None:
        listing = ", ".join(sorted(known)) or "(none)"
        for path, name in self.refs:
            if name not in known:
                probs.add(path, f"unknown model {name!r} (known models: {listing})")


def _parse_glob(m: Mapping[Any, Any], key: str, path: str, probs: _Problems) -> str:
    value = m.get(key, "*")
    if not isinstance(value, str):
        probs.add(_join(path, key), f"expected a quoted glob string, got {_describe(value)}")
        return "*"
    problem = _glob_problem(value)
    if problem is not None:
        probs.add(_join(path, key), problem)
        return "*"
    return value


#: HorizonRange is immutable, so equal expressions share one parsed range (errors are not cached).
_cached_horizon = functools.lru_cache(maxsize=4096)(parse_horizon)
_ANY_HORIZON = parse_horizon("*")


def _parse_rule_horizon(m: Mapping[Any, Any], path: str, probs: _Problems) -> HorizonRange:
    value = m.get("horizon_ms", "*")
    if not isinstance(value, str):
        probs.add(_join(path, "horizon_ms"),
                  f"must be a quoted expression string such as \"<60000\", got {_describe(value)}")
        return _ANY_HORIZON
    try:
        return _cached_horizon(value)
    except ValueError as exc:
        probs.add(_join(path, "horizon_ms"), str(exc))
        return _ANY_HORIZON


def _parse_match(value: Any, path: str, probs: _Problems) -> tuple[str, HorizonRange, str]:
    m = _mapping(value, path, probs)
    if m is None:
        return "*", _ANY_HORIZON, "*"
    _check_keys(m, _MATCH_KEYS, path, probs)
    return (
        _parse_glob(m, "asset_class", path, probs),
        _parse_rule_horizon(m, path, probs),
        _parse_glob(m, "symbol", path, probs),
    )


_RULE_KEY_SET = frozenset(_RULE_KEYS)
_MATCH_KEY_SET = frozenset(_MATCH_KEYS)


def _clean_rule(index: int, value: Any, refs: _ModelRefs) -> Rule | None:
    """The rule when every field is present-and-valid or absent (the usual case), else None.

    Accepts exactly what the field-by-field checks in _parse_rule accept without a problem,
    so None only means 'take the slow path', which then reports what is wrong.
    """
    if type(value) is not dict or not value.keys() <= _RULE_KEY_SET:
        return None
    match = value.get("match")
    if type(match) is not dict or not match.keys() <= _MATCH_KEY_SET:
        return None
    asset_class = match.get("asset_class", "*")
    symbol = match.get("symbol", "*")
    horizon = match.get("horizon_ms", "*")
    model = value.get("model")
    fallback = value.get("fallback")
    priority = value.get("priority", 100)
    description = value.get("description", "")
    if not (type(asset_class) is str and type(symbol) is str and type(horizon) is str
            and type(model) is str and model and type(priority) is int and type(description) is str
            and (fallback is None or (type(fallback) is str and fallback))
            and _glob_problem(asset_class) is None and _glob_problem(symbol) is None):
        return None
    try:
        horizon_range = _cached_horizon(horizon)
    except ValueError:
        return None
    path = f"rules[{index}]"
    refs.add(f"{path}.model", model)
    refs.add(f"{path}.fallback", fallback)
    return Rule(index, asset_class, horizon_range, symbol, model, fallback, priority, description)


def _parse_rule(index: int, value: Any, probs: _Problems, refs: _ModelRefs) -> Rule | None:
    clean = _clean_rule(index, value, refs)
    if clean is not None:
        return clean
    path = f"rules[{index}]"
    m = _mapping(value, path, probs)
    if m is None:
        return None
    _check_keys(m, _RULE_KEYS, path, probs)
    asset_class, horizon, symbol = _parse_match(m.get("match"), _join(path, "match"), probs)
    if "model" not in m:
        probs.add(_join(path, "model"), "missing required key 'model'")
    model = _opt_str(m, "model", path, probs, None)
    fallback = _opt_str(m, "fallback", path, probs, None, nullable=True)
    refs.add(_join(path, "model"), model)
    refs.add(_join(path, "fallback"), fallback)
    priority = _opt_int(m, "priority", path, probs, 100)
    description = m.get("description", "")
    if not isinstance(description, str):
        probs.add(_join(path, "description"), f"expected a string, got {_describe(description)}")
        description = ""
    if model is None:
        return None
    return Rule(index, asset_class, horizon, symbol, model, fallback, priority, description)


def _parse_rules(value: Any, probs: _Problems, refs: _ModelRefs) -> tuple[Rule, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        probs.add("rules", f"expected a list of rules, got {_describe(value)}")
        return ()
    parsed = (_parse_rule(i, item, probs, refs) for i, item in enumerate(value))
    return tuple(r for r in parsed if r is not None)


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
        probs.add("config.default_model", f"conflicts with default_model {top!r} given at model_router level")
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
    )


def _parse_threshold(value: Any, path: str, probs: _Problems) -> ModelThreshold:
    m = _mapping(value, path, probs) or {}
    _check_keys(m, _THRESHOLD_KEYS, path, probs)
    return ModelThreshold(
        max_latency_ms=_opt_number(m, "max_latency_ms", path, probs, None, positive=True),
        min_accuracy=_opt_number(m, "min_accuracy", path, probs, None, unit=True),
        min_samples=_opt_int(m, "min_samples", path, probs, 100, lo=1),
    )


def _parse_thresholds(
    value: Any, probs: _Problems, refs: _ModelRefs
) -> tuple[tuple[str, ModelThreshold], ...]:
    m = _mapping(value, "model_thresholds", probs) or {}
    out: list[tuple[str, ModelThreshold]] = []
    for name, item in m.items():
        path = f"model_thresholds.{name}"
        if not isinstance(name, str) or not name:
            probs.add(path, f"model name must be a non-empty string, got {_describe(name)}")
            continue
        refs.add(path, name)
        out.append((name, _parse_threshold(item, path, probs)))
    return tuple(out)


def _parse_reload(value: Any, probs: _Problems) -> ReloadSettings:
    path = "reload"
    m = _mapping(value, path, probs) or {}
    _check_keys(m, _RELOAD_KEYS, path, probs)
    signal = m.get("signal", "SIGHUP")
    if signal not in ALLOWED_SIGNALS:
        probs.add("reload.signal", f"must be one of {', '.join(ALLOWED_SIGNALS)}, got {_describe(signal)}")
        signal = "SIGHUP"
    return ReloadSettings(
        enabled=_opt_bool(m, "enabled", path, probs, True),
        signal=signal,
        validation=_opt_bool(m, "validation", path, probs, True),
        backup_on_reload=_opt_bool(m, "backup_on_reload", path, probs, True),
        debounce_ms=_opt_int(m, "debounce_ms", path, probs, 100, lo=0, hi=10000),
        backup_count=_opt_int(m, "backup_count", path, probs, 10, lo=1, hi=1000),
    )


def _parse_switching(value: Any, probs: _Problems) -> SwitchingSettings:
    path = "switching"
    m = _mapping(value, path, probs) or {}
    _check_keys(m, _SWITCHING_KEYS, path, probs)
    defaults = SwitchingSettings()

    def number(key: str, default: float, lo: float, hi: float) -> float:
        value = _opt_number(m, key, path, probs, default)
        if value is None or not lo <= value <= hi:
            probs.add(f"{path}.{key}", f"must be a number in [{lo:g}, {hi:g}], got {_describe(m.get(key))}")
            return default
        return float(value)

    return SwitchingSettings(
        breaker_failures=_opt_int(m, "breaker_failures", path, probs, defaults.breaker_failures, lo=1, hi=10_000),
        breaker_open_seconds=number("breaker_open_seconds", defaults.breaker_open_seconds, 0.001, 86_400),
        alert_error_rate=number("alert_error_rate", defaults.alert_error_rate, 0.0, 1.0),
        alert_latency_p95_ms=number("alert_latency_p95_ms", defaults.alert_latency_p95_ms, 0.001, 3_600_000),
        min_requests=_opt_int(m, "min_requests", path, probs, defaults.min_requests, lo=1, hi=1_000_000),
    )


# --------------------------------------------------------------------------- document level


class _Invalid(Exception):
    """The document is not valid YAML; the problem is already recorded."""


class _Slow(Exception):
    """Input a fast path does not handle; the general (PyYAML) path decides instead."""


#: Tags the fast converter builds itself; every other tag (timestamps, binary, sets, merge keys,
#: explicit tags, ...) goes through PyYAML's SafeConstructor so behaviour stays identical.
_STR_TAG = "tag:yaml.org,2002:str"
_INT_TAG = "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"
_BOOL_TAG = "tag:yaml.org,2002:bool"
_NULL_TAG = "tag:yaml.org,2002:null"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MAP_TAG = "tag:yaml.org,2002:map"
_PLAIN_TAG_MEMO_LIMIT = 4096
_PLAIN_TAGS: dict[str, str] = {}


class _ComposeLoader(_SAFE_LOADER):  # type: ignore[misc,valid-type]
    """The SafeLoader's parser and composer with a memoized implicit-tag resolver.

    Resolution of a plain scalar depends only on its text (the resolver tables are fixed and
    SafeLoader has no path resolvers), so memoizing it is exact; quoted scalars and collections
    always get the default tags, as in ``BaseResolver.resolve``.
    """

    def descend_resolver(self, current_node: Any, current_index: Any) -> None:
        return None

    def ascend_resolver(self) -> None:
        return None

    def resolve(self, kind: type, value: Any, implicit: tuple[bool, bool]) -> str:
        if kind is yaml.ScalarNode:
            if not implicit[0]:
                return _STR_TAG
            return _PLAIN_TAGS.get(value) or _plain_tag(value)
        return _MAP_TAG if kind is yaml.MappingNode else _SEQ_TAG


def _plain_tag(value: str) -> str:
    """Resolve a plain scalar's tag with SafeLoader's own rules and memoize it (bounded)."""
    tag: str = yaml.resolver.BaseResolver.resolve(_RESOLVER, yaml.ScalarNode, value, (True, False))
    if len(_PLAIN_TAGS) >= _PLAIN_TAG_MEMO_LIMIT:
        _PLAIN_TAGS.clear()
    _PLAIN_TAGS[value] = tag
    return tag


_RESOLVER = yaml.resolver.Resolver()  # the resolver class SafeLoader and CSafeLoader both use
#: The fast paths rely on SafeLoader having no path resolvers and on its tables being Resolver's.
_FAST_YAML = (not _SAFE_LOADER.yaml_path_resolvers
              and _SAFE_LOADER.yaml_implicit_resolvers is yaml.resolver.Resolver.yaml_implicit_resolvers)
if not _FAST_YAML:  # pragma: no cover - nothing in this service registers resolvers
    _ComposeLoader = _SAFE_LOADER  # type: ignore[misc]

_SCALAR_CONSTRUCTOR = yaml.constructor.SafeConstructor()


def _node_data(node: yaml.Node, seen: set[int], dups: list[yaml.MappingNode]) -> Any:
    """Build plain data from a composed node, exactly as SafeConstructor would.

    Handles the schema's types only; raises _Slow for anything else (other tags, a collection
    reached twice through an alias).  Mappings with fewer keys than entries go to ``dups``.
    """
    tag = node.tag
    cls = type(node)
    if cls is yaml.ScalarNode:
        if tag == _STR_TAG:
            return node.value
        if tag == _INT_TAG:
            value = node.value
            if value.isdigit() and value.isascii() and (value[0] != "0" or len(value) == 1):
                return int(value)
            return _SCALAR_CONSTRUCTOR.construct_yaml_int(node)
        if tag == _NULL_TAG:
            return None
        if tag == _BOOL_TAG:
            return _SCALAR_CONSTRUCTOR.construct_yaml_bool(node)
        if tag == _FLOAT_TAG:
            return _SCALAR_CONSTRUCTOR.construct_yaml_float(node)
        raise _Slow
    if id(node) in seen:
        raise _Slow
    seen.add(id(node))
    if cls is yaml.MappingNode and tag == _MAP_TAG:
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            out[_node_data(key_node, seen, dups)] = _node_data(value_node, seen, dups)
        if len(out) != len(node.value):
            dups.append(node)
        return out
    if cls is yaml.SequenceNode and tag == _SEQ_TAG:
        return [_node_data(item, seen, dups) for item in node.value]
    raise _Slow


def _scalar_key(node: yaml.Node) -> tuple[bool, Any]:
    """(True, key) for a scalar key node the fast converter handles, else (False, None)."""
    if type(node) is not yaml.ScalarNode or node.tag == "tag:yaml.org,2002:merge":
        return False, None
    try:
        return True, _node_data(node, set(), [])
    except Exception:  # any key the converter cannot build is simply not compared
        return False, None


def _mark_text(mark: Any) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}"


def _duplicate_keys(node: yaml.Node, path: str, probs: _Problems, seen: set[int]) -> None:
    """Report repeated mapping keys with the config path of the repeated key (slow, rare)."""
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _duplicate_keys(item, f"{path}[{i}]", probs, seen)
    elif isinstance(node, yaml.MappingNode):
        first: dict[Any, yaml.Node] = {}
        for key_node, value_node in node.value:
            ok, key = _scalar_key(key_node)
            if not ok:
                continue
            try:
                earlier = first.setdefault(key, key_node)
            except TypeError:
                continue
            if path == DOCUMENT_PATH:
                child = "" if key == "model_router" else f"{DOCUMENT_PATH}.{key}"
            else:
                child = _join(path, str(key))
            if earlier is not key_node:
                probs.add(child or f"{DOCUMENT_PATH}.{key}",
                          f"duplicate key {key!r} at {_mark_text(key_node.start_mark)} "
                          f"(first defined at {_mark_text(earlier.start_mark)})")
            _duplicate_keys(value_node, child, probs, seen)


# Fast path for the block-style YAML operators write: a line-based reader of a conservative
# subset (space indentation, identifier keys, single-line plain or quoted scalars without escapes,
# single-line flow collections of such scalars, comments).  Anything else, including every
# invalid document and every repeated key, raises _Slow and goes through PyYAML, so the result is
# always what PyYAML returns.  Plain scalars are typed by PyYAML's own resolver and constructor.
_KEY = r"[A-Za-z_][A-Za-z0-9_.\-]*"
_TAIL = r"(?: +#.*| *)$"
_DQ_RE = re.compile(rf'"([^"\\]*)"{_TAIL}')
_SQ_RE = re.compile(rf"'([^']*)'{_TAIL}")
_PLAIN_RE = re.compile(rf"([A-Za-z0-9_./~][A-Za-z0-9_./~+\-:*?!,() ]*?){_TAIL}")
_FLOW_ITEM = r"""("[^"\\]*"|'[^']*'|[A-Za-z0-9_./~][A-Za-z0-9_./~+\-* ]*?) *"""
_FLOW_ENTRY_RE = re.compile(rf" *({_KEY}): +{_FLOW_ITEM}([,}}])")
_FLOW_SEQ_ITEM_RE = re.compile(rf" *{_FLOW_ITEM}([,\]])")
_FLOW_EMPTY_RE = re.compile(rf"(\{{ *\}}|\[ *\]){_TAIL}")
_TAIL_RE = re.compile(_TAIL)
_PLAIN_VALUE_LIMIT = 4096
_PLAIN_VALUES: dict[str, Any] = {}


def _plain_value(text: str) -> Any:
    """A plain scalar typed exactly as SafeLoader types it (values memoized: all immutable)."""
    known = _PLAIN_VALUES.get(text, _MISSING)
    if known is not _MISSING:
        return known
    value = _node_data(yaml.ScalarNode(_PLAIN_TAGS.get(text) or _plain_tag(text), text), set(), [])
    _remember(_PLAIN_VALUES, text, value)
    return value


def _remember(memo: dict[str, Any], key: str, value: Any) -> None:
    """Bounded memo insert: past the limit the memo starts over (inputs come from edited files)."""
    if len(memo) >= _PLAIN_VALUE_LIMIT:
        memo.clear()
    memo[key] = value


def _flow_scalar(token: str) -> Any:
    first = token[0]
    if first == '"' or first == "'":
        return token[1:-1]
    return _plain_value(token)


def _flow_value(text: str) -> Any:
    """A single-line flow mapping or sequence of scalars, or raise _Slow."""
    if _FLOW_EMPTY_RE.match(text):
        return {} if text[0] == "{" else []
    pos = 1
    if text[0] == "{":
        out: dict[Any, Any] = {}
        while True:
            m = _FLOW_ENTRY_RE.match(text, pos)
            if m is None:
                raise _Slow
            key = _plain_value(m.group(1))
            if key in out:
                raise _Slow
            out[key] = _flow_scalar(m.group(2))
            pos = m.end()
            if m.group(3) == "}":
                break
    else:
        items: list[Any] = []
        while True:
            m = _FLOW_SEQ_ITEM_RE.match(text, pos)
            if m is None:
                raise _Slow
            items.append(_flow_scalar(m.group(1)))
            pos = m.end()
            if m.group(2) == "]":
                break
        out = items  # type: ignore[assignment]
    if _TAIL_RE.match(text, pos) is None:
        raise _Slow
    return out


_INLINE_SCALARS: dict[str, Any] = {}
_MISSING = object()


def _inline_value(text: str) -> Any:
    """The value after ``key: `` or ``- `` on one line (not empty, not a comment).

    Scalars are memoized by their line text (bounded): they are immutable, and a config
    repeats the same model names and horizon expressions over and over.
    """
    value = _INLINE_SCALARS.get(text, _MISSING)
    if value is _MISSING:
        value = _inline_value_uncached(text)
        if type(value) is not dict and type(value) is not list:
            _remember(_INLINE_SCALARS, text, value)
    return value


def _inline_value_uncached(text: str) -> Any:
    first = text[0]
    if first == '"':
        m = _DQ_RE.match(text)
    elif first == "'":
        m = _SQ_RE.match(text)
    elif first == "{" or first == "[":
        return _flow_value(text)
    else:
        m = _PLAIN_RE.match(text)
        if m is None:
            raise _Slow
        plain = m.group(1)
        if ": " in plain or plain[-1] == ":":
            raise _Slow
        return _plain_value(plain)
    if m is None:
        raise _Slow
    return m.group(1)


def _read_subset(rows: list[tuple[str, str, str, str]]) -> Any:
    """Build the data from (indent, dash, key, rest) rows; every deviation raises _Slow.

    ``stack`` holds the open block collections as [column, container, is_mapping, indentless];
    ``pending`` is the slot (container, key or index, column, in_mapping) of an entry whose line
    ended after ``key:`` or ``-``: a deeper block becomes its value, otherwise it stays null.
    """
    root: Any = None
    stack: list[list[Any]] = []
    pending: tuple[Any, Any, int, bool] | None = None
    for indent, dash, key, rest in rows:
        if not dash and not key:
            if rest and rest[0] != "#":
                raise _Slow  # a bare scalar line: multi-line scalar or scalar document
            continue
        col = len(indent)
        is_map = not dash
        # Find (or open) the collection this row's first item belongs to.
        if pending is not None:
            owner, slot, pcol, from_map = pending
            pending = None
            if col > pcol or (from_map and col == pcol and not is_map):
                container: Any = {} if is_map else []
                owner[slot] = container
                stack.append([col, container, is_map, col == pcol])
            else:
                container = None
        else:
            container = None
        if container is None:
            while stack and stack[-1][0] > col:
                stack.pop()
            if not stack:
                if root is not None or col:
                    raise _Slow
                root = {} if is_map else []
                stack.append([0, root, is_map, False])
            top = stack[-1]
            if top[0] == col and top[3] and is_map:
                stack.pop()
                top = stack[-1]
            if top[0] != col or top[2] != is_map:
                raise _Slow
            container = top[1]
        if dash:
            if key:  # "- key: ..." opens a mapping at the key's column
                mapping: dict[Any, Any] = {}
                container.append(mapping)
                col += len(dash)
                stack.append([col, mapping, True, False])
                container = mapping
            elif rest and rest[0] != "#":
                container.append(_inline_value(rest))
                continue
            else:
                container.append(None)
                pending = (container, len(container) - 1, col, False)
                continue
        name = _plain_value(key)
        if name in container:
            raise _Slow  # repeated key: the slow path reports it with its position
        if rest and rest[0] != "#":
            container[name] = _inline_value(rest)
        else:
            container[name] = None
            pending = (container, name, col, True)
    if root is None:
        raise _Slow
    return root


_ROW_RE = re.compile(rf"^( *)(- +|-$)?(?:({_KEY}):(?: +|$))?(.*)$", re.MULTILINE)


def _load_subset(text: str) -> Any:
    """Data for a document in the fast subset, else raise _Slow (never a YAML error).

    Only printable ASCII and newlines are accepted, so tabs, CR, BOMs and Unicode line breaks
    take the slow path; document markers and directives are rejected as bare scalar lines.
    """
    if not _FAST_YAML or not text.isascii() or not text.replace("\n", "").isprintable():
        raise _Slow
    return _read_subset(_ROW_RE.findall(text))


MAX_YAML_NODES = 100_000


def _expanded_nodes(node: yaml.Node, memo: dict[int, int]) -> int:
    """How many nodes the document holds once aliases are expanded (shared nodes counted once each).

    Aliases make the composed graph a DAG: a few lines ("billion laughs") can stand for
    billions of nodes, and every later walk (validation, hashing) would expand them. The
    count is memoized per node, so it costs one pass over the graph as written.
    """
    key = id(node)
    if key in memo:
        return memo[key]
    memo[key] = 1  # a cycle (not possible in YAML 1.1 aliases, but cheap to guard) counts once
    if isinstance(node, yaml.SequenceNode):
        total = 1 + sum(_expanded_nodes(child, memo) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        total = 1 + sum(_expanded_nodes(k, memo) + _expanded_nodes(v, memo) for k, v in node.value)
    else:
        total = 1
    memo[key] = min(total, MAX_YAML_NODES + 1)
    return memo[key]


def _load_yaml(text: str, probs: _Problems) -> Any:
    """Parse YAML safely with located errors; raise _Invalid when the text is not YAML.

    libyaml (when present) composes the node tree and a small converter builds the data
    for the schema's types, which is several times faster than PyYAML's Python constructor;
    anything unusual is handed to SafeConstructor, so the result is always what
    ``yaml.load(text, Loader=SafeLoader)`` returns.  Repeated keys (which PyYAML silently
    resolves as last-wins) are reported as problems with their paths.
    """
    with contextlib.suppress(_Slow):  # outside the plain subset: take the libyaml route below
        return _load_subset(text)
    try:
        node = yaml.compose(text, Loader=_ComposeLoader)
        if node is None:
            return None
        if _expanded_nodes(node, {}) > MAX_YAML_NODES:
            probs.add(DOCUMENT_PATH, f"YAML aliases expand to more than {MAX_YAML_NODES} nodes (an alias bomb?)")
            raise _Invalid
        dups: list[yaml.MappingNode] = []
        try:
            data = _node_data(node, set(), dups)
        except Exception:
            # Not handled above (or a genuine construction error, which SafeConstructor raises
            # again).  Check keys first: constructing merge keys (<<) rewrites mapping nodes.
            found = _Problems()
            _duplicate_keys(node, DOCUMENT_PATH, found, set())
            data = yaml.constructor.SafeConstructor().construct_document(node)
            probs.details.extend(found.details)
            return data
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        probs.add(DOCUMENT_PATH, f"invalid YAML{where}: {problem}")
        raise _Invalid from exc
    if dups:
        _duplicate_keys(node, DOCUMENT_PATH, probs, set())
    return data


def _router_root(data: Any, probs: _Problems) -> dict[Any, Any] | None:
    if not isinstance(data, dict):
        message = f"top level must be a mapping with a 'model_router' key, got {_describe(data)}"
        probs.add(DOCUMENT_PATH, message)
        return None
    for key in data:
        if key != "model_router":
            message = f"unknown top-level key {key!r} (only 'model_router' is allowed)"
            probs.add(f"{DOCUMENT_PATH}.{key}", message)
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


def _evaluation_order(rules: Iterable[Rule]) -> list[Rule]:
    """Ascending priority; Python's stable sort keeps file order for ties."""
    return sorted(rules, key=lambda r: r.priority)


def _rule_covers(a: Rule, b: Rule) -> bool:
    """Reference semantics of 'a shadows b' (the fast check below must agree with it)."""
    return (
        a.horizon.covers(b.horizon)
        and _pattern_covers(a.asset_class, b.asset_class)
        and _pattern_covers(a.symbol, b.symbol)
    )


_NO_LO = (-math.inf, -1)
_NO_HI = (math.inf, 2)


def _bound_keys(h: HorizonRange) -> tuple[tuple[float, int], tuple[float, int]]:
    """Bounds as tuples so ``a.covers(b)`` is ``a_lo <= b_lo and a_hi >= b_hi``.

    Lower bound: (value, 0 inclusive / 1 exclusive), unbounded sorts below every bound;
    upper bound: (value, 1 inclusive / 0 exclusive), unbounded sorts above every bound
    (including an infinite one).  This is exactly HorizonRange.covers.
    """
    lo = _NO_LO if h.lo is None else (h.lo, 0 if h.lo_inclusive else 1)
    hi = _NO_HI if h.hi is None else (h.hi, 1 if h.hi_inclusive else 0)
    return lo, hi


def _covering_map(patterns: Iterable[str]) -> dict[str, list[str]]:
    """For each pattern, the patterns among ``patterns`` that _pattern_covers it."""
    distinct = set(patterns)
    wild = [p for p in distinct if p != "*" and _has_wildcard(p)]
    out: dict[str, list[str]] = {}
    for pattern in distinct:
        covering = [pattern] if pattern == "*" or "*" not in distinct else ["*", pattern]
        if not _has_wildcard(pattern):
            covering.extend(p for p in wild if fnmatch.fnmatchcase(pattern, p))
        out[pattern] = covering
    return out


def _shadow_warnings(rules: tuple[Rule, ...]) -> tuple[str, ...]:
    """Warn about rules an earlier rule (in evaluation order) makes unreachable.

    Same result as testing every earlier rule with ``_rule_covers`` and naming the first that
    covers, but only earlier rules whose asset_class and symbol globs cover the rule's are
    looked at: rules are grouped by (asset_class, symbol), each group in evaluation order, and
    the candidate groups of each (asset_class, symbol) pair are computed once.
    """
    ordered = _evaluation_order(rules)
    asset_cover = _covering_map(r.asset_class for r in ordered)
    symbol_cover = _covering_map(r.symbol for r in ordered)
    candidates: dict[tuple[str, str], list[tuple[str, str]]] = {}
    groups: dict[tuple[str, str], list[tuple[int, tuple[float, int], tuple[float, int], Rule]]] = {}
    out: list[str] = []
    for pos, rule in enumerate(ordered):
        key = (rule.asset_class, rule.symbol)
        keys = candidates.get(key)
        if keys is None:
            keys = candidates[key] = [(a, s) for a in asset_cover[key[0]] for s in symbol_cover[key[1]]]
        lo, hi = _bound_keys(rule.horizon)
        best: tuple[int, Rule] | None = None
        for group_key in keys:
            for epos, elo, ehi, earlier in groups.get(group_key, ()):
                if best is not None and epos >= best[0]:
                    break
                if elo <= lo and ehi >= hi:
                    best = (epos, earlier)
                    break
        if best is not None:
            earlier = best[1]
            out.append(
                f"rules[{rule.index}] can never match: rules[{earlier.index}] is evaluated "
                f"earlier (priority {earlier.priority} vs {rule.priority}) and covers its match"
            )
        group = groups.get(key)
        if group is None:
            groups[key] = [(pos, lo, hi, rule)]
        else:
            group.append((pos, lo, hi, rule))
    return tuple(out)


def _summary(details: list[dict[str, str]]) -> str:
    first = details[0]
    more = f" (+{len(details) - 1} more)" if len(details) > 1 else ""
    head = f"invalid router config: {len(details)} problem(s)"
    return f"{head}; first: {first['path']}: {first['message']}{more}"


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
    )


# --------------------------------------------------------------------------- compiled snapshot


_CompiledRule = tuple[Callable[[str], Any], HorizonRange, Callable[[str], Any] | None, Selection]


@attrs.frozen(eq=False)
class RoutingSnapshot:
    """Immutable compiled routing table; ``select`` is the per-request hot path.

    Horizons are reduced to a bucket index over the sorted critical points of all rule
    ranges, so every value in a bucket compares identically against every rule and the
    answer can be memoized per (asset_class, bucket, symbol).  The memo is the only mutable
    state; it is bounded and holds shared Selection objects, so no lock is needed in Trio.
    """

    config: RouterConfig
    _points: tuple[float, ...]
    _ordered: tuple[_CompiledRule, ...]
    _default: Selection
    _uses_symbol: bool
    _memo_limit: int
    _memo: dict[tuple[str, int, str | None], Selection] = attrs.field(factory=dict, repr=False)

    @property
    def config_hash(self) -> str:
        return self.config.config_hash

    @property
    def memo_size(self) -> int:
        """Current memo entries (for metrics and tests of the bound)."""
        return len(self._memo)

    @property
    def memo_limit(self) -> int:
        return self._memo_limit

    @property
    def points(self) -> tuple[float, ...]:
        """Sorted critical points that define the horizon buckets."""
        return self._points

    def select(self, asset_class: str, horizon_ms: float, symbol: str | None = None) -> Selection:
        """Pick the model for a request; first matching rule in priority order, else default."""
        if horizon_ms != horizon_ms:
            raise ValueError("horizon_ms must not be NaN")
        points = self._points
        i = bisect_left(points, horizon_ms)
        bucket = i + i + 1 if i < len(points) and points[i] == horizon_ms else i + i
        key = (asset_class, bucket, symbol if self._uses_symbol else None)
        selection = self._memo.get(key)
        if selection is None:
            selection = self._fill(key, asset_class, horizon_ms, symbol)
        return selection

    def _fill(self, key: tuple[str, int, str | None], asset_class: str, horizon_ms: float,
              symbol: str | None) -> Selection:
        """Memo miss: scan the rules once, then remember the answer for the whole bucket."""
        selection = self._resolve(asset_class, horizon_ms, symbol)
        memo = self._memo
        if len(memo) >= self._memo_limit:
            memo.clear()
        memo[key] = selection
        return selection

    def _resolve(self, asset_class: str, horizon_ms: float, symbol: str | None) -> Selection:
        for asset_ok, horizon, symbol_ok, selection in self._ordered:
            if not asset_ok(asset_class) or not horizon.contains(horizon_ms):
                continue
            if symbol_ok is not None and (symbol is None or not symbol_ok(symbol)):
                continue
            return selection
        return self._default

    def horizon_bucket(self, horizon_ms: float) -> int:
        """Bucket index of a horizon: even = open gap between points, odd = exactly a point."""
        if horizon_ms != horizon_ms:
            raise ValueError("horizon_ms must not be NaN")
        points = self._points
        i = bisect_left(points, horizon_ms)
        return i + i + 1 if i < len(points) and points[i] == horizon_ms else i + i

    def bucket_label(self, bucket: int) -> str:
        """Interval notation for a bucket, e.g. ``(60000,7200000)`` or ``[60000,60000]``."""
        points = self._points
        if not 0 <= bucket <= 2 * len(points):
            raise ValueError(f"bucket {bucket} out of range 0..{2 * len(points)}")
        k, exact = divmod(bucket, 2)
        if exact:
            p = _fmt_number(points[k])
            return f"[{p},{p}]"
        lo = _fmt_number(points[k - 1]) if k > 0 else "-inf"
        hi = _fmt_number(points[k]) if k < len(points) else "+inf"
        return f"({lo},{hi})"


def _compile_rule(rule: Rule, config_hash: str) -> _CompiledRule:
    selection = Selection(rule.model, rule.index, config_hash, rule.fallback, rule.description)
    symbol_ok = None if rule.symbol == "*" else _compile_glob(rule.symbol)
    return (_compile_glob(rule.asset_class), rule.horizon, symbol_ok, selection)


def compile_snapshot(config: RouterConfig, *, memo_limit: int = DEFAULT_MEMO_LIMIT) -> RoutingSnapshot:
    """Precompute everything ``select`` needs so the hot path is a bisect plus a dict hit."""
    if memo_limit < 1:
        raise ValueError("memo_limit must be >= 1")
    ordered = _evaluation_order(config.rules)
    points = sorted({float(p) for rule in ordered for p in rule.horizon.points()})
    default = Selection(
        config.settings.default_model, None, config.config_hash, None, "no rule matched: default model"
    )
    return RoutingSnapshot(
        config=config,
        points=tuple(points),
        ordered=tuple(_compile_rule(r, config.config_hash) for r in ordered),
        default=default,
        uses_symbol=any(r.symbol != "*" for r in ordered),
        memo_limit=memo_limit,
    )


def select_model(snapshot: RoutingSnapshot, asset_class: str, horizon_ms: float,
                 symbol: str | None = None) -> Selection:
    """Module-level alias of ``RoutingSnapshot.select`` for callers that prefer functions."""
    return snapshot.select(asset_class, horizon_ms, symbol)
