"""Recent predictions that ``POST /feedback`` can still refer to: a compact, bounded index (pure).

The health monitor records every labelled prediction here, by correlation id, and a later
outcome looks it up. Under steady traffic the index is always full, so what one entry costs
is memory held for good. An ``OrderedDict`` of per-entry 5-tuples took ~250 bytes an entry
(24 MiB at 100,000). This store takes ~115, most of it the correlation id string itself:

- plain dicts, and each entry's value is one shared :class:`FeedbackTarget` per (model,
  version, label, labels, operation), never a tuple of its own;
- generations instead of per-entry eviction: new ids go into the young dict; once it holds
  ``limit / 8`` it becomes the newest old generation and the oldest of seven is dropped
  whole. Nothing is ever deleted from the front of a dict (a dict rescans its deleted prefix
  each time: quadratic), and each dict is filled once, so its table stays tight (a single
  dict churned at its bound keeps a table ~3x its entries).

So the most recent ``limit - limit / 8`` predictions at least are kept, never more than
``limit``. A repeated id lands in the young dict and shadows its older entry.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice

import attrs

#: Default of ``switching.feedback_index_size``: ~5.5 MiB when full.
DEFAULT_LIMIT = 50_000
GENERATIONS = 8
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


Group = tuple[str, str, tuple[str, ...], str | None]


@attrs.define
class FeedbackIndex:
    """correlation id -> :class:`FeedbackTarget` for at most ``limit`` recent predictions (0: none)."""

    limit: int = DEFAULT_LIMIT
    _young: dict[str, FeedbackTarget] = attrs.field(factory=dict, init=False)
    _older: list[dict[str, FeedbackTarget]] = attrs.field(factory=list, init=False)  # newest first
    _size: int = attrs.field(default=1, init=False)  # entries per generation
    _groups: dict[Group, dict[str, FeedbackTarget]] = attrs.field(factory=dict, init=False)

    def __attrs_post_init__(self) -> None:
        self.resize(self.limit)

    def add(self, name: str, version: str, labels: tuple[str, ...], operation_id: str | None,
            predicted: Iterable[tuple[str, str]]) -> None:
        """Index one model call's (correlation id, label) pairs, newest last."""
        if self.limit <= 0:
            return
        group_key = (name, version, labels, operation_id)
        group = self._groups.get(group_key)
        if group is None:
            if len(self._groups) >= _GROUPS_LIMIT:
                self._groups.clear()
            group = self._groups[group_key] = {}
        young, size = self._young, self._size
        for correlation_id, label in predicted:
            target = group.get(label)
            if target is None:
                target = group[label] = FeedbackTarget(name, version, label, labels, operation_id)
            if len(young) >= size:
                young = self._rotate()
            young[correlation_id] = target

    def _rotate(self) -> dict[str, FeedbackTarget]:
        """The young generation becomes the newest old one; the oldest go while a full young would overflow."""
        older = self._older
        older.insert(0, self._young)
        total = sum(len(generation) for generation in older)
        while older and total + self._size > self.limit:
            total -= len(older.pop())
        self._young = {}
        return self._young

    def get(self, correlation_id: str) -> FeedbackTarget | None:
        """The newest target of ``correlation_id``, left in place (:meth:`forget` it once it is used)."""
        target = self._young.get(correlation_id)
        if target is None:
            for generation in self._older:
                target = generation.get(correlation_id)
                if target is not None:
                    break
        return target

    def forget(self, correlation_id: str) -> None:
        self._young.pop(correlation_id, None)
        for generation in self._older:
            generation.pop(correlation_id, None)

    def resize(self, limit: int) -> None:
        """A new bound (at start and on a rules reload); shrinking drops the oldest at once."""
        self.limit = max(0, limit)
        self._size = max(1, self.limit // GENERATIONS)
        if len(self._young) > self.limit:
            self._young = dict(islice(self._young.items(), len(self._young) - self.limit, None))
        room, kept = self.limit - max(len(self._young), self._size), []  # the young one may still grow
        for generation in self._older:
            if len(generation) > room:
                break
            kept.append(generation)
            room -= len(generation)
        self._older = kept

    def __len__(self) -> int:
        return len(self._young) + sum(len(generation) for generation in self._older)

    def __iter__(self) -> Iterator[str]:
        """Correlation ids held, oldest first (a shadowed repeat appears twice)."""
        for generation in reversed(self._older):
            yield from generation
        yield from self._young
