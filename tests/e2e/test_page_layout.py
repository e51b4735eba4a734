"""The page's layout on a laptop and on a narrow window: nothing overlaps, nothing is cut off."""

from __future__ import annotations

from typing import Any

from tests.e2e.test_page import run_to_end

SIDE_TABS = ["source", "output", "sequence", "events", "stats", "message"]

# What lies at the centre of each of the side panel's tabs, once scrolled into view.
TABS_ON_TOP = """(ids) => ids.map((id) => {
  const tab = document.getElementById(`tab-${id}`);
  tab.scrollIntoView({ block: 'nearest' });
  const r = tab.getBoundingClientRect();
  return tab.contains(document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2));
})"""

BOXES = """() => Object.fromEntries(['.stage', '#live', '.side', '[data-banners]'].map((sel) => {
  const el = document.querySelector(sel);
  const r = el.getBoundingClientRect();
  return [sel, { top: r.top, bottom: r.bottom, left: r.left, right: r.right,
    scroll: el.scrollHeight, client: el.clientHeight }];
}))"""


def test_nothing_overlaps_the_side_panel_on_a_narrow_window(page: Any) -> None:
    page.set_viewport_size({"width": 800, "height": 900})
    run_to_end(page, "race")  # two banners above the live view
    page.wait_for_selector('[data-banner="corrupt"]')
    assert page.evaluate(TABS_ON_TOP, SIDE_TABS) == [True] * len(SIDE_TABS)
    boxes = page.evaluate(BOXES)
    stage, live, side = boxes[".stage"], boxes["#live"], boxes[".side"]
    assert stage["top"] <= live["top"] and live["bottom"] <= stage["bottom"], boxes
    assert stage["bottom"] <= side["top"], "the side panel comes below the stage"
    banners = boxes["[data-banners]"]
    assert banners["scroll"] <= banners["client"], "the banners are shown in full"
    page.click("#tab-stats")
    assert page.locator("#tab-stats").get_attribute("aria-selected") == "true"


def test_the_outcome_in_the_status_line_is_read_in_full(page: Any) -> None:
    page.set_viewport_size({"width": 1400, "height": 900})
    state = run_to_end(page, "race")
    page.wait_for_selector("[data-run-status][data-status='completed']")
    text = page.locator("[data-status-text]")
    assert state["run"] in text.inner_text()
    assert "the scenario ran to completion" in text.inner_text()
    size = text.evaluate("el => ({ scroll: el.scrollWidth, client: el.clientWidth })")
    assert size["scroll"] <= size["client"], "no part of the text is cut off"
