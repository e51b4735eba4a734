"""Latency statistics (pipecore.digest): nearest-rank percentiles, then the bounded digest."""

from __future__ import annotations

import random

from pipecore.digest import EXACT_LATENCIES, LatencyDigest, percentiles


def test_percentiles_use_the_nearest_rank() -> None:
    assert percentiles(list(range(10, 0, -1))) == {"p50": 5, "p90": 9, "p99": 10, "max": 10}
    assert percentiles([]) == {"p50": None, "p90": None, "p99": None, "max": None}


def test_latency_percentiles_past_the_exact_values_stay_within_one_percent() -> None:
    rng = random.Random(7)
    # Microseconds to seconds, a cluster of tiny values, and ties.
    values = [int(rng.lognormvariate(11, 2.5)) for _ in range(30_000)]
    values += [rng.randrange(0, 2000) for _ in range(5000)] + [123_456] * 3000
    rng.shuffle(values)
    digest = LatencyDigest()
    for i, value in enumerate(values, 1):
        digest.add(value)
        if i in (EXACT_LATENCIES, EXACT_LATENCIES + 1, len(values)):
            exact, got = percentiles(values[:i]), digest.percentiles()
            assert got["max"] == exact["max"]
            for p in ("p50", "p90", "p99"):
                want, have = exact[p], got[p]
                assert want is not None and have is not None
                assert abs(have - want) <= 0.01 * want, (i, p, have, want)
    assert digest.count == len(values)
