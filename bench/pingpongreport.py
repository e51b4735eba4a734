"""The ping-pong comparison's table, printed: ratios, waits, collector, run delay, hot path."""

from __future__ import annotations

import json
from typing import Any


def print_comparison(table: dict[str, Any], names: list[str]) -> None:
    """Print `bench.pingpong.compare`'s table for the workloads `names`."""
    print(f"rounds per measurement: {table['rounds']}")
    for key, what in (("ratios", "elapsed"), ("cpu_ratios", "CPU time of both processes")):
        print(f"traced/raw, {what}:")
        print(f"{'workload (1 CPU)':<16} {'C writer':>24} {'Python writer':>24}")
        for name in names:
            cells = []
            for writer in ("c", "python"):
                if writer in table:
                    med, lo, hi = table[writer][key][name]
                    cells.append(f"{med:.3f}x ({lo:.2f}–{hi:.2f})")
                else:
                    cells.append("not built")
            print(f"{name:<16} {cells[0]:>24} {cells[1]:>24}")
    for key, what in (
        ("waited", "traced writers waiting for ring space"),
        ("collector", "the collector thread's CPU time"),
    ):
        print(f"{what}, share of the traced elapsed time (median):")
        for name in names:
            cells = [f"{table[w][key][name]:.1%}" if w in table else "-" for w in ("c", "python")]
            print(f"{name:<16} {cells[0]:>24} {cells[1]:>24}")
    print("runnable while another task had their CPU, share of elapsed (median), raw / traced:")
    for name in names:
        cells = [
            "{:.1%} / {:.1%}".format(*table[w]["delayed"][name]) if w in table else "-"
            for w in ("c", "python")
        ]
        print(f"{name:<16} {cells[0]:>24} {cells[1]:>24}")
    print("hot path, µs per call (median of repetitions, best of 3 loops each):")
    for writer in ("c", "python"):
        if writer in table:
            hot = {k: round(v, 3) for k, v in table[writer]["hot_us"].items()}
            print(f"  {writer:<7} {json.dumps(hot)}")
