"""Client settings: where the service is, how long to wait, which keys, how to retry.

Explicit arguments win; otherwise the environment a deployment sets once for every
process (``REMOTE_INFERENCE_URL``, ``REMOTE_INFERENCE_TIMEOUT``, ``MODEL_ROUTER_API_KEY``,
``MODEL_ROUTER_ADMIN_KEY`` or ``MODEL_ROUTER_ADMIN_KEY_FILE``, ``REMOTE_INFERENCE_ENABLED``),
then defaults. Keys are kept out of ``repr`` so a logged client never shows them.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from pathlib import Path

import attrs

from actors.storage.admin_key import read_admin_key

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT_S = 10.0
FALSE_WORDS = frozenset({"0", "false", "no", "off"})


@attrs.frozen
class RetryPolicy:
    """Bounded retries with exponential backoff and full jitter.

    Only failures where the request cannot have had an effect are retried: the
    connection was refused or not established in time, or the service answered 503
    (nothing could take the request). A 4xx is the caller's answer and never retried.
    """

    attempts: int = 4
    base_delay_s: float = 0.05
    max_delay_s: float = 2.0

    def delay(self, retry: int, rng: random.Random, retry_after: str | None = None) -> float:
        """Seconds before retry number ``retry`` (0-based): uniform in [0, min(cap, base * 2**retry)].

        Full jitter spreads the retries of many clients that failed together (a restart
        drops every connection at once). A ``Retry-After`` in seconds from the service is
        honoured up to the cap.
        """
        ceiling = min(self.max_delay_s, self.base_delay_s * (2 ** retry))
        seconds = _seconds(retry_after)
        if seconds is not None:
            return min(self.max_delay_s, max(0.0, seconds))
        return rng.uniform(0.0, ceiling)


def _seconds(header: str | None) -> float | None:
    """``Retry-After`` as seconds; None when absent or an HTTP date (then our own schedule applies)."""
    if header is None:
        return None
    try:
        return float(header)
    except ValueError:
        return None


def _enabled(value: str | None) -> bool:
    return value is None or value.strip().lower() not in FALSE_WORDS


@attrs.frozen
class ClientSettings:
    """Everything a client needs to know before its first call."""

    base_url: str = DEFAULT_URL
    timeout_s: float = DEFAULT_TIMEOUT_S
    api_key: str | None = attrs.field(default=None, repr=False)
    admin_key: str | None = attrs.field(default=None, repr=False)
    retry: RetryPolicy = RetryPolicy()
    remote: bool = True
    config: Path | None = None
    models: Path | None = None
    state_file: Path | None = None

    @classmethod
    def resolve(cls, *, base_url: str | None = None, timeout: float | None = None, api_key: str | None = None,
                admin_key: str | None = None, retry: RetryPolicy | None = None, remote: bool | None = None,
                config: str | Path | None = None, models: str | Path | None = None,
                state_file: str | Path | None = None, environ: Mapping[str, str] | None = None) -> ClientSettings:
        """Arguments first, then the environment, then defaults."""
        env = os.environ if environ is None else environ
        url = base_url or env.get("REMOTE_INFERENCE_URL") or DEFAULT_URL
        timeout_s = timeout if timeout is not None else float(env.get("REMOTE_INFERENCE_TIMEOUT") or DEFAULT_TIMEOUT_S)
        if timeout_s <= 0:
            raise ValueError("timeout must be positive")
        config_path = config or env.get("MODEL_ROUTER_CONFIG") or "conf/model_router_rules.yml"
        models_path = models or env.get("MODEL_REPOSITORY")
        state_path = state_file or env.get("MODEL_ROUTER_STATE_FILE")
        return cls(
            base_url=url.rstrip("/"), timeout_s=timeout_s,
            api_key=api_key or env.get("MODEL_ROUTER_API_KEY") or None,
            admin_key=admin_key or read_admin_key(env, quiet=True),
            retry=retry or RetryPolicy(),
            remote=remote if remote is not None else _enabled(env.get("REMOTE_INFERENCE_ENABLED")),
            config=Path(config_path).resolve(),
            models=Path(models_path).resolve() if models_path else None,
            state_file=Path(state_path).resolve() if state_path else None,
        )

    def headers(self, *, admin: bool) -> dict[str, str]:
        """The API key as a bearer token; admin calls add ``X-Admin-Key`` (what ``require_admin`` reads)."""
        headers: dict[str, str] = {}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        if admin and self.admin_key:
            headers["X-Admin-Key"] = self.admin_key
        return headers

    @property
    def ws_url(self) -> str:
        if self.base_url.startswith("https://"):
            return "wss://" + self.base_url[len("https://"):]
        if self.base_url.startswith("http://"):
            return "ws://" + self.base_url[len("http://"):]
        return self.base_url
