"""How long to leave a trickling request head alone before reading it again (pure policy, no I/O).

A slow-loris client sends its request head a few bytes at a time and never finishes it. The
header timeout bounds how long such a connection lives; this bounds what it costs while it
lives. Each read of a head that is still incomplete wakes a task, reads a few bytes and
parses them: at 500 such connections sending ten bytes a second, that was 55 % of a core on
the main port and 28 % on the data plane. Real clients send their head in one segment, or a
handful for a very large head, all within microseconds, so the first ``FREE_READS``
incomplete reads are never delayed; after that the connection waits before each read,
doubling from ``FIRST_DELAY_S`` up to ``MAX_DELAY_S``, while the kernel buffers whatever it
sends meanwhile. Its bytes are never lost, only read in larger pieces, and the header
timeout still counts from the head's first byte.

Delays and header timeouts are spread (``spread``, a random draw in [0, 1)): an attack opens
its connections together, and without a spread they would wake together every second and
time out in the same instant, hundreds of wake-ups in one scheduler pass while other
requests wait behind them. Delays by ±50 % (at ±25 % the reads of 500 heads opened together
still bunched: bench/fanout.py --slow-loris 500 saw idle ÷ quiet p99 on the data plane of
0.91-2.30x; at ±50 %, 1.20-1.38x), header timeouts by +0-25 % (the cuts and the reconnects
that follow spread over 5 s instead of 2).
"""

from __future__ import annotations

FREE_READS = 4
FIRST_DELAY_S = 0.05
MAX_DELAY_S = 1.0


#: A delay is scaled by a random factor in [1 - DELAY_SPREAD, 1 + DELAY_SPREAD).
DELAY_SPREAD = 0.5
#: A header timeout is lengthened by a random fraction of itself in [0, HEADER_TIMEOUT_SPREAD).
HEADER_TIMEOUT_SPREAD = 0.25


def trickle_delay(incomplete_reads: int, spread: float = 0.5) -> float:
    """Seconds to wait before the next read, after ``incomplete_reads`` reads that left the head unfinished.

    ``spread`` in [0, 1) scales the delay by 0.5 to 1.5 (0.5: the nominal delay).
    """
    if incomplete_reads <= FREE_READS:
        return 0.0
    nominal = min(MAX_DELAY_S, FIRST_DELAY_S * 2.0 ** min(incomplete_reads - FREE_READS - 1, 16))
    return nominal * (1.0 - DELAY_SPREAD + 2.0 * DELAY_SPREAD * spread)


def spread_timeout(timeout_s: float, spread: float) -> float:
    """A header timeout lengthened by up to ``HEADER_TIMEOUT_SPREAD`` (never shortened: the documented
    value stays a floor), so connections opened together do not all time out together."""
    return timeout_s * (1.0 + HEADER_TIMEOUT_SPREAD * spread)
