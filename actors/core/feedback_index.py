"""Recent predictions that ``POST /feedback`` can still refer to: a compact, bounded index (pure).

The health monitor records every labelled prediction here, by correlation id, and a later
outcome looks it up. At thousands of predictions a second the index is always full, so what
one entry costs is what it costs in memory for good: with an ``OrderedDict`` of per-entry
5-tuples, 100,000 entries took ~24 MiB (~250 bytes each). This store takes ~120 bytes an
entry, most of it the correlation id string itself:

- a plain ``dict`` (insertion-ordered, half the bookkeeping of an ``OrderedDict``);
- one shared :class:`FeedbackTarget` per (model, version, label, labels, operation): an
  entry is only ``correlation_id -> shared target``, never a tuple of its own;
- eviction in batches of ``limit // 16`` oldest entries: removing the first key of a dict one
  at a time rescans the deleted prefix each time (quadratic; ~70 µs a prediction measured),
  a batch pays that scan once. So between ``limit - limit // 16`` and ``limit`` of the most
  recent predictions are kept, never more than ``limit``.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import islice

import attrs

#: Default of ``switching.feedback_index_size``: ~6 MiB when full.
DEFAULT_LIMIT = 50_000
#: Distinct (model, version, labels, operation) groups remembered for sharing; past it the
#: table starts afresh (entries keep their targets, new ones just get new shared copies).
_GROUPS_LIMIT = 1024


@attrs.frozen
class FeedbackTarget:
    """What feedback on one prediction needs: who answered, what it said, the valid outcomes."""

    name: str
    version: str
    label: str
    labels: tuple[str, ...]
    operation_id: str | None


@attrs.define
class FeedbackIndex:
    """correlation id -> :class:`FeedbackTarget` for at most ``limit`` recent predictions (0: none)."""

    limit: int = DEFAULT_LIMIT
    entries: dict[str, FeedbackTarget] = attrs.field(factory=dict)
    _groups: dict[tuple[str, str, tuple[str, ...], str | None], dict[str, FeedbackTarget]] = attrs.field(
        factory=dict)

    def add(self, name: str, version: str, labels: tuple[str, ...], operation_id: str | None,
            predicted: Iterable[tuple[str, str]]) -> None:
        """Index one model call's (correlation id, label) pairs; a repeated id becomes the newest."""
        if self.limit <= 0:
            return
        group_key = (name, version, labels, operation_id)
        group = self._groups.get(group_key)
        if group is None:
            if len(self._groups) >= _GROUPS_LIMIT:
                self._groups.clear()
            group = self._groups[group_key] = {}
        entries = self.entries
        for correlation_id, label in predicted:
            target = group.get(label)
            if target is None:
                target = group[label] = FeedbackTarget(name, version, label, labels, operation_id)
            entries.pop(correlation_id, None)  # a repeated id: the assignment below puts it last
            entries[correlation_id] = target
        if len(entries) > self.limit:
            self._evict()

    def _evict(self) -> None:
        excess = len(self.entries) - self.limit + self.limit // 16
        for correlation_id in list(islice(self.entries, excess)):
            del self.entries[correlation_id]

    def get(self, correlation_id: str) -> FeedbackTarget | None:
        """The target of ``correlation_id``, left in place (:meth:`forget` it once it is used)."""
        return self.entries.get(correlation_id)

    def forget(self, correlation_id: str) -> None:
        self.entries.pop(correlation_id, None)

    def resize(self, limit: int) -> None:
        """A new bound (a rules reload); shrinking drops the oldest entries at once."""
        self.limit = limit
        if limit <= 0:
            self.entries.clear()
        elif len(self.entries) > limit:
            self._evict()

    def __len__(self) -> int:
        return len(self.entries)
