"""The page fed a snapshot of a long run's latest calls only, through a stand-in websocket."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e import synthetic
from tests.e2e.conftest import VIEWPORT, page_state, wait_for

SHOTS = Path("/tmp/shots")
NOTICE = "fell more than 10,000 events behind: showing 2,000 of 12,000 events"
STATE = "window.pipescope.state()"


class Server:
    """Stands in for /ws: says hello with one running run, answers its subscribe with a snapshot."""

    def __init__(self) -> None:
        self.route: Any = None
        self.subscribed: list[str] = []

    def __call__(self, route: Any) -> None:
        self.route = route
        route.on_message(self.on_message)
        self.send({"type": "hello", "runs": [synthetic.summary()], "version": "test"})

    def send(self, frame: dict[str, Any]) -> None:
        self.route.send(json.dumps(frame))

    def on_message(self, text: str | bytes) -> None:
        frame = json.loads(text)
        if frame.get("type") != "subscribe":
            return
        self.subscribed.append(frame["run"])
        events = synthetic.windowed_snapshot()
        skipped = synthetic.LAST_SEND - len(events)
        self.send(
            {
                "type": "snapshot",
                "run": synthetic.summary(),
                "events": events,
                "notice": NOTICE,
                "skipped": skipped,
            }
        )


def open_page(browser: Any, live_server: str, lang: str) -> Iterator[tuple[Any, Server]]:
    context = browser.new_context(viewport=VIEWPORT, locale="en-US")
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    server = Server()
    # Playwright stands in only for the page's own websockets, not a worker's: without
    # Worker the page opens its websocket itself (its fallback).
    tab.add_init_script("delete window.Worker;")
    tab.route_web_socket("**/ws", server)
    tab.goto(f"{live_server}/?lang={lang}")
    wait_for(tab, "window.pipescope ? window.pipescope.ready : false", bool, what="the page's hook")
    try:
        yield tab, server
    finally:
        context.close()
    assert not errors, f"expected no errors in the page, got {errors}"


@pytest.fixture(params=["en", "zh"])
def windowed(request: Any, browser: Any, live_server: str) -> Iterator[tuple[Any, Server, str]]:
    for tab, server in open_page(browser, live_server, request.param):
        tab.click('[data-tab="runs"]')
        tab.click(f'[data-open-run="{synthetic.RUN}"]')
        wait_for(
            tab,
            STATE,
            lambda s: s["window"] is not None and s["backlog"] == 0,
            what="the windowed snapshot applied",
        )
        yield tab, server, request.param


def test_a_windowed_snapshot_is_shown_without_false_corruption_or_stuck_frames(
    windowed: tuple[Any, Server, str],
) -> None:
    tab, server, lang = windowed
    assert server.subscribed == [synthetic.RUN]
    state = page_state(tab)
    assert state["window"]["from"] == synthetic.WINDOW_FROM
    assert state["counts"]["corrupt"] == 0
    assert not [b for b in state["banners"] if b["kind"] == "corrupt"]
    (pipe,) = state["pipes"]
    assert pipe["queued"]["a>b"] == 1
    queued = [tk["seq"] for tk in state["tokens"] if tk["status"] == "queued"]
    assert queued == [synthetic.LAST_SEND]
    # The notice: a title in the page's language beside the server's own words.
    (notice,) = [b for b in state["banners"] if b["kind"] == "window"]
    title = "仅显示最近的事件" if lang == "zh" else "Showing the latest events only"
    assert notice["text"].startswith(title) and NOTICE in notice["text"]
    # Statistics say what they cover; the events count is the run's.
    tab.click('[data-tab="stats"]')
    stats = tab.locator("[data-stats-panel]")
    wait_for(
        tab,
        "document.querySelector('[data-stats-panel]').dataset.window || ''",
        bool,
        what="the statistics' window",
    )
    assert stats.locator('[data-stat="events"] dd').inner_text() == f"{synthetic.LAST_SEND:,}"
    note = stats.locator(".stat-window").inner_text()
    assert f"{synthetic.WINDOW_FROM:,}" in note
    held = len(synthetic.windowed_snapshot())
    tab.click('[data-tab="events"]')
    log = tab.locator("[data-eventlog]")
    wait_for(
        tab,
        "document.querySelector('[data-eventlog]').dataset.total",
        lambda v: v == str(held),
        what="the event log",
    )
    assert log.get_attribute("data-skipped") == str(synthetic.LAST_SEND - held)
    SHOTS.mkdir(exist_ok=True)
    tab.click('[data-tab="stats"]')
    tab.screenshot(path=str(SHOTS / f"window-resync-{lang}.png"))


def test_the_run_goes_on_after_the_window_and_its_outcome_is_translated(
    windowed: tuple[Any, Server, str],
) -> None:
    tab, server, lang = windowed
    reason = {"key": "completed", "args": {}}
    server.send({"type": "events", "run": synthetic.RUN, "events": synthetic.finish(reason)})
    state = wait_for(
        tab,
        STATE,
        lambda s: s["status"] == "completed" and s["backlog"] == 0,
        what="the run completed",
    )
    assert [tk["seq"] for tk in state["tokens"] if tk["status"] == "queued"] == []
    expected = "场景已运行完毕" if lang == "zh" else "the scenario ran to completion"
    wait_for(
        tab,
        "document.querySelector('[data-status-text]').textContent",
        lambda text: expected in text,
        what=f"the outcome {expected!r}",
    )
