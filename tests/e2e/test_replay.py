"""Records and replay in a real browser: the Runs list, the time scrubber and the exports."""

from __future__ import annotations

import itertools
import json
import urllib.request
from pathlib import Path
from typing import Any

from tests.e2e.conftest import page_state, wait_for

TERMINAL = {"completed", "failed", "stopped", "timeout", "deadlock", "killed"}
RUN_SECONDS = 90.0  # above the server's default run time limit, so a hung run ends first
SHOTS = Path("/tmp/shots")


def wait_state(page: Any, predicate: Any, what: str, timeout: float = RUN_SECONDS) -> Any:
    return wait_for(page, "window.pipescope.state()", predicate, timeout=timeout, what=what)


def run_to_end(page: Any, scenario: str, fields: dict[str, str] | None = None) -> dict[str, Any]:
    page.click(f'[data-pick="{scenario}"]')
    for name, value in (fields or {}).items():
        page.fill(f'[data-field="{name}"] input', value)
    before = page_state(page)["run"]
    page.click(".toolbar [data-action='run']")
    state: dict[str, Any] = wait_state(
        page,
        lambda s: s["run"] not in (None, before) and s["status"] in TERMINAL and s["backlog"] == 0,
        f"{scenario} to end",
    )
    return state


def seen(state: dict[str, Any]) -> dict[str, Any]:
    """What a viewer saw: messages in delivery order and each process's printed lines."""
    by_seq = {t["seq"]: t for t in state["tokens"]}
    return {
        "delivered": [
            (by_seq[s]["dir"], by_seq[s]["preview"], by_seq[s]["hash"], by_seq[s]["recvHash"])
            for s in state["delivered"]
        ],
        "lines": {p["pid"]: p["lines"] for p in state["processes"]},
        "queued": [p["queued"] for p in state["pipes"]],
    }


def open_replay(page: Any, run_id: str) -> dict[str, Any]:
    page.locator("[data-speed]").fill("0")  # 0.1×: the replay cannot end before it is paused
    page.click("#tab-runs")
    row = page.locator(f'.run-row[data-run-id="{run_id}"][data-state="completed"]')
    row.wait_for()
    row.locator("[data-open-run]").click()
    state: dict[str, Any] = wait_state(
        page,
        lambda s: s["view"] == "replay" and s["replay"]["run"] == run_id,
        f"the replay of {run_id}",
        timeout=20,
    )
    return state


def pause_replay(page: Any) -> None:
    """Pause the replay before it ends (it plays at the slowest speed: see open_replay)."""
    play = page.locator('[data-replay-action="play"]')
    if play.get_attribute("aria-pressed") == "true":
        play.click()
    wait_state(page, lambda s: s["ui"]["paused"], "the replay to pause", timeout=10)


def before_last_delivery(base: str, run_id: str) -> int:
    """A scrubber position (thousandths of the run's time span) in the widest gap between
    the run's events before its last delivery (a receive's end), so a replay scrubbed
    there shows the run half-way: that delivery not yet made, the run still going."""
    _, body = fetch(f"{base}/api/runs/{run_id}/events")
    events: list[dict[str, Any]] = json.loads(body)
    last = max(i for i, e in enumerate(events) if e["kind"] == "call" and "match" in e)
    t0, t1 = min(int(e["t"]) for e in events), max(int(e["t"]) for e in events)
    times = sorted(int(e["t"]) for e in events[: last + 1])
    start, end = max(itertools.pairwise(times), key=lambda gap: gap[1] - gap[0])
    return round(((start + end) / 2 - t0) / (t1 - t0) * 1000)


def test_a_replay_scrubbed_to_the_end_shows_what_the_live_run_showed(
    page: Any, live_server: str
) -> None:
    live = run_to_end(page, "ping-pong")
    assert live["status"] == "completed"
    shown_live = seen(live)
    assert len(shown_live["delivered"]) == 2
    # A completed exchange leaves no message in a tube, in the model or on the canvas.
    assert shown_live["queued"] == [{"a>b": 0, "b>a": 0}]
    page.wait_for_selector(".liveview[data-tokens-shown='0']")
    run_id = live["run"]
    # The sequence chart fits its three lifelines in the panel: nothing is cut off at the right.
    page.click("#tab-sequence")
    page.wait_for_selector(".seqchart[data-messages='2']")
    chart = page.locator(".seqchart-body").evaluate(
        "b => ({ scroll: b.scrollWidth, client: b.clientWidth })"
    )
    assert chart["scroll"] <= chart["client"], chart

    open_replay(page, run_id)
    first = page.locator(".run-row").first
    assert first.get_attribute("data-run-id") == run_id, "the newest run heads the list"
    assert page.locator("[data-replay-label]").inner_text().find(run_id) >= 0
    pause_replay(page)

    page.locator("[data-replay-scrubber]").press("End")
    end = wait_state(
        page,
        lambda s: s["replay"]["fraction"] == 1 and s["replay"]["ended"] and s["backlog"] == 0,
        "the replay at its end",
        timeout=20,
    )
    assert end["status"] == "completed"
    assert seen(end) == shown_live
    assert end["replay"]["shown"] == end["replay"]["total"] == live["counts"]["events"]

    # Not the middle of the time span: the run ends some 100 ms after its last call, far
    # longer than the exchange itself takes.
    position = before_last_delivery(live_server, run_id)
    page.locator("[data-replay-scrubber]").fill(str(position))
    middle = wait_state(
        page,
        lambda s: abs(s["replay"]["fraction"] * 1000 - position) < 1,
        "the replay half-way",
        timeout=20,
    )
    assert len(middle["delivered"]) < len(shown_live["delivered"])
    assert middle["replay"]["shown"] < middle["replay"]["total"]
    assert middle["status"] not in TERMINAL, "half-way the run was still going"

    page.locator("[data-speed]").fill("3")  # 1×
    page.click('[data-replay-action="live"]')
    back = wait_state(
        page,
        lambda s: (
            s["view"] == "live"
            and s["run"] == run_id
            and s["backlog"] == 0
            and s["counts"]["events"] == live["counts"]["events"]
        ),
        "the live view again",
        timeout=20,
    )
    assert seen(back) == shown_live
    assert page.locator("[data-replay-bar]").is_hidden()


def fetch(url: str) -> tuple[str, str]:
    with urllib.request.urlopen(url, timeout=20) as response:
        return response.headers.get("Content-Type", ""), response.read().decode()


def test_export_links_download_the_shown_run(page: Any, live_server: str) -> None:
    live = run_to_end(page, "ping-pong")
    open_replay(page, live["run"])
    jsonl = page.locator('[data-export="jsonl"]').get_attribute("href")
    chrome = page.locator('[data-export="chrome"]').get_attribute("href")
    assert jsonl and chrome

    kind, body = fetch(live_server + jsonl)
    assert "ndjson" in kind
    events = [json.loads(line) for line in body.splitlines()]
    assert [e["seq"] for e in events] == list(range(1, live["counts"]["events"] + 1))
    assert {e["run"] for e in events} == {live["run"]}

    kind, body = fetch(live_server + chrome)
    trace = json.loads(body)
    phases = [e.get("ph") for e in trace["traceEvents"]]
    assert "X" in phases, "calls become slices"
    assert phases.count("s") == phases.count("f") == 2, "one send→recv arrow per message"


def test_runs_list_is_keyboard_usable_and_replays_a_long_pipeline(page: Any) -> None:
    short = run_to_end(page, "ping-pong")
    pipeline = run_to_end(page, "pipeline", {"stages": "6", "items": "40"})
    assert page.locator(".liveview").get_attribute("data-layout") == "snake"
    page.locator("[data-speed]").fill("0")  # 0.1×: the replay cannot end before it is paused
    page.click("#tab-runs")
    page.locator(f'.run-row[data-run-id="{pipeline["run"]}"][data-state="completed"]').wait_for()
    page.locator(".run-open").first.focus()
    page.keyboard.press("ArrowDown")
    focused = page.evaluate("document.activeElement.dataset.openRun")
    assert focused == short["run"], "Down moves to the next (older) run"
    page.keyboard.press("ArrowUp")
    page.keyboard.press("Enter")
    wait_state(
        page,
        lambda s: s["view"] == "replay" and s["replay"]["run"] == pipeline["run"],
        "the pipeline's replay",
        timeout=20,
    )
    pause_replay(page)
    page.locator("[data-replay-scrubber]").press("End")
    end = wait_state(page, lambda s: s["replay"]["ended"] and s["backlog"] == 0, "the end")
    assert seen(end) == seen(pipeline)
    assert page_state(page)["counts"] == pipeline["counts"]


SEEKS = """async (events) => {
  const { createRunModel } = await import('/static/js/model.js');
  const { createPlayback } = await import('/static/js/playback.js');
  const { createReplay } = await import('/static/js/replay.js');
  const pick = (s) => JSON.stringify({ delivered: s.delivered, counts: s.counts, status: s.status,
    lines: Object.values(s.processes).map((p) => p.lines.map((l) => l.text)) });
  const model = createRunModel();
  const playback = createPlayback();
  const replay = createReplay({ playback, restart: (summary) => model.reset(summary),
    apply: (batch) => model.apply(batch) });
  replay.open({ id: 'r', state: 'completed' }, events);
  const { t0, t1 } = replay.span;
  const out = [];
  for (const f of [1, 0.3, 0.6, 0.9, 0.2, 0, 1]) {
    replay.seekFraction(f);
    const at = t0 + f * (t1 - t0);
    // The reference: a fresh model given every event before the first one later than `at`.
    const cut = events.findIndex((ev) => ev.t > at);
    const fresh = createRunModel();
    fresh.apply(cut < 0 ? events : events.slice(0, cut));
    out.push({ f, same: pick(model.state) === pick(fresh.state), shown: replay.shown,
      rebuilds: replay.rebuilds });
  }
  return out;
}"""


def test_every_seek_shows_the_state_a_fresh_model_has_at_that_time(page: Any) -> None:
    fixture = Path(__file__).resolve().parent / "fixtures" / "recorded_pingpong_late_send.json"
    events = json.loads(fixture.read_text("utf-8"))
    out = page.evaluate(SEEKS, events)
    assert all(step["same"] for step in out), out
    shown = [step["shown"] for step in out]
    assert shown[0] == len(events) and shown[-1] == len(events)
    assert 0 < shown[1] < shown[2] < len(events), "the middle shows part of the run"
    # Forward seeks only add events: a rebuild happens when the scrubber goes back.
    assert [step["rebuilds"] for step in out] == [1, 2, 2, 2, 3, 4, 4]


UNMATCHED = """async (events) => {
  const { createRunModel } = await import('/static/js/model.js');
  const summary = (s) => ({ delivered: s.delivered,
    tokens: Object.values(s.tokens).map((tk) => [tk.seq, tk.status, tk.fromPid, tk.toPid,
      tk.recvSeq, tk.preview]),
    queued: Object.values(s.pipes).map((p) => Object.values(p.lanes).map((l) => l.tokens.length)),
  });
  // Live, a receive recorded before its send reaches the page before the analysis matched it.
  const bare = events.map(({ match, latency_ns, ...rest }) => rest);
  const live = createRunModel();
  live.apply(bare);
  const recorded = createRunModel();
  recorded.apply(events);
  return { live: summary(live.state), recorded: summary(recorded.state) };
}"""


def test_a_receive_seen_before_its_send_leaves_no_message_queued(page: Any) -> None:
    fixture = Path(__file__).resolve().parent / "fixtures" / "recorded_pingpong_late_send.json"
    events = json.loads(fixture.read_text("utf-8"))
    out = page.evaluate(UNMATCHED, events)
    assert out["live"]["queued"] == [[0, 0]], "nothing stays queued after the exchange"
    assert out["live"] == out["recorded"]
