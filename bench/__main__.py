"""`python -m bench [--quick]`: tracing cost against raw Pipe, and the dashboard under load."""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.endtoend import Flood, flood
from bench.page import page_under_flood
from bench.pingpong import measure
from bench.startup import start_latency
from bench.targets import RSS_EVENTS, print_targets, targets
from bench.tracedrun import traced_run
from bench.viewers import many_viewers
from bench.workload import Workload

KIB = 1 << 10
MIB = 1 << 20
SAME, CROSS = (0, 0), (0, 1)
METHODS = ("forkserver", "spawn", "fork")

# (workload, target ratio or None: reported, no target). The headline is one CPU.
WORKLOADS: list[tuple[Workload, float | None]] = [
    (Workload("pp-100-obj", "pingpong", 100, False, SAME), 1.15),
    (Workload("pp-100-bytes", "pingpong", 100, True, SAME), 1.15),
    (Workload("pp-64k", "pingpong", 64 * KIB, True, SAME), 1.10),
    (Workload("pp-1m", "pingpong", MIB, True, SAME), 1.05),
    (Workload("pp-100-obj-x", "pingpong", 100, False, CROSS), None),
    (Workload("pp-100-bytes-x", "pingpong", 100, True, CROSS), None),
    (Workload("pp-64k-x", "pingpong", 64 * KIB, True, CROSS), None),
    (Workload("pp-1m-x", "pingpong", MIB, True, CROSS), None),
    (Workload("st-100", "stream", 100, True, CROSS), None),
    (Workload("st-64k", "stream", 64 * KIB, True, CROSS), None),
    (Workload("st-1m", "stream", MIB, True, CROSS), None),
]


def _rounds_for(work: Workload, budget: float) -> int:
    """Calibrate on the raw pipe so one measurement lasts about `budget` seconds."""
    rounds = max(20, 2_000_000 // max(work.size, 1000))
    while True:
        seconds = measure(work, rounds, traced=False)
        if seconds >= budget / 8 or rounds >= 2_000_000:
            return max(20, int(rounds * budget / max(seconds, 1e-6)))
        rounds *= 8


def pipe_rows(reps: int, budget: float) -> tuple[list[dict[str, Any]], int]:
    """Traced against raw Pipe, alternating which goes first; ratios of the same repetition."""
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
            raw_s, traced_s = statistics.median(raw), statistics.median(traced)
            row: dict[str, Any] = {
                "workload": work.label,
                "name": work.name,
                "rounds": rounds,
                "raw_per_s": rounds / raw_s,
                "traced_per_s": rounds / traced_s,
                "raw_mb_s": rounds * per * work.size / raw_s / 1e6,
                "traced_mb_s": rounds * per * work.size / traced_s / 1e6,
                "ratio_median": statistics.median(ratios),
                "ratio_min": min(ratios),
                "ratio_max": max(ratios),
                "target": target,
            }
            row["met"] = None if target is None else row["ratio_median"] <= target
            rows.append(row)
            _print_pipe_row(row)
        events = drained()
    return rows, events


PIPE_HEADER = (
    f"{'workload':<36} {'raw/s':>9} {'traced/s':>9} {'MB/s raw':>9} {'traced':>8} "
    f"{'ratio':>7} {'min–max':>12}  target"
)


def _print_pipe_row(row: dict[str, Any]) -> None:
    target = row["target"]
    mark = "" if target is None else f"≤{target:.2f} {'met' if row['met'] else 'MISSED'}"
    print(
        f"{row['workload']:<36} {row['raw_per_s']:>9.0f} {row['traced_per_s']:>9.0f} "
        f"{row['raw_mb_s']:>9.1f} {row['traced_mb_s']:>8.1f} "
        f"{row['ratio_median']:>6.3f}x {row['ratio_min']:>5.3f}–{row['ratio_max']:<6.3f} {mark}",
        flush=True,
    )


def flood_rows(messages: int, pairs: int, rss_messages: int) -> dict[str, Any]:
    """The flood without and with a viewer, alternating, each on a fresh server; then,
    for the RSS, a longer flood without a viewer (a viewer's resynchronising snapshots
    hold every event so far, so a long watched flood takes minutes)."""
    runs: list[Flood] = []
    plan = [v for rep in range(pairs) for v in ((False, True) if rep % 2 == 0 else (True, False))]
    sizes = [messages] * len(plan)
    if rss_messages > messages:
        plan.append(False)
        sizes.append(rss_messages)
    for viewer, size in zip(plan, sizes, strict=True):
        runs.append(flood(size, viewer))
        print(f"  flood {json.dumps(runs[-1].summary())}", flush=True)
    alone = [r.writer_frames_per_s for r in runs if not r.viewer and r.messages == messages]
    watched = [r for r in runs if r.viewer]
    ratios = [
        w.writer_frames_per_s / a
        for w, a in zip(watched, alone, strict=True)
        if a > 0 and w.writer_frames_per_s > 0
    ]
    # RSS from the largest run, the one without a viewer on a tie (no snapshot in flight).
    best = max(runs, key=lambda r: (r.events_in_run, not r.viewer))
    last = best.summary()
    return {
        "messages": messages,
        "runs": [r.summary() for r in runs],
        "delivered_per_s": statistics.median(
            [r.summary().get("delivered_per_s", 0.0) for r in watched]
        ),
        "worker_ratio": statistics.median(ratios) if ratios else None,
        "worker_ratio_min": min(ratios) if ratios else None,
        "worker_ratio_max": max(ratios) if ratios else None,
        "p50_ms": statistics.median([r.summary().get("latency_p50_ms", 0.0) for r in watched]),
        "p99_ms": statistics.median([r.summary().get("latency_p99_ms", 0.0) for r in watched]),
        "resyncs": sum(r.resyncs for r in watched),
        "viewer_rss_peak_mib": max(r.rss_peak_kib for r in watched) / 1024,
        "events": last["events_in_run"],
        "rss_start_mib": last["rss_start_mib"],
        "rss_end_mib": last["rss_end_mib"],
        "rss_peak_mib": last["rss_peak_mib"],
        "rss_at_tenth_mib": last.get("rss_at_tenth_mib"),
        "rss_tenth_events": last.get("rss_tenth_events"),
        "collector_rss_peak_mib": last["collector_rss_peak_mib"],
        "stopped_at_rss_cap": any(r.capped for r in runs),
    }


def _timed(title: str, step: Callable[[], Any]) -> Any:
    began = time.monotonic()
    print(f"\n== {title}", flush=True)
    try:
        value = step()
    except Exception as exc:  # one failed workload must not lose the others' figures
        value = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
        print(f"   failed: {value['error']}", flush=True)
    print(f"   ({time.monotonic() - began:.0f} s)", flush=True)
    return value


def run(quick: bool) -> dict[str, Any]:
    reps = 3 if quick else 9
    budget = 0.03 if quick else 0.4
    messages = 15_000 if quick else 50_000
    result: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "quick": quick,
        "repetitions": reps,
    }

    def pipes() -> None:
        print("traced multiprocessing.Pipe vs raw, same run; ratio = traced time / raw time")
        print(PIPE_HEADER, flush=True)
        result["pipe"], result["events_collected"] = pipe_rows(reps, budget)

    _timed("Pipe: ping-pong and one-way streaming", pipes)
    result["flood"] = _timed(
        f"flood through `pipescope serve` ({messages:,} frames, 4 events each)",
        lambda: flood_rows(messages, 1 if quick else 3, 0 if quick else RSS_EVENTS // 4),
    )
    # Quick: one pair of shorter floods (about 5 s), so that the target is marked too.
    result["viewers"] = _timed(
        "fifty viewers on one flood, one never reading",
        lambda: many_viewers(15_000, 50, 1) if quick else many_viewers(60_000, 50, 5),
    )
    print(f"  viewers {json.dumps(result['viewers'])}", flush=True)
    result["page"] = _timed(
        "the page under a flood (headless chromium)",
        lambda: page_under_flood(3.0 if quick else 10.0, 20_000 if quick else 300_000),
    )
    print(f"  page {json.dumps(result['page'])}")
    result["start"] = _timed(
        "start latency: POST /api/runs → first event on the websocket",
        lambda: start_latency(METHODS, 2 if quick else 7),
    )
    for method, figures in result["start"].items():  # and "blocked_begin"
        print(f"  {method:<11} {json.dumps(figures)}")
    result["targets"] = [
        {"target": name, "measured": measured, "met": met}
        for name, measured, met in targets(result)
    ]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, under 60 s")
    parser.add_argument("--json", default="bench/results.json", help="where to write the results")
    args = parser.parse_args(argv)
    began = time.monotonic()
    result = run(args.quick)
    result["seconds"] = time.monotonic() - began
    print_targets(result)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(
        f"\n{result['seconds']:.0f} s; events collected: {result.get('events_collected')}; "
        f"results in {args.json}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
