"""The dashboard page in a real browser against the real server, with real runs."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import page_state, wait_for

TERMINAL = {"completed", "failed", "stopped", "timeout", "deadlock", "killed"}
SHOTS = Path("/tmp/shots")
RUN_SECONDS = 90.0  # above the server's default run time limit, so a hung run ends first


def scenarios(server: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{server}/api/scenarios", timeout=10) as response:
        listed: list[dict[str, Any]] = json.load(response)
    return listed


def wait_state(page: Any, predicate: Any, what: str, timeout: float = RUN_SECONDS) -> Any:
    return wait_for(page, "window.pipescope.state()", predicate, timeout=timeout, what=what)


def run_to_end(page: Any, scenario: str) -> dict[str, Any]:
    """Press the card's Run button and wait until the page shows the run ended."""
    page.click(f'[data-run-scenario="{scenario}"]')
    state: dict[str, Any] = wait_state(
        page,
        lambda s: s["run"] is not None and s["status"] in TERMINAL and s["backlog"] == 0,
        f"{scenario} to end",
    )
    return state


def shoot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"))


def test_gallery_shows_every_scenario_with_its_teaching_point(page: Any, live_server: str) -> None:
    listed = scenarios(live_server)
    page.wait_for_selector(".conn[data-connection='open']")  # the websocket is up
    page.wait_for_selector(".card")
    titles = page.locator(".card-title").all_inner_texts()
    assert titles == [s["title"]["en"] for s in listed]
    teaching = page.locator(".card-teaching").first.inner_text()
    assert teaching.split()[:3] == listed[0]["teaching"]["en"].split()[:3]
    shoot(page, "gallery")


def test_parameter_form_is_generated_and_validated(page: Any, live_server: str) -> None:
    race = next(s for s in scenarios(live_server) if s["id"] == "race")
    page.click('[data-pick="race"]')
    names = page.locator("[data-params-fields] [data-field]").evaluate_all(
        "nodes => nodes.map(n => n.dataset.field)"
    )
    assert names == [p["name"] for p in race["params"]]
    frames = next(p for p in race["params"] if p["name"] == "frames")
    field = page.locator('[data-field="frames"]')
    field.locator("input").fill(str(int(frames["max"]) + 1))
    page.click(".toolbar [data-action='run']")
    message = field.locator(".field-error").inner_text()
    assert str(int(frames["max"])) in message
    assert page_state(page)["run"] is None, "an invalid form must not start a run"


def assert_ping_pong_printed(page: Any) -> None:
    """The Output tab shows both lines the classic ping-pong prints."""
    page.click("#tab-output")
    page.wait_for_selector(".proc-output .line")
    printed = page.locator(".proc-lines").all_inner_texts()
    assert any("收到 proc1" in text for text in printed), printed
    assert any("收到 proc2" in text for text in printed), printed


def test_ping_pong_delivers_two_messages_fifo_and_prints_both_lines(page: Any) -> None:
    state = run_to_end(page, "ping-pong")
    assert state["status"] == "completed"
    delivered = [t for t in state["tokens"] if t["status"] == "delivered"]
    assert sorted(t["dir"] for t in delivered) == ["a>b", "b>a"]
    # proc2 answers only after it has received: 'proc1' arrives first, then the answer.
    by_seq = {t["seq"]: t for t in delivered}
    assert [by_seq[seq]["preview"] for seq in state["delivered"]] == ["'proc1'", "'proc2'"]
    # FIFO per direction: frames leave each lane in the order they entered it.
    for lane in ("a>b", "b>a"):
        frames = sorted((t for t in delivered if t["dir"] == lane), key=lambda t: t["seq"])
        assert [t["recvSeq"] for t in frames] == sorted(t["recvSeq"] for t in frames)
    for token in delivered:
        assert token["corrupt"] is None
        assert token["recvHash"] == token["hash"], "the received frame is the one sent"
        assert token["toPid"] != token["fromPid"]
    assert_ping_pong_printed(page)
    page.wait_for_selector("[data-run-status][data-status='completed']")
    assert page.locator("[data-status-chip]").inner_text() == "Completed"
    shoot(page, "ping-pong-completed")


def test_race_shows_corrupted_frames_with_their_explanation(page: Any) -> None:
    state = run_to_end(page, "race")
    corrupt = [t for t in state["tokens"] if t["corrupt"]]
    assert corrupt, "expected at least one corrupted frame"
    banner = page.locator('[data-banner="corrupt"]')
    banner.wait_for(state="visible")
    explanations = {v["message"] for v in state["verdicts"] if v["verdict"] == "corrupt"}
    assert any(message in banner.inner_text() for message in explanations)
    # The message panel opens on the first corrupted frame, with the explanation in red.
    page.click("#tab-message")
    panel = page.locator("[data-message-panel]")
    page.wait_for_selector("[data-message-panel][data-corrupt='true']")
    shown = next(t for t in corrupt if str(t["seq"]) == panel.get_attribute("data-seq"))
    assert shown["corrupt"] in panel.locator(".message-corrupt").inner_text()
    shoot(page, "race")


def test_race_with_a_lock_has_no_corrupted_frame(page: Any) -> None:
    page.click('[data-pick="race-locked"]')
    page.keyboard.press("r")  # the Run shortcut starts the selected scenario
    state = wait_state(
        page,
        lambda s: s["run"] is not None and s["status"] in TERMINAL and s["backlog"] == 0,
        "race-locked to end",
    )
    assert state["status"] == "completed"
    assert state["counts"]["messages"] > 0
    assert [t for t in state["tokens"] if t["corrupt"]] == []
    assert page.locator('[data-banner="corrupt"]').count() == 0


def test_deadlock_banner_names_both_ends(page: Any) -> None:
    state = run_to_end(page, "deadlock")
    assert state["deadlock"] is not None
    banner = page.locator('[data-banner="deadlock"]')
    banner.wait_for(state="visible")
    text = banner.inner_text()
    assert "end a" in text and "end b" in text, text
    for waiter in state["deadlock"]["cycle"]:
        assert waiter["process"] in text
    shoot(page, "deadlock")


def test_step_mode_advances_one_call_per_step(page: Any) -> None:
    page.click('[data-pick="ping-pong"]')
    page.check(".toolbar [data-step-mode]")
    page.click(".toolbar [data-action='run']")
    step = page.locator(".toolbar [data-action='step']")
    state = wait_state(page, lambda s: s["run"] and s["ui"]["stepMode"], "step mode on")
    assert step.is_enabled()
    # Every traced call waits for a Step before it starts (a recv may then block: it has
    # started, but not returned), so the count of started calls is what a Step advances.
    started = state["callsStarted"]
    for _ in range(4):
        step.click()
        state = wait_state(
            page, lambda s, c=started: s["callsStarted"] > c, "one more call after Step"
        )
        assert state["callsStarted"] == started + 1
        started += 1
    page.locator(".toolbar [data-action='stop']").click()
    wait_state(page, lambda s: s["status"] in TERMINAL, "the stopped run to end")


def test_language_switch_changes_labels_and_scenario_texts(page: Any, live_server: str) -> None:
    listed = scenarios(live_server)
    page.wait_for_selector(".card")
    page.click("[data-action='lang']")
    wait_state(page, lambda s: s["ui"]["lang"] == "zh", "the language to be zh", timeout=5)
    assert page.locator(".toolbar [data-action='run']").inner_text() == "运行"
    assert page.locator(".card-title").all_inner_texts() == [s["title"]["zh"] for s in listed]
    assert page.locator("html").get_attribute("lang") == "zh-CN"
    shoot(page, "gallery-zh")
    page.keyboard.press("l")
    wait_state(page, lambda s: s["ui"]["lang"] == "en", "the language back to en", timeout=5)
    assert page.locator(".card-title").first.inner_text() == listed[0]["title"]["en"]


def test_a_completed_ping_pong_tells_its_outcome_in_chinese(page: Any) -> None:
    page.click("[data-action='lang']")
    wait_state(page, lambda s: s["ui"]["lang"] == "zh", "the language to be zh", timeout=5)
    state = run_to_end(page, "ping-pong")
    assert (state["status"], state["reason"]) == ("completed", {"key": "completed", "args": {}})
    status = page.locator("[data-status-text]")
    wait_for(
        page,
        "document.querySelector('[data-status-text]').textContent",
        lambda text: "场景已运行完毕" in text,
        what="the outcome in Chinese",
    )
    assert state["message"] not in status.inner_text(), "the English message gives way"
    assert page.locator("[data-status-chip]").inner_text() == "已完成"
    shoot(page, "ping-pong-completed-zh")


@pytest.mark.parametrize(("key", "field", "expected"), [("+", "speed", 1.5), ("-", "speed", 0.5)])
def test_keyboard_changes_speed(page: Any, key: str, field: str, expected: float) -> None:
    page.wait_for_selector(".card")
    page.keyboard.type(key)
    assert page_state(page)["ui"][field] == expected


def test_space_pauses_and_resumes_the_view(page: Any) -> None:
    page.wait_for_selector(".card")
    page.keyboard.press("Space")
    assert page_state(page)["ui"]["paused"] is True
    assert page.locator("[data-action='pause']").get_attribute("aria-pressed") == "true"
    page.keyboard.press("Space")
    assert page_state(page)["ui"]["paused"] is False


EVENTLOG_PROBE = """async (n) => {
  const { createEventLog } = await import('/static/js/eventlog.js');
  // A copy of the page's log markup, so the page's own log does not draw into it.
  const root = document.querySelector('[data-eventlog]').cloneNode(true);
  const box = document.createElement('div');
  Object.assign(box.style, { position: 'fixed', top: '0', width: '600px', height: '400px' });
  box.append(root);
  document.body.append(box);
  const log = createEventLog(root, { t: (k, v) => `${v ? v.shown : ''}/${v ? v.total : ''}` });
  const events = [];
  for (let i = 1; i <= n; i += 1) {
    events.push({ run: 'r', seq: i, kind: 'call', t: i * 1000, pid: 1 + (i % 2),
      process: `Process-${1 + (i % 2)}`, pipe: i % 3 ? '1.1' : '1.2',
      pipe_name: i % 3 ? 'left' : 'right', end: 'a', op: i % 2 ? 'send' : 'recv',
      phase: 'end', nbytes: 8, preview: `'m${i}'` });
  }
  log.reset();
  for (let i = 0; i < n; i += 1000) log.push(events.slice(i, i + 1000));
  log.update();
  const rows = () => root.querySelectorAll('.ev').length;
  const all = { total: root.dataset.total, shown: root.dataset.shown, rows: rows(),
    last: root.querySelector('.ev:last-child')?.dataset.seq };
  const pipe = root.querySelector('[data-filter="pipe"]');
  pipe.value = 'right';
  pipe.dispatchEvent(new Event('change'));
  const filtered = { shown: root.dataset.shown, rows: rows(),
    pipes: [...root.querySelectorAll('.ev')].map((r) => r.children[3].textContent) };
  return { all, filtered };
}"""


def test_event_log_draws_only_visible_rows_of_tens_of_thousands(page: Any) -> None:
    count = 30_000
    result = page.evaluate(EVENTLOG_PROBE, count)
    assert result["all"]["total"] == str(count)
    assert result["all"]["shown"] == str(count)
    assert 0 < result["all"]["rows"] < 100, "only the rows in view (and a margin) are drawn"
    assert result["all"]["last"] == str(count), "a log at its end follows the newest event"
    assert result["filtered"]["shown"] == str(count // 3)
    assert set(result["filtered"]["pipes"]) == {"right a"}
