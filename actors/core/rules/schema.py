"""The validated config as value objects: rules, router settings, the whole config, a selection.

Everything here is immutable so a compiled snapshot can share these objects across requests
and a reload can swap a whole config in one assignment.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs

from actors.core.rules.horizons import HorizonRange
from actors.core.rules.settings import (
    AccessSettings,
    DataPlaneSettings,
    ModelThreshold,
    ReloadSettings,
    SwitchingSettings,
)


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
    # Where the rules live: this file, or Redis (versioned, shared by every replica; docs/cluster.md).
    rules_source: str = "file"


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
    data_plane: DataPlaneSettings = attrs.field(factory=DataPlaneSettings)
    access: AccessSettings = attrs.field(factory=AccessSettings)

    def routes_to(self, model: str) -> tuple[dict[str, Any], ...]:
        """Where requests can be sent to ``model``: rules naming it as model or fallback, and the default.

        Each entry has the rule's ``index`` and ``description`` and the role (``as``); the default
        model has ``index`` None. Removing the last version of such a model breaks those routes.
        """
        found: list[dict[str, Any]] = [
            {"index": r.index, "description": r.description, "as": "model" if r.model == model else "fallback"}
            for r in self.rules
            if model in (r.model, r.fallback)
        ]
        if self.settings.default_model == model:
            found.append({"index": None, "description": "default model", "as": "default_model"})
        return tuple(found)

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
            "data_plane": attrs.asdict(self.data_plane),
            "access": {**attrs.asdict(self.access), "cors_origins": list(self.access.cors_origins)},
            "config_hash": self.config_hash,
            "warnings": list(self.warnings),
        }


@attrs.frozen(cache_hash=True)
class Selection:
    """The routing decision; instances are shared, never mutate or rebuild them per request.

    The hash is cached: per-request counters are keyed by the selection.
    """

    model: str
    rule_index: int | None
    config_hash: str
    fallback: str | None
    description: str


def _evaluation_order(rules: Iterable[Rule]) -> list[Rule]:
    """Ascending priority; Python's stable sort keeps file order for ties."""
    return sorted(rules, key=lambda r: r.priority)
