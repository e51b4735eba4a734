"""A page behind a flood asks the server for thinned batches, and still ends on the right totals."""

from __future__ import annotations

import json
import re
import urllib.request
from typing import Any

import pytest

from tests.e2e.conftest import flood_to_the_end, wait_for

MESSAGES = 100_000  # four events each: several times what the page takes in a second


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.load(response)


def number(text: str) -> int:
    return int(text.replace(",", ""))


def window_banner(state: dict[str, Any]) -> str | None:
    """The text of the page's banner saying what it left out, or None without one."""
    texts = [b["text"] for b in state["banners"] if b["kind"] == "window"]
    assert len(texts) <= 1, state["banners"]
    return texts[0] if texts else None


def banner_count(state: dict[str, Any]) -> int | None:
    """The count of left-out events the page's banner states, or None without one."""
    text = window_banner(state)
    said = re.search(r"left out ([\d,]+) calls and output lines", text) if text else None
    return number(said.group(1)) if said else None


@pytest.mark.parametrize("slowdown", [1, 6])
def test_a_thinned_flood_ends_with_the_run_totals_and_the_banner_counting_what_was_left_out(
    page: Any, live_server: str, slowdown: int
) -> None:
    # Six times slower (Chromium's CPU throttling), the page takes its first snapshot when
    # the flood is well on (a snapshot of its latest calls only), and its socket's worker
    # thins what waits for it as well as the server: every count must still add up.
    if slowdown > 1:
        cdp = page.context.new_cdp_session(page)
        cdp.send("Emulation.setCPUThrottlingRate", {"rate": slowdown})
    state = flood_to_the_end(page, MESSAGES)
    summary = get_json(f"{live_server}/api/runs/{state['run']}")
    assert (state["status"], summary["state"]) == ("completed", "completed")
    # The server left most of the flood out for this page: it asked for thinned batches.
    assert state["skipped"]["server"] > 0, state["skipped"]
    held = state["window"]
    assert held is not None
    assert held["skipped"] == state["skipped"]["server"] + state["skipped"]["page"]
    assert state["counts"]["events"] + held["skipped"] == summary["events"]

    # The banner's count is redrawn at most once a second: it comes to the model's.
    state = wait_for(
        page,
        "window.pipescope.state()",
        lambda s: banner_count(s) == held["skipped"],
        what=f"the banner to say {held['skipped']:,} calls and output lines were left out",
    )
    # The run is over, so the page will not catch up: the banner no longer says it will,
    # and still points to the record, which keeps every event.
    text = window_banner(state) or ""
    assert "catches up" not in text and "The run has ended" in text, text
    assert "Nothing is lost: the run's record keeps every event (Export)." in text, text
    page.click("[data-action='lang']")
    zh = wait_for(
        page,
        "window.pipescope.state()",
        lambda s: "运行已结束" in (window_banner(s) or ""),
        what="the banner in Chinese",
    )
    text = window_banner(zh) or ""
    assert f"略去了 {held['skipped']:,} 个调用和输出行" in text and "跟上" not in text, text
    assert "运行记录保留了每个事件（导出）。" in text, text
    page.click("[data-action='lang']")

    # The run's end is whole: processes, ends, output, and the totals the panels show.
    writer = next(p for p in state["processes"] if p["name"] == "writer")
    assert writer["exited"] and writer["exitcode"] == 0
    assert any(line.startswith(f"writer: {MESSAGES} frames") for line in writer["lines"]), writer
    reader = next(p for p in state["processes"] if p["name"] == "reader")
    assert f"reader: {MESSAGES} frames" in reader["lines"], reader
    assert [p["ends"] for p in state["pipes"]] == [{"a": "closed", "b": "closed"}]
    # The reader read every frame: none is left in the tube, though most receives were not seen.
    assert [p["queued"] for p in state["pipes"]] == [{"b>a": 0}]
    assert state["verdicts"] == []
    page.click("[data-tab='stats']")
    shown = wait_for(
        page,
        "document.querySelector(\"[data-stat='events'] dd\")?.textContent ?? ''",
        lambda text: text != "" and number(text) == summary["events"],
        what="the statistics to count every event of the run",
    )
    assert number(shown) == summary["events"]
    page.click("[data-tab='events']")
    # What the log holds, what it let go and what never reached the page: every event. The log
    # is redrawn on the frame after the switch, so the test waits for that drawing.
    log = wait_for(
        page,
        "({...document.querySelector('[data-eventlog]').dataset})",
        lambda data: (
            "total" in data and int(data["total"]) + int(data["skipped"]) == summary["events"]
        ),
        what=f"the event log to count all {summary['events']:,} events",
    )
    assert int(log["skipped"]) >= held["skipped"], log


BANNER = """async () => {
  const { createBanners } = await import('/static/js/banner.js');
  const { createI18n } = await import('/static/js/i18n.js');
  const i18n = createI18n('en');
  const t = i18n.t;
  const banners = createBanners(document.createElement('div'), { t });
  const text = () => banners.element.querySelector('[data-banner="window"] li')?.textContent ?? '';
  const seen = [];
  banners.update({ status: 'running' });
  banners.partial(t('window.behind', { count: (12345).toLocaleString('en-US') }));
  seen.push(text());
  banners.update({ status: 'completed' });
  seen.push(text());
  i18n.setLang('zh');
  banners.refresh();
  seen.push(text());
  banners.partial('showing 2,000 of 9,000 events: 7,000 older calls and output lines are kept');
  seen.push(text());
  return seen;
}"""


def test_the_left_out_banner_promises_catching_up_only_while_the_run_goes(page: Any) -> None:
    running, ended, ended_zh, server_notice = page.evaluate(BANNER)
    assert "left out 12,345 calls and output lines" in running
    assert running.endswith("Once the page catches up, it shows every event again."), running
    assert "left out 12,345 calls and output lines" in ended
    assert "catches up" not in ended and "The run has ended" in ended, ended
    assert ended.endswith("Nothing is lost: the run's record keeps every event (Export)."), ended
    # A change of language redraws it in the new one, the count kept.
    assert "略去了 12,345 个调用和输出行" in ended_zh and "运行已结束" in ended_zh, ended_zh
    assert "跟上" not in ended_zh and ended_zh.endswith("（导出）。"), ended_zh
    # The server's own words about a window are shown as they are.
    assert server_notice.endswith("7,000 older calls and output lines are kept"), server_notice


THINNING = """async () => {
  const { createThinning } = await import('/static/js/socket_worker.js');
  const thinning = createThinning({ at: 1000, keep: 200, calmMs: 500 });
  const frame = (skipped) => ({ type: 'events', run: 'r1', events: [], skipped });
  return [
    thinning.take(frame(0), 900, 0),       // keeping up
    thinning.take({ type: 'runs' }, 5000, 10),
    thinning.take(frame(0), 5000, 20),     // behind: ask for thinned batches
    thinning.take(frame(0), 5000, 30),     // asked already
    thinning.take(frame(3000), 100, 100),  // the server still leaves events out
    thinning.take(frame(0), 100, 400),     // nothing left out, not for long yet
    thinning.take(frame(0), 100, 600),     // calm for half a second: every event again
    thinning.take(frame(0), 100, 700),
    thinning.take(frame(0), 5000, 800),    // behind again
    thinning.forget('r1'),                 // a snapshot: the run starts over
    thinning.take(frame(400), 100, 900),   // thinned still by the server: noted
    thinning.take(frame(0), 100, 1500),    // calm: every event again
  ];
}"""


def test_the_page_asks_for_thinned_batches_when_behind_and_for_every_event_when_calm(
    page: Any,
) -> None:
    asks = page.evaluate(THINNING)
    assert asks == [
        None,
        None,
        {"type": "thin", "run": "r1", "keep": 200},
        None,
        None,
        None,
        {"type": "thin", "run": "r1", "keep": None},
        None,
        {"type": "thin", "run": "r1", "keep": 200},
        True,
        None,
        {"type": "thin", "run": "r1", "keep": None},
    ]


GAP = """async () => {
  const { createRunModel } = await import('/static/js/model.js');
  const model = createRunModel();
  const call = (seq, end, op, pid, extra = {}) => ({ seq, kind: 'call', t: 1000 + seq, pipe: 'p1',
    pipe_name: 'p', end, op, phase: 'end', pid, process: `P${pid}`, nbytes: 5, ...extra });
  model.apply([
    { seq: 1, kind: 'pipe', t: 1000, pid: 10, process: 'P10', pipe: 'p1', pipe_name: 'p',
      duplex: true, capacity: 65536 },
    call(2, 'a', 'send', 10), call(3, 'a', 'send', 10),
    // 4, the third send, and the receives of the first two were left out to keep up
    call(5, 'b', 'recv', 11, { match: 4 }),
  ]);
  const lane = model.state.pipes.p1.lanes['a>b'];
  return { tokens: lane.tokens, queued: lane.queued, received: lane.received,
    window: model.state.window };
}"""


def test_a_receive_whose_send_was_left_out_empties_its_lane_up_to_that_send(page: Any) -> None:
    lane = page.evaluate(GAP)
    # The frames sent before the one received were read before it (FIFO): none is left queued.
    assert (lane["tokens"], lane["queued"], lane["received"]) == ([], 0, 3)
    assert lane["window"] == {"from": 5, "skipped": 1}
