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

from bench.endtoend import Flood, flood, many_viewers, start_latency
from bench.page import page_under_flood
from bench.pingpong import Workload, measure, traced_run

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
EVENTS_TARGET = 100_000
WORKER_SLOWDOWN_FLOOR = 0.90  # with a viewer / without: below this the viewer slowed them
P99_TARGET_MS = 100.0
FPS_TARGET = 50.0
RSS_GROWTH_TARGET_MIB = 256.0
RSS_EVENTS = 10_000_000  # the full run floods this many events (4 per frame) for the RSS
START_TARGET_MS = 150.0


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


def _flood_targets(fl: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    out: list[tuple[str, str, bool | None]] = []
    ratio = fl["worker_ratio"]
    ratio_text = "n/a" if ratio is None else f"{ratio:.2f}"
    out.append(
        (
            f"≥ {EVENTS_TARGET:,} events/s to a viewer, workers not slowed "
            f"(with/without ≥ {WORKER_SLOWDOWN_FLOOR})",
            f"{fl['delivered_per_s']:,.0f} events/s, worker ratio {ratio_text}",
            fl["delivered_per_s"] >= EVENTS_TARGET
            and ratio is not None
            and ratio >= WORKER_SLOWDOWN_FLOOR,
        )
    )
    out.append(
        (
            f"p99 send → frame ≤ {P99_TARGET_MS:.0f} ms",
            f"p50 {fl['p50_ms']:.1f} ms, p99 {fl['p99_ms']:.1f} ms",
            fl["p99_ms"] <= P99_TARGET_MS,
        )
    )
    # Bounded means no growth with the event count beyond a fixed cap: the full run
    # measures a flood of ten million events (the quick one is too short to say).
    growth = fl["rss_end_mib"] - fl["rss_start_mib"]
    name = f"server RSS bounded (≤ {RSS_GROWTH_TARGET_MIB:.0f} MiB growth at 10 M events)"
    measured = (
        f"{fl['rss_start_mib']:.0f} → {fl['rss_end_mib']:.0f} MiB after {fl['events']:,} events"
    )
    if fl.get("rss_at_tenth_mib") is not None:
        measured += (
            f" ({fl['rss_at_tenth_mib']:.0f} MiB at {fl['rss_tenth_events']:,}: "
            f"{fl['rss_end_mib'] - fl['rss_at_tenth_mib']:+.0f} MiB over the last nine tenths)"
            f"; collector process peak {fl['collector_rss_peak_mib']:.0f} MiB"
        )
    if fl["events"] >= RSS_EVENTS:
        out.append((name, measured, growth <= RSS_GROWTH_TARGET_MIB))
    else:
        out.append((name, measured + f"; the full run measures {RSS_EVENTS:,}", None))
    return out


def _viewers_target(v: dict[str, Any]) -> tuple[str, str, bool | None]:
    name = f"50 viewers, one never reading: writer with/without ≥ {WORKER_SLOWDOWN_FLOOR}"
    if "skipped" in v:
        return name, v["skipped"], None
    if "error" in v or v.get("worker_ratio") is None:
        return name, str(v.get("error", "no ratio measured"))[:120], False
    return (
        name,
        f"{v['worker_ratio']:.2f} ({v['worker_ratio_min']:.2f}–{v['worker_ratio_max']:.2f}), "
        f"{v['readers_to_the_end']} of 49 readers to the end, "
        f"{v['readers_resynchronised']} resynchronised",
        v["worker_ratio"] >= WORKER_SLOWDOWN_FLOOR,
    )


def _targets(result: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """(target, measured, met) for every target of the issue."""
    out: list[tuple[str, str, bool | None]] = []
    for row in result.get("pipe", []):
        if row["target"] is not None:
            out.append(
                (
                    f"{row['workload']}: traced/raw ≤ {row['target']:.2f}x",
                    f"{row['ratio_median']:.3f}x ({row['ratio_min']:.3f}–{row['ratio_max']:.3f})",
                    row["met"],
                )
            )
    fl = result["flood"]
    if "error" in fl:
        for name in ("events/s to a viewer", "p99 send → frame", "server RSS bounded"):
            out.append((name, fl["error"][:120], False))
    else:
        out.extend(_flood_targets(fl))
    out.append(_viewers_target(result["viewers"]))
    page = result["page"]
    if "error" in page:
        out.append((f"page ≥ {FPS_TARGET:.0f} fps in a flood", page["error"][:120], False))
    elif "skipped" in page:
        out.append((f"page ≥ {FPS_TARGET:.0f} fps in a flood", page["skipped"], None))
    else:
        out.append(
            (
                f"page ≥ {FPS_TARGET:.0f} fps in a flood",
                f"{page['fps']:.1f} fps (worst second {page['fps_worst_second']:.1f}), "
                f"{page['long_tasks']} long tasks, {page['long_task_ms']:.0f} ms",
                page["fps"] >= FPS_TARGET,
            )
        )
    if "error" in result["start"]:
        out.append(("start → first event (forkserver)", result["start"]["error"][:120], False))
        return out
    fs = result["start"]["forkserver"]
    out.append(
        (
            f"start → first event ≤ {START_TARGET_MS:.0f} ms (forkserver)",
            f"first call {fs['first_call_ms']:.0f} ms, first event {fs['first_event_ms']:.0f} ms",
            fs["first_call_ms"] <= START_TARGET_MS,
        )
    )
    return out


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
        lambda: flood_rows(messages, 1 if quick else 2, 0 if quick else RSS_EVENTS // 4),
    )
    if quick:
        result["viewers"] = {"skipped": "in the full run only (make bench)"}
    else:
        result["viewers"] = _timed(
            "fifty viewers on one flood, one never reading",
            lambda: many_viewers(60_000, 50, 3),
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
    for method, figures in result["start"].items():
        print(f"  {method:<11} {json.dumps(figures)}")
    result["targets"] = [
        {"target": name, "measured": measured, "met": met}
        for name, measured, met in _targets(result)
    ]
    return result


def print_targets(result: dict[str, Any]) -> None:
    print("\n== targets")
    for row in result["targets"]:
        verdict = "—" if row["met"] is None else ("met" if row["met"] else "MISSED")
        print(f"{verdict:<7} {row['target']:<64} {row['measured']}")


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
