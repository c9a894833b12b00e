"""How the service sets CPython's cyclic garbage collector: measured thresholds, not the defaults.

Why not the defaults (700, 10, 10): with ~1,500 open connections (slowloris heads, idle
WebSocket subscribers) the service holds ~190,000 tracked objects beyond its frozen start-up
heap. At 700 net allocations per young collection, the objects of requests in flight keep
being promoted, so full collections came every few seconds under load, each walking every
connection's objects: bench/fanout.py timed 4 full collections per run, up to 144 ms each,
and 825 ms of collector time per run. With a young threshold of 20,000 the same run had 11
young collections, no older one, 92-131 ms in all and no pause over 23 ms.

The older thresholds stay at Python's 10 and 10 so that cycles left by closed connections
(which live long enough to reach the oldest generation) are still collected within minutes:
memory stays bounded (bench/soak.py reports RSS growth).

Pure: parsing and the values; ``actors.lifecycle.settle_heap`` is the one call that touches
the collector.
"""

from __future__ import annotations

#: (young, middle, old): net tracked allocations before a young collection; young
#: collections before a middle one; middle collections before an old one may run.
DEFAULT_GC_THRESHOLDS: tuple[int, int, int] = (20_000, 10, 10)

#: CPython's own thresholds, for ``--gc-thresholds python``.
PYTHON_GC_THRESHOLDS: tuple[int, int, int] = (700, 10, 10)

#: Larger young thresholds let cyclic garbage pile up for long: refuse them as a typo.
MAX_YOUNG_THRESHOLD = 1_000_000


def parse_gc_thresholds(text: str) -> tuple[int, int, int]:
    """``"20000,10,10"`` (or ``"default"``, ``"python"``) as three thresholds; ValueError says what is wrong."""
    word = text.strip().lower()
    if word == "default":
        return DEFAULT_GC_THRESHOLDS
    if word == "python":
        return PYTHON_GC_THRESHOLDS
    parts = [part.strip() for part in word.split(",")]
    if len(parts) != 3 or not all(part.isdigit() for part in parts):
        raise ValueError(f"GC thresholds are three positive integers like 20000,10,10 "
                         f"(or 'default', 'python'), not {text[:40]!r}")
    young, middle, old = (int(part) for part in parts)
    if min(young, middle, old) < 1:
        raise ValueError("GC thresholds must be at least 1 (0 would turn the collector off)")
    if young > MAX_YOUNG_THRESHOLD:
        raise ValueError(f"a young GC threshold above {MAX_YOUNG_THRESHOLD:,} lets garbage cycles pile up")
    return young, middle, old
