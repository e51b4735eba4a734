"""The page under a flood faster than it draws: it keeps up, and says how much it skipped."""

from __future__ import annotations

import json
import re
import urllib.request
from typing import Any

from tests.e2e.conftest import flood_to_the_end

MESSAGES = 100_000  # four events each: several times what the page takes in a second


def run_summary(server: str, run_id: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{server}/api/runs/{run_id}", timeout=10) as response:
        summary: dict[str, Any] = json.load(response)
    return summary


def test_a_flood_ends_on_screen_with_every_skipped_event_accounted_for(
    page: Any, live_server: str
) -> None:
    state = flood_to_the_end(page, MESSAGES)
    summary = run_summary(live_server, state["run"])
    assert (state["status"], summary["state"]) == ("completed", "completed")
    # What the page applied and what it let go add up to every event of the run.
    held = state["window"]
    assert held is not None and held["skipped"] > 0, "expected the page to fall behind"
    assert state["counts"]["events"] + held["skipped"] == summary["events"]
    banner = [b["text"] for b in state["banners"] if b["kind"] == "window"]
    assert len(banner) == 1, state["banners"]
    said = re.search(r"left out ([\d,]+) calls", banner[0]) or re.search(
        r"showing ([\d,]+) of ([\d,]+) events", banner[0]
    )
    assert said is not None, f"expected the banner to count what was skipped, got {banner[0]!r}"
    writer = next(p for p in state["processes"] if p["name"] == "writer")
    assert writer["exited"] and writer["exitcode"] == 0
    assert any(line.startswith(f"writer: {MESSAGES} frames") for line in writer["lines"]), writer
