"""`python -m bench [--quick]`: what tracing costs, as ratios against raw Pipe in one run."""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench.pingpong import Workload, measure, traced_run

KIB = 1 << 10
MIB = 1 << 20
SAME, CROSS = (0, 0), (0, 1)

# (workload, target ratio or None for "reported, no target")
WORKLOADS: list[tuple[Workload, float | None]] = [
    (Workload("pp-100-obj", "pingpong", 100, False, SAME), 1.15),
    (Workload("pp-100-bytes", "pingpong", 100, True, SAME), 1.15),
    (Workload("pp-64k", "pingpong", 64 * KIB, True, SAME), 1.10),
    (Workload("pp-1m", "pingpong", MIB, True, SAME), 1.05),
    (Workload("pp-100-obj-x", "pingpong", 100, False, CROSS), None),
    (Workload("pp-64k-x", "pingpong", 64 * KIB, True, CROSS), None),
    (Workload("pp-1m-x", "pingpong", MIB, True, CROSS), None),
    (Workload("st-100", "stream", 100, True, CROSS), None),
    (Workload("st-64k", "stream", 64 * KIB, True, CROSS), None),
    (Workload("st-1m", "stream", MIB, True, CROSS), None),
]


def _rounds_for(work: Workload, budget: float) -> int:
    """Calibrate on the raw pipe so one measurement lasts about `budget` seconds."""
    rounds = 200
    while True:
        seconds = measure(work, rounds, traced=False)
        if seconds >= budget / 4 or rounds >= 2_000_000:
            return max(50, int(rounds * budget / max(seconds, 1e-6)))
        rounds *= 4


def run(quick: bool) -> dict[str, Any]:
    reps = 3 if quick else 9
    budget = 0.12 if quick else 0.4
    rows: list[dict[str, Any]] = []
    with traced_run() as drained:
        for work, target in WORKLOADS:
            rounds = _rounds_for(work, budget)
            raw: list[float] = []
            traced: list[float] = []
            for rep in range(reps):
                # alternate which goes first, so drift hits both sides alike
                order = (False, True) if rep % 2 == 0 else (True, False)
                for is_traced in order:
                    (traced if is_traced else raw).append(measure(work, rounds, is_traced))
            ratios = [t / r for t, r in zip(traced, raw, strict=True)]
            per = 2 if work.pattern == "pingpong" else 1
            ratio = statistics.median(ratios)
            row: dict[str, Any] = {
                "workload": work.label,
                "name": work.name,
                "rounds": rounds,
                "raw_per_s": rounds / statistics.median(raw),
                "traced_per_s": rounds / statistics.median(traced),
                "raw_mb_s": rounds * per * work.size / statistics.median(raw) / 1e6,
                "ratio_median": ratio,
                "ratio_min": min(ratios),
                "ratio_max": max(ratios),
                "target": target,
            }
            row["met"] = None if target is None else ratio <= target
            rows.append(row)
            _print_row(row)
        events = drained()
    return {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "quick": quick,
        "repetitions": reps,
        "events_collected": events,
        "rows": rows,
    }


HEADER = (
    f"{'workload':<36} {'raw/s':>10} {'traced/s':>10} {'ratio':>7} {'min–max':>13} {'target':>8}"
)


def _print_row(row: dict[str, Any]) -> None:
    target = row["target"]
    verdict = "—" if target is None else ("met" if row["met"] else "MISSED")
    mark = "" if target is None else f"≤{target:.2f} {verdict}"
    print(
        f"{row['workload']:<36} {row['raw_per_s']:>10.0f} {row['traced_per_s']:>10.0f} "
        f"{row['ratio_median']:>6.3f}x {row['ratio_min']:>5.3f}–{row['ratio_max']:<6.3f} {mark}",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, under 60 s")
    parser.add_argument("--json", default="bench/results.json", help="where to write the results")
    args = parser.parse_args(argv)
    print("traced multiprocessing.Pipe vs raw, same run; ratio = traced time / raw time")
    print(HEADER, flush=True)
    result = run(args.quick)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"events collected: {result['events_collected']}; results in {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
