"""Settings of other actors that live in the rules file, each next to its section parser.

The reload actor (``reload``), the health monitor and switching machinery (``switching``) and the
transition manager (``model_thresholds``) read these from the same YAML document as the routing
rules, so they are validated in the same pass and reloaded atomically with them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import attrs

from actors.core.feedback_index import DEFAULT_LIMIT as FEEDBACK_INDEX_DEFAULT
from actors.core.rules.fields import _check_keys, _mapping, _ModelRefs, _opt_bool, _opt_int, _opt_number
from actors.core.rules.problems import _describe, _path_key, _Problems

ALLOWED_SIGNALS = ("SIGHUP", "SIGUSR1", "SIGUSR2")


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
    """Health limits the switching machinery applies (circuit breakers and alert thresholds).

    ``feedback_index_size`` bounds the recent predictions ``POST /feedback`` can refer to
    (~115 bytes each; 0 keeps none).
    """

    breaker_failures: int = 5
    breaker_open_seconds: float = 30.0
    alert_error_rate: float = 0.05
    alert_latency_p95_ms: float = 5000.0
    min_requests: int = 20
    feedback_index_size: int = FEEDBACK_INDEX_DEFAULT


@attrs.frozen
class DataPlaneSettings:
    """The data-plane port and its HTTP limits; they take effect at start (the listener is bound once).

    ``port`` None means "not set here": the ``--data-port`` option or ``MODEL_ROUTER_DATA_PORT``
    decides, else the default 8001; 0 turns the data plane off.
    """

    port: int | None = None
    header_timeout_s: float = 20.0
    keep_alive_timeout_s: float = 75.0
    max_connections: int = 1024
    max_header_bytes: int = 32 * 1024


@attrs.frozen
class AccessSettings:
    """The ``access`` section: API keys and tenants (docs/access.md).

    ``file`` and ``audit_file`` are as written (relative paths are resolved against the
    config file's folder by the caller); ``file`` None means no access control.
    ``cors_origins`` are exact origins (``https://host[:port]``) browsers may call from.
    """

    file: str | None = None
    audit_file: str | None = None
    cors_origins: tuple[str, ...] = ()

    def resolve(self, config_path: Path) -> tuple[Path | None, Path | None]:
        """The access and audit files as paths, relative ones against the config file's folder."""
        folder = config_path.parent
        return (None if self.file is None else folder / self.file,
                None if self.audit_file is None else folder / self.audit_file)


_THRESHOLD_KEYS = tuple(f.name for f in attrs.fields(ModelThreshold))
_DATA_PLANE_KEYS = tuple(f.name for f in attrs.fields(DataPlaneSettings))
_RELOAD_KEYS = tuple(f.name for f in attrs.fields(ReloadSettings))
_SWITCHING_KEYS = tuple(f.name for f in attrs.fields(SwitchingSettings))


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
        path = f"model_thresholds.{_path_key(name)}"
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
        feedback_index_size=_opt_int(m, "feedback_index_size", path, probs, defaults.feedback_index_size,
                                     lo=0, hi=1_000_000),
    )


def _parse_data_plane(value: Any, probs: _Problems) -> DataPlaneSettings:
    path = "data_plane"
    m = _mapping(value, path, probs) or {}
    _check_keys(m, _DATA_PLANE_KEYS, path, probs)
    defaults = DataPlaneSettings()
    port = None
    if m.get("port") is not None:
        port = _opt_int(m, "port", path, probs, 0, lo=0, hi=65535)
    return DataPlaneSettings(
        port=port,
        header_timeout_s=float(_opt_number(m, "header_timeout_s", path, probs, defaults.header_timeout_s,
                                           positive=True) or defaults.header_timeout_s),
        keep_alive_timeout_s=float(_opt_number(m, "keep_alive_timeout_s", path, probs, defaults.keep_alive_timeout_s,
                                               positive=True) or defaults.keep_alive_timeout_s),
        max_connections=_opt_int(m, "max_connections", path, probs, defaults.max_connections, lo=1, hi=1_000_000),
        max_header_bytes=_opt_int(m, "max_header_bytes", path, probs, defaults.max_header_bytes,
                                  lo=1024, hi=1024 * 1024),
    )


_ACCESS_KEYS = tuple(f.name for f in attrs.fields(AccessSettings))
_ORIGIN_RE = re.compile(r"^https?://[A-Za-z0-9.\-]+(:[0-9]{1,5})?$")


def _parse_access(value: Any, probs: _Problems) -> AccessSettings:
    path = "access"
    m = _mapping(value, path, probs) or {}
    _check_keys(m, _ACCESS_KEYS, path, probs)
    files: dict[str, str | None] = {}
    for key in ("file", "audit_file"):
        raw = m.get(key)
        if raw is not None and (not isinstance(raw, str) or not raw.strip() or "\0" in raw):
            probs.add(f"{path}.{key}", f"must be a non-empty path string, got {_describe(raw)}")
            raw = None
        files[key] = raw
    origins = m.get("cors_origins") or []
    if not isinstance(origins, list):
        probs.add(f"{path}.cors_origins", f"must be a list of origins, got {_describe(origins)}")
        origins = []
    for i, origin in enumerate(origins):
        if not isinstance(origin, str) or not _ORIGIN_RE.match(origin):
            probs.add(f"{path}.cors_origins[{i}]",
                      f"must be an exact origin like https://app.example.com[:port], got {_describe(origin)}")
    return AccessSettings(files["file"], files["audit_file"],
                          tuple(o for o in origins if isinstance(o, str) and _ORIGIN_RE.match(o)))
