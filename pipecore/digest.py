"""Latency statistics in bounded memory: exact nearest-rank percentiles, then log buckets."""

from __future__ import annotations

import bisect
import math

# Latencies: exact up to EXACT_LATENCIES values per direction, then logarithmic buckets.
EXACT_LATENCIES = 4096
EXACT_BELOW = 1024
GROWTH = 1.019


def percentiles(values: list[int]) -> dict[str, int | None]:
    """Nearest-rank p50/p90/p99 and max of `values` (None when empty)."""
    ordered = sorted(values)

    def rank(p: int) -> int | None:
        return ordered[max(0, math.ceil(p * len(ordered) / 100) - 1)] if ordered else None

    return {"p50": rank(50), "p90": rank(90), "p99": rank(99), "max": rank(100)}


class LatencyDigest:
    """Latencies in bounded memory, for nearest-rank percentiles.

    The first EXACT_LATENCIES values are kept as they are and their percentiles are exact.
    Past that, values below EXACT_BELOW ns keep a bucket each and larger ones fall into
    buckets [GROWTH**i, GROWTH**(i+1)); a percentile then reports its bucket's middle,
    within 1% of the exact nearest-rank value ((GROWTH-1)/(GROWTH+1) = 0.94%, plus 0.5 ns
    of rounding). `max` stays exact. At most a few thousand buckets exist for any run.
    """

    def __init__(self) -> None:
        self.count = 0
        self.max: int | None = None
        self._exact: list[int] | None = []
        self._buckets: dict[int, int] = {}

    def add(self, value: int) -> None:
        self.count += 1
        if self.max is None or value > self.max:
            self.max = value
        exact = self._exact
        if exact is not None:
            exact.append(value)
            if len(exact) > EXACT_LATENCIES:
                for held in exact:
                    self._count(held)
                self._exact = None
            return
        # _count, inlined: past the exact values, every latency lands here
        if value < EXACT_BELOW:
            key = value if value > 0 else 0
        else:
            i = bisect.bisect_right(_BOUNDS, value) - 1
            key = EXACT_BELOW + (i if 0 <= i < len(_BOUNDS) - 1 else _bucket_index(value))
        buckets = self._buckets
        buckets[key] = buckets.get(key, 0) + 1

    def percentiles(self) -> dict[str, int | None]:
        """Nearest-rank p50/p90/p99 and max (None when empty)."""
        if self._exact is not None:
            return percentiles(self._exact)
        keys = sorted(self._buckets)
        out: dict[str, int | None] = {}
        for p in (50, 90, 99):
            rank, seen = max(1, math.ceil(p * self.count / 100)), 0
            for key in keys:
                seen += self._buckets[key]
                if seen >= rank:
                    out[f"p{p}"] = min(_middle(key), self.max or 0)
                    break
        out["max"] = self.max
        return out

    def _count(self, value: int) -> None:
        key = _bucket(value)
        self._buckets[key] = self._buckets.get(key, 0) + 1


def _bucket(value: int) -> int:
    if value < EXACT_BELOW:
        return max(0, value)
    i = bisect.bisect_right(_BOUNDS, value) - 1
    if i < 0 or i == len(_BOUNDS) - 1:
        i = _bucket_index(value)  # past the table: values of hours, as big as they come
    return EXACT_BELOW + i


def _bucket_index(value: int) -> int:
    i = int(math.log(value) / math.log(GROWTH))
    # Floating point may land one bucket off at a boundary.
    while GROWTH**i > value:
        i -= 1
    while GROWTH ** (i + 1) <= value:
        i += 1
    return i


# GROWTH**i for the buckets of values up to about 10**13 ns (under three hours), as the
# smallest integer of each bucket: an integer latency is at least GROWTH**i exactly when
# it is at least that, and integers compare with integers three times faster.
_BOUNDS = [math.ceil(GROWTH**i) for i in range(_bucket_index(10**13) + 2)]


def _middle(key: int) -> int:
    if key < EXACT_BELOW:
        return key
    i = key - EXACT_BELOW
    return round(2 * GROWTH ** (i + 1) / (GROWTH + 1))
