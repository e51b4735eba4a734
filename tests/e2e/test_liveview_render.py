"""The live view's canvas and sequence chart in chromium: drawn fixtures, floods, motion."""

import itertools
from typing import Any

import pytest

from tests.e2e.liveview import SHOTS, apply, call, fixture, pipe_event

sync_api = pytest.importorskip("playwright.sync_api")

pytestmark = pytest.mark.e2e


RENDER = """async ({ events, cut }) => {
  const { createRunModel } = await import('/static/js/model.js');
  const { createLiveView } = await import('/static/js/render.js');
  const host = document.getElementById('host');
  host.innerHTML = '';
  const model = createRunModel();
  model.apply(cut ? events.slice(0, cut) : events);
  window.clicked = [];
  const onTokenClick = (tk) => window.clicked.push(tk.seq);
  const view = createLiveView(host, { t: (k) => k, onTokenClick });
  for (let f = 0; f < 60; f++) view.update(model.state, 5000 + f * 16);
  window.view = view;
  return { hits: view.hits(), data: { ...view.element.dataset } };
}"""


@pytest.mark.parametrize(
    ("name", "cut"),
    [
        ("pingpong", 12),
        ("pingpong", 0),
        ("corrupt", 0),
        ("deadlock", 0),
        ("closed", 0),
        ("pipeline", 0),
        ("recorded_race", 100),
    ],
)
def test_live_view_draws_a_fixture_and_a_click_opens_the_message(
    lv_page: Any, name: str, cut: int
) -> None:
    events = fixture(name)
    out = lv_page.evaluate(RENDER, {"events": events, "cut": cut})
    SHOTS.mkdir(exist_ok=True)
    lv_page.locator("#host").screenshot(path=str(SHOTS / f"liveview-{name}-{cut or 'end'}.png"))
    state = apply(lv_page, events[:cut] if cut else events)
    shown = {h["seq"] for h in out["hits"]}
    for pipe in state["pipes"].values():
        for lane in pipe["lanes"].values():
            # Each lane shows its oldest messages (all of them when they fit), never a gap.
            drawn = [s for s in lane["tokens"] if s in shown]
            assert drawn == lane["tokens"][: len(drawn)]
            assert bool(drawn) == bool(lane["tokens"])
            if len(lane["tokens"]) <= 4:
                assert drawn == lane["tokens"]
    every = [s for p in state["pipes"].values() for ln in p["lanes"].values() for s in ln["tokens"]]
    assert shown <= set(every)
    assert out["data"]["deadlock"] == ("true" if state["deadlock"] else "false")
    if out["hits"]:
        box = lv_page.locator("#host canvas").bounding_box()
        hit = out["hits"][0]
        lv_page.mouse.click(box["x"] + hit["x"], box["y"] + hit["y"])
        assert lv_page.evaluate("window.clicked") == [hit["seq"]]


def test_live_view_aggregates_a_flooded_lane(lv_page: Any) -> None:
    pipe = pipe_event(duplex=True, capacity=65536, name="flood")
    attach = {"run": "r1", "seq": 2, "kind": "attach", "t": 1, "pid": 2, "process": "P2"}
    attach |= {"pipe": "1.1", "pipe_name": "flood", "end": "b"}
    sends = [call(s, 1, "a", "send", nbytes=64, preview=str(s)) for s in range(3, 5003)]
    out = lv_page.evaluate(RENDER, {"events": [pipe, attach, *sends], "cut": 0})
    lv_page.locator("#host").screenshot(path=str(SHOTS / "liveview-flood.png"))
    assert 3 <= len(out["hits"]) <= 40
    assert [h["seq"] for h in out["hits"]] == list(range(3, 3 + len(out["hits"])))


def test_sequence_chart_draws_an_arrow_per_message(lv_page: Any) -> None:
    events = fixture("corrupt")
    out = lv_page.evaluate(
        """async (events) => {
          const { createRunModel } = await import('/static/js/model.js');
          const { createSequenceChart } = await import('/static/js/seqchart.js');
          const host = document.getElementById('host');
          host.innerHTML = '';
          const model = createRunModel();
          model.apply(events);
          const chart = createSequenceChart(host, { t: (k) => k });
          chart.update(model.state);
          const seqs = (sel) => [...host.querySelectorAll(sel)].map((g) => Number(g.dataset.seq));
          const names = [...host.querySelectorAll('.seq-name')].map((n) => n.textContent);
          return { all: seqs('.seq-msg'), corrupt: seqs('.seq-corrupt'),
                   queued: seqs('.seq-queued'), names };
        }""",
        events,
    )
    lv_page.locator("#host").screenshot(path=str(SHOTS / "seqchart-corrupt.png"))
    sends = [e["seq"] for e in events if e.get("op") == "send" and e.get("phase") == "end"]
    assert sorted(out["all"]) == sends
    assert out["corrupt"] == [next(e["match"] for e in events if e.get("corrupt"))]
    assert out["queued"] == [sends[-1]]
    assert out["names"] == ["MainProcess", "Writer-1", "Writer-2"]


def test_a_sent_message_slides_from_the_sender_to_the_head_of_the_queue(lv_page: Any) -> None:
    events = fixture("pingpong")
    cut = next(i for i, e in enumerate(events) if e.get("op") == "send") + 1
    out = lv_page.evaluate(
        """async (events) => {
          const { createRunModel } = await import('/static/js/model.js');
          const { createLiveView } = await import('/static/js/render.js');
          const host = document.getElementById('host');
          host.innerHTML = '';
          const model = createRunModel();
          model.apply(events);
          const view = createLiveView(host, { t: (k) => k });
          const xs = [];
          for (let f = 0; f <= 40; f++) {
            view.update(model.state, 1000 + f * 16);
            xs.push(view.hits()[0].x);
          }
          return { xs, width: host.clientWidth };
        }""",
        events[:cut],
    )
    xs = out["xs"]
    # Process-1 (the sender, end a) is drawn on the left, Process-2 on the right.
    assert xs[0] < out["width"] / 2 < xs[-1]
    assert all(b >= a for a, b in itertools.pairwise(xs))
    assert xs[-1] - xs[-2] < 0.5  # arrived: it rests at the head of the queue
