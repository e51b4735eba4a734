"""A lane's queue, the form, the source and the sequence chart as a laptop screen shows them."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from tests.e2e.conftest import wait_for
from tests.e2e.test_page import run_to_end

FRAME = 16_384  # the back-pressure scenario's message size

LAYOUT = """async ({ sizes, room, chip, total }) => {
  const { layoutQueue } = await import('/static/js/layout.js');
  const { tokenWidth } = await import('/static/js/render_tokens.js');
  const widths = sizes.map(tokenWidth);
  return { widths, ...layoutQueue(widths, room, () => chip, total ?? widths.length) };
}"""


def lay_out(page: Any, sizes: list[int], room: float, chip: float = 50) -> dict[str, Any]:
    out: dict[str, Any] = page.evaluate(LAYOUT, {"sizes": sizes, "room": room, "chip": chip})
    return out


def edges(slot: dict[str, float]) -> tuple[float, float]:
    return slot["d"] - slot["w"] / 2, slot["d"] + slot["w"] / 2


def test_three_full_frames_queue_one_behind_the_other_in_a_short_lane(page: Any) -> None:
    out = lay_out(page, [FRAME] * 3, room=196)  # a laptop's back-pressure tube
    assert (len(out["slots"]), out["more"], out["chip"]) == (3, 0, None)
    spans = [edges(s) for s in out["slots"]]
    # Oldest first, from the reading end (d = 0) back, none over the next, all in the lane.
    assert spans[0][0] == pytest.approx(0)
    assert all(a[1] < b[0] for a, b in itertools.pairwise(spans))
    assert spans[-1][1] <= 196
    # They shrank alike: the lane shows the sizes relative to each other still.
    assert len({round(s["w"], 6) for s in out["slots"]}) == 1
    assert out["slots"][0]["w"] < out["widths"][0]


def test_messages_that_fit_keep_their_own_width(page: Any) -> None:
    out = lay_out(page, [1, 100, FRAME], room=600)
    assert [s["w"] for s in out["slots"]] == out["widths"]
    assert out["chip"] is None


def test_only_what_does_not_fit_goes_in_a_chip_clear_of_every_message(page: Any) -> None:
    out = lay_out(page, [64] * 40, room=300, chip=50)
    slots, chip = out["slots"], out["chip"]
    assert chip is not None and out["more"] == 40 - len(slots) > 0
    assert edges(slots[-1])[1] < chip["d"] - chip["w"] / 2, "the chip overlaps no message"
    assert chip["d"] + chip["w"] / 2 <= 300
    # As many as fit: one more, at the narrowest, would not leave the chip its room.
    narrowest = min(s["w"] for s in slots)
    assert (len(slots) + 1) * (narrowest + 3) + chip["w"] > 300


SHOW_QUEUE = """async ({ events, width, height }) => {
  const { createRunModel } = await import('/static/js/model.js');
  const { createLiveView } = await import('/static/js/render.js');
  const host = document.createElement('div');
  host.style.cssText = `position:fixed;left:0;top:0;width:${width}px;height:${height}px;z-index:9`;
  document.body.append(host);
  const model = createRunModel();
  model.apply(events);
  const view = createLiveView(host, { t: (k) => k });
  for (let f = 0; f < 90; f++) view.update(model.state, 1000 + f * 16);
  const out = { hits: view.hits(), shown: view.element.dataset.tokensShown };
  view.destroy();
  host.remove();
  return out;
}"""


def event(seq: int, kind: str, pid: int, **extra: Any) -> dict[str, Any]:
    base = {"run": "r1", "seq": seq, "kind": kind, "t": seq * 1_000_000, "pid": pid}
    return base | {"process": f"P{pid}", "pipe": "1.1", "pipe_name": "bp"} | extra


def back_pressure_start() -> list[dict[str, Any]]:
    """A one-way pipe: P2 writes end b, P3 reads end a."""
    pipe = event(1, "pipe", 1, duplex=False, capacity=65_536, transport="os.pipe")
    return [pipe, event(2, "attach", 2, end="b"), event(3, "attach", 3, end="a")]


def send(seq: int) -> dict[str, Any]:
    preview = "b'" + f"\\x{seq % 256:02x}" * 4 + "...'"
    return event(seq, "call", 2, end="b", op="send", phase="end", nbytes=FRAME, preview=preview)


def recv(seq: int) -> dict[str, Any]:
    return event(seq, "call", 3, end="a", op="recv", phase="end", nbytes=FRAME)


def test_a_laptop_tube_shows_all_three_queued_frames_oldest_at_the_reader(page: Any) -> None:
    events = back_pressure_start() + [send(s) for s in (4, 5, 6)]
    # The live view's size on a 1366 × 768 screen.
    out = page.evaluate(SHOW_QUEUE, {"events": events, "width": 611, "height": 529})
    assert out["shown"] == "3"
    hits = out["hits"]
    assert [h["seq"] for h in hits] == [4, 5, 6]
    # The writer is drawn on the left, the reader on the right: the oldest is the rightmost.
    assert hits[0]["x"] > hits[1]["x"] > hits[2]["x"]


# Records, frame by frame, the rounded rectangles filled (messages: 20 px high, the chip: 16)
# and the texts written, in the canvas's pixels, while messages queue, leave and enter.
ANIMATE = """async ({ start, steps, width, height }) => {
  const { createRunModel } = await import('/static/js/model.js');
  const { createLiveView } = await import('/static/js/render.js');
  const P = CanvasRenderingContext2D.prototype;
  const orig = { beginPath: P.beginPath, arcTo: P.arcTo, fill: P.fill, fillText: P.fillText };
  let pts = [];
  let frame = [];
  P.beginPath = function (...a) { pts = []; return orig.beginPath.apply(this, a); };
  P.arcTo = function (...a) {
    pts.push([a[0], a[1], this.getTransform().transformPoint(new DOMPoint(a[0], a[1]))]);
    return orig.arcTo.apply(this, a);
  };
  P.fill = function (...a) {
    const local = pts.map((p) => p[1]);
    const h = pts.length === 4 ? Math.max(...local) - Math.min(...local) : 0;
    if ((Math.abs(h - 20) < 0.01 || Math.abs(h - 16) < 0.01) && this.globalAlpha > 0.2) {
      const xs = pts.map((p) => p[2].x);
      const ys = pts.map((p) => p[2].y);
      frame.push({ kind: h > 18 ? 'message' : 'chip', x0: Math.min(...xs), x1: Math.max(...xs),
        y: (Math.min(...ys) + Math.max(...ys)) / 2 });
    }
    return orig.fill.apply(this, a);
  };
  P.fillText = function (text, x, y, ...rest) {
    if (this.font.includes('10px') && this.globalAlpha > 0.2) {
      const at = this.getTransform().transformPoint(new DOMPoint(x, y));
      const w = this.measureText(text).width;
      const x0 = this.textAlign === 'center' ? at.x - w / 2 : at.x;
      frame.push({ kind: 'text', text, x0, x1: x0 + w, y: at.y });
    }
    return orig.fillText.call(this, text, x, y, ...rest);
  };
  try {
    const host = document.createElement('div');
    host.style.cssText = `position:fixed;left:0;top:0;width:${width}px;height:${height}px`;
    document.body.append(host);
    const model = createRunModel();
    model.apply(start);
    const view = createLiveView(host, { t: (k) => k });
    const frames = [];
    let now = 1000;
    for (const [events, count] of steps) {
      model.apply(events);
      for (let f = 0; f < count; f++) {
        frame = [];
        view.update(model.state, (now += 16));
        frames.push(frame);
      }
    }
    view.destroy();
    host.remove();
    return frames;
  } finally {
    Object.assign(P, orig);
  }
}"""


def clash(p: dict[str, Any], q: dict[str, Any]) -> bool:
    """Two things drawn on one lane that share more than half a pixel of its length."""
    shared = float(min(p["x1"], q["x1"]) - max(p["x0"], q["x0"]))
    return bool(abs(p["y"] - q["y"]) < 8 and shared > 0.5)


def overlaps(frame: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Messages or chips drawn over each other, and texts written over each other."""
    shapes = [d for d in frame if d["kind"] != "text"]
    texts = [d for d in frame if d["kind"] == "text"]
    return [
        (p, q)
        for group in (shapes, texts)
        for p, q in itertools.combinations(group, 2)
        if clash(p, q)
    ]


def test_messages_queueing_leaving_and_entering_never_overlap(page: Any) -> None:
    start = back_pressure_start() + [send(s) for s in range(4, 16)]  # more than fit: a chip
    seq = itertools.count(16)
    steps: list[tuple[list[dict[str, Any]], int]] = [([], 40)]
    # The slow consumer takes one, the producer fills the gap, every 120 ms, then every 64 ms.
    steps += [([recv(next(seq)), send(next(seq))], 8) for _ in range(6)]
    steps += [([recv(next(seq))], 4) for _ in range(8)]
    steps += [([], 40)]
    frames = page.evaluate(ANIMATE, {"start": start, "steps": steps, "width": 611, "height": 529})
    assert any(d["kind"] == "chip" for d in frames[0]), "twelve full frames need a chip"
    bad = [(i, pair) for i, frame in enumerate(frames) for pair in overlaps(frame)]
    assert not bad, f"{len(bad)} overlaps, the first in frame {bad[0][0]}: {bad[0][1]}"
    labels = [d for frame in frames for d in frame if d["kind"] == "text"]
    assert labels, "the messages are labelled where there is room"


# -- a laptop screen: the form, the source and the sequence chart -------------------------


FORM = """() => {
  const form = document.querySelector('[data-params-form]');
  const box = form.getBoundingClientRect();
  const cards = document.querySelector('[data-gallery-cards]').getBoundingClientRect();
  const fields = [...form.querySelectorAll('[data-field]')].map((f) => {
    const r = f.getBoundingClientRect();
    return { name: f.dataset.field, top: r.top, bottom: r.bottom };
  });
  return { top: box.top, bottom: box.bottom, scroll: form.scrollHeight, client: form.clientHeight,
    fields, cards: cards.height };
}"""


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_the_custom_form_shows_all_its_fields_on_a_laptop(page: Any, lang: str) -> None:
    if lang == "zh":
        page.click("[data-action='lang']")
        wait_for(page, "window.pipescope.state().ui.lang", lambda v: v == "zh", what="中文")
    page.click('[data-pick="custom"]')
    form = wait_for(page, FORM, lambda f: len(f["fields"]) == 9, what="custom's nine fields")
    assert form["scroll"] <= form["client"] + 1, f"the form scrolls: {form}"
    for field in form["fields"]:
        assert form["top"] <= field["top"] and field["bottom"] <= form["bottom"], field
    assert form["cards"] >= 90, "a card still shows above the form"


# The parameter inputs whose value does not fit them: a number's digits past its box, a
# choice's text past the room its select leaves beside the arrow. With `atBound`, each
# number is first set to its bound and each select to its longest choice.
CUT_FIELDS = """(atBound) => [...document.querySelectorAll('[data-params-form] [data-field]')]
  .map((f) => {
    const el = f.querySelector('input, select');
    if (!el || el.type === 'checkbox') return null;
    if (el.tagName === 'SELECT') {
      if (atBound) {
        el.selectedIndex = [...el.options].reduce(
          (best, o, i) => (o.text.length > el.options[best].text.length ? i : best), 0);
      }
      const probe = document.createElement('span');
      probe.style.cssText = 'position:absolute;white-space:pre;font:' + getComputedStyle(el).font;
      probe.textContent = el.options[el.selectedIndex].text;
      document.body.append(probe);
      const need = probe.getBoundingClientRect().width + 26; // the arrow and the padding
      probe.remove();
      return { name: f.dataset.field, value: probe.textContent, need, have: el.clientWidth };
    }
    if (atBound && el.max) el.value = el.max;
    return { name: f.dataset.field, value: el.value, need: el.scrollWidth, have: el.clientWidth };
  }).filter((x) => x && x.need > x.have + 0.5)"""


@pytest.mark.parametrize("at_bound", [False, True], ids=["defaults", "bounds"])
def test_every_parameter_shows_its_whole_value_on_a_laptop(page: Any, at_bound: bool) -> None:
    """Deadlock's size read "104857" for 1,048,576 in a box 82 px wide."""
    page.wait_for_selector('[data-pick="custom"]')  # the cards come with the catalogue
    picks = page.evaluate(
        "[...document.querySelectorAll('[data-pick]')].map((n) => n.dataset.pick)"
    )
    assert {"deadlock", "custom", "flood"} <= set(picks), picks
    cut = {}
    for pick in picks:
        page.click(f'[data-pick="{pick}"]')  # the form is built as the card is picked
        cut[pick] = page.evaluate(CUT_FIELDS, at_bound)
    assert {pick: fields for pick, fields in cut.items() if fields} == {}


SOURCE = """() => {
  const panel = document.getElementById('panel-source');
  const right = panel.getBoundingClientRect().right;
  const cut = [...panel.querySelectorAll('.source-lines code')]
    .filter((c) => c.getBoundingClientRect().right > right + 0.5 || c.scrollWidth > c.clientWidth)
    .map((c) => c.textContent);
  return { scroll: panel.scrollWidth, client: panel.clientWidth, cut,
    lines: panel.querySelectorAll('.source-lines li').length };
}"""


# Where each wrapped line's code (after its indentation) and its last row begin.
WRAPPED = """() => [...document.querySelectorAll('.source-lines code')]
  .filter((c) => c.getBoundingClientRect().height > 20).map((c) => {
    const all = document.createRange();
    all.selectNodeContents(c);
    const lead = document.createRange();
    const at = /^ */.exec(c.textContent)[0].length;
    lead.setStart(c.firstChild, at);
    lead.setEnd(c.firstChild, at + 1);
    return { text: c.textContent, code: lead.getBoundingClientRect().left,
      rest: [...all.getClientRects()].at(-1).left };
  })"""


def test_source_lines_are_read_in_full_without_scrolling_sideways(page: Any) -> None:
    page.click('[data-pick="custom"]')  # the longest source lines
    source = wait_for(page, SOURCE, lambda s: s["lines"] > 20, what="custom's source")
    assert source["cut"] == []
    assert source["scroll"] <= source["client"], source
    # A wrapped line goes on under its own start, further in than the line's indentation.
    wrapped = page.evaluate(WRAPPED)
    assert wrapped, "some line of custom's source wraps in the panel"
    for line in wrapped:
        assert line["rest"] > line["code"], line


SEQUENCE = """() => {
  const body = document.querySelector('.seqchart-body');
  const box = body.getBoundingClientRect();
  const lines = [...body.querySelectorAll('.seq-life')].map((l) => l.getBoundingClientRect().x);
  const names = [...document.querySelectorAll('.seqchart-head .seq-name')].map((n) => {
    const r = n.getBoundingClientRect();
    return { left: r.left, right: r.right };
  });
  return { left: box.left, right: box.right, scroll: body.scrollWidth, client: body.clientWidth,
    lines, names };
}"""


def test_every_fan_in_lifeline_and_name_shows_in_the_sequence_panel(page: Any) -> None:
    run_to_end(page, "fan-in")
    page.click("#tab-sequence")
    chart = wait_for(page, SEQUENCE, lambda c: len(c["lines"]) == 5, what="five lifelines")
    assert chart["scroll"] <= chart["client"], "the chart needs no sideways scroll"
    assert all(chart["left"] < x < chart["right"] for x in chart["lines"]), chart
    names = chart["names"]
    assert all(chart["left"] <= n["left"] and n["right"] <= chart["right"] for n in names)
    assert all(a["right"] <= b["left"] for a, b in itertools.pairwise(names)), names


# -- the sequence chart's time column ------------------------------------------------------

TIMES = """async (events) => {
  const { createRunModel } = await import('/static/js/model.js');
  const { createSequenceChart } = await import('/static/js/seqchart.js');
  const host = document.createElement('div');
  host.style.cssText = 'position:fixed;left:0;top:0;width:440px;height:400px;z-index:9';
  document.body.append(host);
  const model = createRunModel();
  model.apply(events);
  const chart = createSequenceChart(host, { t: (k) => k });
  chart.update(model.state);
  const out = [...host.querySelectorAll('.seq-time')].map((t) => ({
    text: t.textContent,
    title: t.parentElement.querySelector(':scope > title')?.textContent ?? null,
  }));
  chart.destroy();
  host.remove();
  return out;
}"""


def test_the_time_column_never_runs_backwards(page: Any) -> None:
    def at(ev: dict[str, Any], ms: float) -> dict[str, Any]:
        return ev | {"t": int(ms * 1e6)}

    # The receive is stamped by the reader's clock before the writer's send returned.
    events = [at(ev, 0) for ev in back_pressure_start()] + [
        at(event(4, "call", 2, end="b", op="send", phase="begin"), 0),
        at(send(5), 348.3),
        at(recv(6) | {"match": 5}, 348.1),
        at(send(7), 357.9),
        at(recv(8) | {"match": 7}, 358.0),
    ]
    times = page.evaluate(TIMES, events)
    shown = [float(t["text"].split()[0]) for t in times if t["text"].endswith("ms")]
    assert shown == sorted(shown), times
    assert len(times) == 4
    back = [t for t in times if not t["text"].endswith("ms")]
    assert [t["title"] for t in back] == [
        "348.1 ms · stamped before the row above by its own process's clock: rows follow "
        "cause, a send above its receive"
    ], "its own time, and why it is not shown, are a hover away"


FAN_IN = """async (events) => {
  const { createRunModel } = await import('/static/js/model.js');
  const { layoutRun, processOrder } = await import('/static/js/layout.js');
  const model = createRunModel();
  model.apply(events);
  const { boxes } = layoutRun(model.state, 800, 500);
  const named = Object.values(model.state.processes).map((p) => [p.name, boxes[p.pid]]);
  return { boxes: Object.fromEntries(named), chart: processOrder(model.state).map((p) => p.name) };
}"""


def test_a_column_lists_its_processes_by_name_as_the_sequence_chart_does(page: Any) -> None:
    # Three producers, each writing into a pipe of its own that one consumer reads; they
    # boot out of order (producer-2 first), as a fork server's children may.
    events: list[dict[str, Any]] = []

    def add(kind: str, pid: int, process: str, **fields: Any) -> None:
        seq = len(events) + 1
        events.append({"run": "r1", "seq": seq, "kind": kind, "t": seq * 1000, "pid": pid})
        events[-1] |= {"process": process, **fields}

    for number in range(3):
        add("pipe", 1, "MainProcess", pipe=f"1.{number}", pipe_name=f"p{number}", duplex=False)
    for number in (2, 0, 1):
        add("attach", 10 + number, f"producer-{number}", pipe=f"1.{number}", end="b")
    for number in range(3):
        add("attach", 20, "consumer", pipe=f"1.{number}", end="a")
        for end in ("a", "b"):
            add("call", 1, "MainProcess", pipe=f"1.{number}", end=end, op="close", phase="end")
    out = page.evaluate(FAN_IN, events)
    boxes = out["boxes"]
    producers = [f"producer-{number}" for number in range(3)]
    assert len({boxes[name]["x"] for name in producers}) == 1, "the producers share a column"
    assert boxes["consumer"]["x"] > boxes["producer-0"]["x"]
    tops = [boxes[name]["y"] for name in producers]
    assert tops == sorted(tops), f"expected producer-0, -1, -2 from the top, got y {tops}"
    assert [name for name in out["chart"] if name in producers] == producers
