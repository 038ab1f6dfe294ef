"""A latency histogram counted with plain integers, read by the metrics at scrape time.

prometheus-client's ``Histogram.observe`` takes a lock; this is a list of counts and
a bisect, owned by one Trio run like every other counter of the write path.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Final

#: Upper bounds, seconds: 0.1 ms (a burst written at once) to 2.5 s (a gateway far
#: behind), about 2.5x apart; above the last, only the ``+Inf`` bucket.
LATENCY_BUCKETS: Final = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)


class LatencyHistogram:
    """Counts of observed durations per bucket (``value <= bound``, Prometheus's ``le``),
    plus their sum. :meth:`observe` is O(log buckets), allocates nothing and never
    blocks."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.bounds = bounds
        #: One count per bound, and the last for what is above every bound.
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.total += seconds

    def cumulative(self) -> list[tuple[str, int]]:
        """``(le, count)`` pairs as Prometheus exposes them, ``+Inf`` last."""
        pairs, running = [], 0
        for bound, count in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            running += count
            pairs.append((bound, running))
        return pairs
