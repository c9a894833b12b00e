"""The ``/ws/switches`` message protocol, shared by the blocking and the trio feed clients.

Messages (``app.stream_switches``): first ``{"type": "subscribed", "redis": bool, ...}``,
then ``{"type": "switch", "id": <stream id or null>, ...}`` per event, and
``{"type": "error", "error": {code, message}}`` when the subscription is refused
(``bad_since``: the socket then closes) or a replay failed (``replay_unavailable``: live
events follow). :class:`FeedState` remembers the filters and the last stream id, so a
reconnect resumes with ``?since=`` exactly where the previous connection stopped.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import attrs

from actors.client.errors import FeedError
from actors.client.results import SwitchEvent

log = logging.getLogger("model_router.client.feed")


@attrs.define
class FeedState:
    """Filters of one subscription, and how far it has read."""

    symbol: str | None = None
    asset_class: str | None = None
    model: str | None = None
    since: str | None = None
    redis: bool = False
    subscribed: int = 0


def feed_query(state: FeedState) -> dict[str, str]:
    """Query parameters of the next connection; ``since`` only once the service said it has Redis."""
    query = {k: v for k, v in (("symbol", state.symbol), ("asset_class", state.asset_class),
                               ("model", state.model)) if v is not None}
    if state.since is not None and (state.redis or state.subscribed == 0):
        query["since"] = state.since
    return query


def read_feed_message(message: Any, state: FeedState) -> SwitchEvent | None:
    """An event, or None for protocol messages; raises FeedError when the subscription is refused."""
    if not isinstance(message, Mapping):
        raise FeedError(f"unexpected switch feed message: {message!r}")
    kind = message.get("type")
    if kind == "subscribed":
        state.redis = bool(message.get("redis", False))
        state.subscribed += 1
        return None
    if kind == "switch":
        event = SwitchEvent.from_message(message)
        if event.stream_id is not None:
            state.since = event.stream_id
        return event
    if kind == "error":
        error = message.get("error") or {}
        if error.get("code") == "replay_unavailable":
            log.warning("switch feed: %s (live events follow)", error.get("message"))
            return None
        raise FeedError(f"switch feed refused: {error.get('code')}: {error.get('message')}")
    log.debug("switch feed: ignoring message of type %r", kind)
    return None
