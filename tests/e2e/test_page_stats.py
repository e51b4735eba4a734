"""The Statistics tab: the page's own counts, and the analysis's per direction from the server."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import wait_for
from tests.e2e.test_page import run_to_end

pytestmark = pytest.mark.e2e

SHOTS = Path("/tmp/shots")
FACTS = """Array.from(document.querySelectorAll('.stat-direction')).map((block) => [
  block.dataset.direction,
  Object.fromEntries(Array.from(block.querySelectorAll('[data-stat]')).map(
    (item) => [item.dataset.stat, item.querySelector('dd').textContent]))])"""


def test_the_statistics_show_latency_percentiles_time_blocked_and_peak_queued(
    page: Any,
) -> None:
    run_to_end(page, "backpressure")
    page.click("#tab-stats")
    blocks = wait_for(page, FACTS, lambda found: len(found) == 1, what="the analysis's block")
    direction, facts = blocks[0]
    assert direction == "backpressure b>a"
    messages, rate = facts["messages"].split(" · ", 1)
    assert messages == "25"  # 24 messages and the None that ends them
    assert rate.endswith("KiB/s") and "/s · " in rate
    latency = facts["latency"].split(" · ")
    assert [part.split()[0] for part in latency] == ["p50", "p99", "max"]
    assert all(part.endswith(("µs", "ms", " s")) for part in latency), latency
    # The producer waited in send for room in the pipe: the lesson of the scenario.
    assert facts["blocked"].startswith("send ") or " send " in facts["blocked"], facts
    assert facts["peak"].endswith(" / 64 KiB") and not facts["peak"].startswith("0 B"), facts
    elapsed = page.locator(".stat-elapsed dd").inner_text()
    assert elapsed.endswith(("ms", " s")) and "." in elapsed
    SHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SHOTS / "stats-backpressure.png"))
    page.keyboard.press("l")
    titles = "Array.from(document.querySelectorAll('.stat-direction dt'), (dt) => dt.textContent)"
    said = wait_for(page, titles, lambda found: "阻塞时间" in found, what="the labels in Chinese")
    assert said == ["消息数 · 速率", "延迟（发送 → 接收）", "阻塞时间", "排队峰值（内核）"]
    page.screenshot(path=str(SHOTS / "stats-backpressure-zh.png"))


def test_a_rate_from_fewer_than_two_messages_is_shown_as_unknown(
    page: Any, live_server: str
) -> None:
    """One message (or none) gives no interval to divide by: the server says null, the page
    '—', not '0.0/s'."""
    state = run_to_end(page, "eof")
    with urllib.request.urlopen(f"{live_server}/api/runs/{state['run']}", timeout=10) as response:
        stats = json.load(response)["analysis"]["stats"]
    rates = [(d["messages"], d["messages_per_s"], d["bytes_per_s"])
             for directions in stats.values() for d in directions.values()]  # fmt: skip
    assert {tuple(rate) for n, *rate in rates if n < 2} == {(None, None)}, rates
    assert all(None not in rate for n, *rate in rates if n >= 2), rates
    page.click("#tab-stats")
    blocks = dict(wait_for(page, FACTS, lambda found: len(found) == 6, what="six directions"))
    assert blocks["send to closed → BrokenPipeError b>a"]["messages"] == "1 · —"
    assert blocks["send to closed → BrokenPipeError a>b"]["messages"] == "0 · —"
    messages, rate = blocks["close → EOFError a>b"]["messages"].split(" · ", 1)
    assert int(messages) >= 2 and rate.endswith("B/s") and "/s · " in rate, rate
    one = '.stat-direction[data-direction="send to closed → BrokenPipeError b>a"]'
    page.locator(one).scroll_into_view_if_needed()
    SHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SHOTS / "stats-eof.png"))
