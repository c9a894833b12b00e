"""Which loaded models to evict before loading another (pure, no I/O).

Least-recently-used first, under two limits at once: a count (``max_models``) and a byte
budget (``max_bytes``). Pinned models (the default model, preloaded ones) are never
chosen: evicting the model every unmatched request falls back to would turn a cache
miss into an outage.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable

import attrs


@attrs.frozen
class Resident:
    """A loaded model as the policy sees it."""

    key: Hashable
    size_bytes: int
    last_used: float
    pinned: bool = False


@attrs.frozen
class EvictionPlan:
    """Keys to drop, and whether the incoming model fits once they are gone."""

    evict: tuple[Hashable, ...]
    fits: bool


def plan_evictions(
    resident: Iterable[Resident], *, incoming_bytes: int, max_models: int, max_bytes: int
) -> EvictionPlan:
    """Evict least-recently-used unpinned models until one more of ``incoming_bytes`` fits.

    ``fits`` is False when even evicting every unpinned model leaves the cache over a
    limit; the caller then decides (this service still loads, and logs the overrun).
    """
    entries = list(resident)
    count = len(entries) + 1
    total = sum(e.size_bytes for e in entries) + incoming_bytes
    evict: list[Hashable] = []
    for entry in sorted((e for e in entries if not e.pinned), key=lambda e: e.last_used):
        if count <= max_models and total <= max_bytes:
            break
        evict.append(entry.key)
        count -= 1
        total -= entry.size_bytes
    return EvictionPlan(tuple(evict), count <= max_models and total <= max_bytes)
