"""What the web layer holds: the handles of the running actors, built once by ``app.serve()``.

Handlers read state through these handles (immutable views, rebound by their owners) and
change it only by submitting commands (``commands.submit``), never by reaching into an
actor's internals.
"""

from __future__ import annotations

import time
from pathlib import Path

import attrs
import trio

from actors.cluster import Cluster
from actors.config_watcher import ConfigWatcher
from actors.control_bus import ControlBus
from actors.health_monitor import HealthMonitor
from actors.model_cache import ModelCache
from actors.redis_bus import RedisOutbox
from actors.rollout_leader import Rollouts
from actors.router import RouterState
from actors.rules_store import RulesStore
from actors.serving.metrics import Metrics
from actors.serving.predictor import Predictor
from actors.switch_feed import SwitchFeed
from actors.transition_manager import Transitions
from actors.web.access import AccessGate

SERVICE_NAME = "model-router"
SERVICE_VERSION = "0.2.0"


@attrs.frozen
class WebSettings:
    """The options the web layer needs (a slice of the process options)."""

    admin_key: str | None = None
    worker_index: int = 0
    main_port_hint: str = "the main port"


@attrs.define
class Service:
    """The running service as the web layer sees it."""

    settings: WebSettings
    metrics: Metrics
    router: RouterState
    cache: ModelCache
    watcher: ConfigWatcher
    outbox: RedisOutbox
    predictor: Predictor
    repository: Path
    transitions: Transitions
    health: HealthMonitor
    feed: SwitchFeed
    commands: ControlBus
    gate: AccessGate
    rules: RulesStore
    cluster: Cluster
    rollouts: Rollouts
    started_at: float = attrs.field(factory=time.time)
    stop: trio.Event = attrs.field(factory=trio.Event)

    def rules_version(self) -> str:
        """The version of the rules document in force here (a digest for a file, a counter in Redis)."""
        return self.watcher.version

    async def reload_config(self) -> bool:
        """Seed 000's programmatic reload: True when the new config is in force."""
        return await self.watcher.reload_config()

    def readiness(self) -> list[str]:
        """Why the service is not ready (empty when it is): the default model must be loaded."""
        default = self.router.config.settings.default_model
        if self.cache.lookup(default, self.predictor.serving_version(default)) is not None:
            return []
        failures = [f"{n}@{v}: {r}" for (n, v), r in self.cache.view.failures.items() if n == default]
        return [f"default model {default!r} is not loaded yet", *failures]
