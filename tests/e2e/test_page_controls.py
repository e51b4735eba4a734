"""Keys, Run and the parameter form in a real browser: what a press does, wherever the focus is."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from tests.e2e.conftest import page_state, wait_for
from tests.e2e.test_page import run_to_end

TERMINAL = {"completed", "failed", "stopped", "timeout", "deadlock", "killed"}
RUN_BUTTON = ".toolbar [data-action='run']"


def run_ids(server: str) -> set[str]:
    with urllib.request.urlopen(f"{server}/api/runs", timeout=10) as response:
        return {run["id"] for run in json.load(response)}


def wait_state(page: Any, predicate: Any, what: str, timeout: float = 30.0) -> Any:
    return wait_for(page, "window.pipescope.state()", predicate, timeout=timeout, what=what)


def test_space_pauses_the_view_and_run_waits_while_a_run_goes_on(
    page: Any, live_server: str
) -> None:
    page.wait_for_selector(".conn[data-connection='open']")
    page.click('[data-pick="poll"]')
    page.fill('[data-field="messages"] input', "200")  # a run of a minute or so
    before = run_ids(live_server)
    page.click(RUN_BUTTON)
    started = wait_state(page, lambda s: s["run"] is not None, "the run to start")
    run = started["run"]
    # Space right after the click (the button had the focus) pauses the view.
    page.keyboard.press("Space")
    assert page_state(page)["ui"]["paused"] is True
    # On any other button too: the focused tab is not switched to, the view resumes.
    page.focus("#tab-output")
    page.keyboard.press("Space")
    assert page_state(page)["ui"]["paused"] is False
    assert page.locator("#tab-output").get_attribute("aria-selected") == "false"
    # R while the run goes on starts nothing, and the status line says why.
    assert page.locator(RUN_BUTTON).is_disabled()
    page.keyboard.press("r")
    notice = page.locator("[data-status-notice]")
    notice.wait_for(state="visible")
    assert "still going" in notice.inner_text()
    assert page_state(page)["run"] == run
    assert run_ids(live_server) - before == {run}, "one run, not two"

    page.click(".toolbar [data-action='stop']")
    wait_state(page, lambda s: s["status"] in TERMINAL, "the stopped run to end", timeout=60)
    wait_for(
        page,
        f"document.querySelector({RUN_BUTTON!r}).disabled",
        lambda disabled: disabled is False,
        what="Run to be enabled again",
    )
    notice.wait_for(state="hidden")


def test_space_on_a_checkbox_still_ticks_it(page: Any) -> None:
    box = page.locator(".toolbar [data-step-mode]")
    box.focus()
    page.keyboard.press("Space")
    assert box.is_checked()
    assert page_state(page)["ui"]["paused"] is False


def test_a_parameter_error_is_brought_into_view_and_named_in_the_status_line(
    page: Any,
) -> None:
    page.set_viewport_size({"width": 1400, "height": 900})
    page.click('[data-pick="backpressure"]')
    page.fill('[data-field="messages"] input', "-5")
    page.click(RUN_BUTTON)
    field = page.locator('[data-field="messages"]')
    assert "at least 1" in field.locator(".field-error").inner_text()
    assert page.evaluate("document.activeElement.name") == "messages"
    shown = page.evaluate(
        """() => {
          const box = document.querySelector('[data-params-form]').getBoundingClientRect();
          const field = document.querySelector('[data-field="messages"]').getBoundingClientRect();
          return field.top >= box.top && field.bottom <= box.bottom;
        }"""
    )
    assert shown, "the field with the error is inside the visible part of the form"
    notice = page.locator("[data-status-notice]")
    notice.wait_for(state="visible")  # the status line is redrawn a few times a second
    assert "parameters need fixing" in notice.inner_text()
    assert "messages" in notice.inner_text()
    assert page_state(page)["run"] is None
    # Fixed, the notice goes.
    page.fill('[data-field="messages"] input', "5")
    page.keyboard.press("Tab")
    notice.wait_for(state="hidden")


def test_a_language_switch_keeps_the_form_values_and_errors(page: Any) -> None:
    page.click('[data-pick="race"]')
    page.uncheck('[data-field="two_readers"] input')
    page.fill('[data-field="frames"] input', "99999")
    page.keyboard.press("Tab")  # leaves the field: it is checked
    error = page.locator('[data-field="frames"] .field-error')
    assert "at most 2000" in error.inner_text()
    page.click(".keys-hint")  # the focus leaves the form, so L is a shortcut
    page.keyboard.press("l")
    wait_state(page, lambda s: s["ui"]["lang"] == "zh", "the language to be zh", timeout=5)
    assert not page.is_checked('[data-field="two_readers"] input')
    assert page.input_value('[data-field="frames"] input') == "99999"
    assert "不能大于 2000" in error.inner_text()
    wait_for(
        page,
        "document.querySelector('[data-status-notice]').textContent",
        lambda text: "参数需要修正" in text,
        what="the status line to name the field in Chinese",
    )


def test_an_event_filter_without_matches_says_so(page: Any) -> None:
    run_to_end(page, "ping-pong")
    page.click("#tab-events")
    empty = page.locator("[data-eventlog-empty]")
    assert empty.is_hidden()
    page.select_option('[data-filter="process"]', index=1)
    page.select_option('[data-filter="op"]', "exit")  # process events have no pipe
    page.select_option('[data-filter="pipe"]', index=1)
    empty.wait_for(state="visible")
    assert empty.inner_text() == "No events match these filters."
    for name in ("pipe", "op"):
        page.select_option(f'[data-filter="{name}"]', "")
    empty.wait_for(state="hidden")


def test_the_source_panel_says_when_the_process_at_the_lit_line_has_exited(page: Any) -> None:
    state = run_to_end(page, "ping-pong")
    last = next(p for p in state["processes"] if p["pid"] == state["lastCall"]["pid"])
    assert last["exited"]
    caption = page.locator(".source-caption")
    wait_for(
        page,
        "document.querySelector('.source-caption').textContent",
        lambda text: "exited" in text,
        what="the caption to say the process exited",
    )
    assert caption.inner_text().startswith(f"{last['name']} has exited")


def test_a_number_field_holding_text_that_is_no_number_says_so(page: Any) -> None:
    # The browser keeps "1e" in a number field but reports its value as "": the error
    # names what is wrong, not "Required."
    page.click('[data-pick="backpressure"]')
    field = page.locator('[data-field="messages"]')
    field.locator("input").fill("")
    field.locator("input").press_sequentially("1e")
    page.keyboard.press("Tab")
    assert field.locator(".field-error").inner_text() == "Not a number."
    field.locator("input").fill("")
    page.keyboard.press("Tab")
    assert field.locator(".field-error").inner_text() == "Required."


def test_the_picked_card_stays_in_view_when_its_form_opens(page: Any) -> None:
    # On a laptop screen the form takes most of the sidebar: the list shrinks, and the
    # card just picked (the last one, with the longest form) must still be visible.
    page.set_viewport_size({"width": 1366, "height": 768})
    last = page.locator(".card").last
    last.locator("[data-pick]").click()
    inside = page.evaluate(
        """() => {
          const list = document.querySelector('[data-gallery-cards]').getBoundingClientRect();
          const card = document.querySelector('.card[aria-current="true"]').getBoundingClientRect();
          return card.top >= list.top - 1 && card.bottom <= list.bottom + 1;
        }"""
    )
    assert inside, "the picked card is inside the visible part of the list"
