"""Time on the page: waits counted in recorded time, scrubbing a replay, back to a finished run."""

from __future__ import annotations

from typing import Any

from tests.e2e import synthetic
from tests.e2e.conftest import page_state, wait_for
from tests.e2e.test_replay import pause_replay, run_to_end, wait_state

TERMINAL = {"completed", "failed", "stopped", "timeout", "deadlock", "killed"}

WAITS = """async ({ events, later }) => {
  const { createRunModel } = await import('/static/js/model.js');
  const { createLiveView } = await import('/static/js/render.js');
  const host = document.createElement('div');
  Object.assign(host.style, { position: 'fixed', top: '0', width: '700px', height: '400px' });
  document.body.append(host);
  const model = createRunModel();
  model.apply(events);
  const view = createLiveView(host, { t: (k) => k });
  const since = events[events.length - 1].t;
  const at = (clockNs) => (nowMs) => {
    view.update(model.state, nowMs, clockNs);
    return view.waits();
  };
  // Paused (or a replay standing still): the clock stays while wall time goes on.
  const still = [1000, 3000, 9000].map(at(since + 300e6));
  // Playing: the clock moves, and the wait with it.
  const playing = at(since + 800e6)(9016);
  // The run ends: the clock runs on past it, the wait stops where the run stopped.
  model.apply(later);
  const ended = at(since + 5000e6)(9032);
  host.remove();
  return { still, playing, ended };
}"""


def open_replay(page: Any, run_id: str) -> None:
    """Open a finished run from the Runs list, at the slowest speed (0.1×)."""
    page.locator("[data-speed]").fill("0")
    page.click("#tab-runs")
    page.locator(f'.run-row[data-run-id="{run_id}"]:not([data-state="running"]) button').click()
    wait_state(
        page,
        lambda s: s["view"] == "replay" and s["replay"]["run"] == run_id,
        f"the replay of {run_id}",
        timeout=20,
    )


def test_a_wait_is_counted_to_the_time_shown_not_to_the_wall_clock(page: Any) -> None:
    head = synthetic.windowed_snapshot()[:8]  # the run, its pipe and two processes
    blocked = synthetic.call(20, synthetic.READER, "b", "recv", "begin")
    done = synthetic.event(40, "run", 0, "", state="completed", message="done")
    out = page.evaluate(WAITS, {"events": [*head, blocked], "later": [done]})
    reader = str(synthetic.READER)
    assert [w[reader] for w in out["still"]] == [300, 300, 300], out
    assert out["playing"][reader] == 800
    assert out["ended"][reader] == (done["t"] - blocked["t"]) / 1e6


def test_a_paused_replay_shows_the_wait_at_its_moment(page: Any) -> None:
    page.click('[data-pick="deadlock"]')
    page.select_option('[data-field="variant"] select', "send-send")
    run = run_to_end(page, "deadlock")
    open_replay(page, run["run"])
    pause_replay(page)
    page.locator("[data-replay-scrubber]").fill("500")
    state = wait_state(
        page,
        lambda s: (
            abs(s["replay"]["fraction"] - 0.5) < 0.001 and any(p["blocked"] for p in s["processes"])
        ),
        "the replay half-way with a process blocked",
        timeout=20,
    )
    position = state["replay"]["position"]
    expected = {
        str(p["pid"]): (position - p["blocked"]["since"]) / 1e6
        for p in state["processes"]
        if p["blocked"]
    }
    waits = wait_for(
        page,
        "window.pipescope.waits()",
        lambda w: w.keys() == expected.keys(),
        what="the blocked processes drawn",
    )
    for pid, ms in expected.items():
        assert abs(waits[pid] - ms) < 0.01, (waits, expected)
    assert page_state(page)["ui"]["paused"] is True


def test_a_scrub_on_a_replay_at_its_end_leaves_it_standing_where_it_is_put(page: Any) -> None:
    live = run_to_end(page, "ping-pong")
    open_replay(page, live["run"])
    scrubber = page.locator("[data-replay-scrubber]")
    scrubber.press("End")
    wait_state(page, lambda s: s["replay"]["ended"], "the replay at its end", timeout=20)
    assert page_state(page)["ui"]["paused"] is False, "a replay that ended is not paused"
    scrubber.fill("300")
    state = wait_state(
        page,
        lambda s: abs(s["replay"]["fraction"] - 0.3) < 0.001,
        "the replay at 30 %",
        timeout=20,
    )
    assert state["ui"]["paused"] is True, "the replay stays where it was put"
    assert not state["replay"]["ended"]
    play = page.locator('[data-replay-action="play"]')
    assert play.get_attribute("aria-pressed") == "false"
    assert play.inner_text() == "Play"
    # A replay that plays keeps playing after a scrub.
    play.click()
    scrubber.fill("100")
    state = wait_state(
        page, lambda s: s["replay"]["fraction"] >= 0.1, "the replay at 10 %", timeout=20
    )
    assert state["ui"]["paused"] is False


def test_back_to_live_on_a_finished_run_shows_how_it_ended_at_once(page: Any) -> None:
    live = run_to_end(page, "race")
    assert live["status"] == "completed"
    open_replay(page, live["run"])
    page.locator("[data-replay-scrubber]").fill("200")
    wait_state(page, lambda s: s["status"] not in TERMINAL, "the replay early in the run")
    page.locator("[data-speed]").fill("3")  # 1×: a run replayed at its pace would take seconds
    page.click('[data-replay-action="live"]')
    seen: list[tuple[str, int]] = []

    def settled(state: dict[str, Any]) -> bool:
        if state["view"] == "live":
            seen.append((state["status"], state["counts"]["events"]))
        return seen[-1:] == [("completed", live["counts"]["events"])] and state["backlog"] == 0

    wait_for(page, "window.pipescope.state()", settled, what="the finished run again")
    assert {status for status, _ in seen} == {"completed"}, seen
    assert seen[0][1] in (0, live["counts"]["events"]), "no state part of the way through"
    page.wait_for_selector("[data-run-status][data-status='completed']")
    assert page.locator("[data-status-chip]").inner_text() == "Completed"
