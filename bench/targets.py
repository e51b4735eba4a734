"""The issue's targets, each marked met or missed from a benchmark run's results."""

from __future__ import annotations

from typing import Any

EVENTS_TARGET = 100_000
WORKER_SLOWDOWN_FLOOR = 0.90  # with a viewer / without: below this the viewer slowed them
P99_TARGET_MS = 100.0
FPS_TARGET = 50.0
RSS_GROWTH_TARGET_MIB = 256.0
RSS_EVENTS = 10_000_000  # the full run floods this many events (4 per frame) for the RSS
START_TARGET_MS = 150.0
BEGIN_TARGET_MS = 100.0  # a blocking call's begin seen within this (#3)


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
    # measures a flood of ten million events; the quick one checks the same cap over its
    # own flood, which says less, and says so.
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
    if fl["events"] < RSS_EVENTS:
        measured += f"; quick: only {fl['events']:,} events, the full run measures {RSS_EVENTS:,}"
    out.append((name, measured, growth <= RSS_GROWTH_TARGET_MIB))
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


def targets(result: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
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
    bb = result["start"]["blocked_begin"]
    out.append(
        (
            f"begin of a blocked recv seen ≤ {BEGIN_TARGET_MS:.0f} ms (here: by a viewer)",
            f"median {bb['median_ms']:.1f} ms, max {bb['max_ms']:.1f} ms, {bb['begins']} begins",
            bb["max_ms"] <= BEGIN_TARGET_MS,
        )
    )
    return out


def print_targets(result: dict[str, Any]) -> None:
    print("\n== targets")
    for row in result["targets"]:
        verdict = "—" if row["met"] is None else ("met" if row["met"] else "MISSED")
        print(f"{verdict:<7} {row['target']:<64} {row['measured']}")
