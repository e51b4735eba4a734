"""The live view's modules (model, playback, token detail, canvas, sequence chart) in chromium."""

import functools
import http.server
import itertools
import json
import pickle
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e import synthetic

sync_api = pytest.importorskip("playwright.sync_api")

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
SHOTS = Path("/tmp/shots")
BLANK = (
    b"<!doctype html><html><head><meta charset='utf-8'>"
    b"<link rel='stylesheet' href='/static/css/liveview.css'></head>"
    b"<body style='margin:0;font-family:sans-serif'>"
    b"<div id='host' style='width:900px;height:520px'></div></body></html>"
)


class StaticOnly(http.server.SimpleHTTPRequestHandler):
    """Serves a blank page at / and the repository's static/ directory, nothing else."""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        if self.path == "/":
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(BLANK)))
            self.end_headers()
            self.wfile.write(BLANK)
        elif self.path.startswith("/static/"):
            super().do_GET()
        else:
            self.send_error(404)


def fixture(name: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = json.loads((FIXTURES / f"{name}.json").read_text("utf-8"))
    return events


@pytest.fixture(scope="module")
def lv_origin() -> Iterator[str]:
    handler = functools.partial(StaticOnly, directory=str(REPO))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="liveview-static", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def lv_page(browser: Any, lv_origin: str) -> Iterator[Any]:
    # The session's chromium (conftest.py): one Playwright per test session.
    page = browser.new_page(viewport={"width": 920, "height": 540}, device_scale_factor=2)
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.goto(f"{lv_origin}/")
    try:
        yield page
    finally:
        page.close()
    assert errors == [], f"expected no page errors, got {errors}"


APPLY = """async (events) => {
  const { createRunModel } = await import('/static/js/model.js');
  const model = createRunModel();
  model.apply(events);
  return model.state;
}"""


def apply(page: Any, events: list[dict[str, Any]]) -> dict[str, Any]:
    state: dict[str, Any] = page.evaluate(APPLY, events)
    return state


def test_pingpong_messages_are_delivered_in_order_to_the_other_end(lv_page: Any) -> None:
    events = fixture("pingpong")
    state = apply(lv_page, events)
    sends = [e["seq"] for e in events if e.get("op") == "send" and e.get("phase") == "end"]
    assert state["delivered"] == sends
    first, second = (state["tokens"][str(s)] for s in sends)
    assert (first["fromPid"], first["toPid"], first["dir"], first["preview"]) == (
        101,
        102,
        "a>b",
        "'proc1'",
    )
    assert (second["fromPid"], second["toPid"], second["dir"]) == (102, 101, "b>a")
    assert {t["status"] for t in (first, second)} == {"delivered"}
    assert state["status"] == "completed"
    assert state["counts"]["messages"] == 2
    assert state["processes"]["102"]["lines"][0]["text"].endswith("收到 proc1")
    pipe = state["pipes"]["100.1"]
    assert pipe["ends"]["a"]["pids"] == [101] and pipe["ends"]["b"]["pids"] == [102]
    # Every process holding an end exited, so the kernel closed both ends.
    assert (pipe["ends"]["a"]["state"], pipe["ends"]["b"]["state"]) == ("closed", "closed")
    assert all(lane["tokens"] == [] for lane in pipe["lanes"].values())


def test_a_process_waiting_in_recv_is_blocked_and_the_message_queued(lv_page: Any) -> None:
    events = fixture("pingpong")
    cut = next(i for i, e in enumerate(events) if e.get("op") == "send") + 1
    state = apply(lv_page, events[:cut])
    assert state["processes"]["102"]["blocked"]["op"] == "recv"
    assert state["processes"]["101"]["blocked"] is None
    pipe = state["pipes"]["100.1"]
    assert pipe["ends"]["b"]["state"] == "blocked_recv"
    assert pipe["lanes"]["a>b"]["tokens"] == [events[cut - 1]["seq"]]
    assert pipe["lanes"]["a>b"]["queued"] == events[cut - 1]["nbytes"]
    assert pipe["lanes"]["a>b"]["capacity"] == 212992


def pipe_event(
    *, duplex: bool, capacity: int, name: str = "p", transport: str | None = None
) -> dict[str, Any]:
    """The `pipe` event of pipe 1.1, made by process 1 (seq 1)."""
    event = {"run": "r1", "seq": 1, "kind": "pipe", "t": 0, "pid": 1, "process": "P1"}
    event |= {"pipe": "1.1", "pipe_name": name, "duplex": duplex, "capacity": capacity}
    return event if transport is None else event | {"transport": transport}


def call(seq: int, pid: int, end: str, op: str, **extra: Any) -> dict[str, Any]:
    return {
        "run": "r1",
        "seq": seq,
        "kind": "call",
        "t": seq * 1_000_000,
        "pid": pid,
        "process": f"P{pid}",
        "pipe": "1.1",
        "pipe_name": "p",
        "end": end,
        "op": op,
        "phase": "end",
        **extra,
    }


def test_receives_take_the_oldest_frame_or_the_one_the_analysis_matched(lv_page: Any) -> None:
    pipe = pipe_event(duplex=True, capacity=100)
    events = [pipe] + [call(s, 1, "a", "send", nbytes=10, preview=f"m{s}") for s in (2, 3, 4)]
    events += [call(5, 2, "b", "recv", nbytes=10), call(6, 2, "b", "recv", match=4, nbytes=10)]
    state = apply(lv_page, events)
    assert state["delivered"] == [2, 4]
    assert state["pipes"]["1.1"]["lanes"]["a>b"]["tokens"] == [3]
    assert state["pipes"]["1.1"]["lanes"]["a>b"]["queued"] == 10
    assert state["tokens"]["4"]["recvSeq"] == 6


GAUGE = """async (events) => {
  const { createRunModel } = await import('/static/js/model.js');
  const { gaugeOf } = await import('/static/js/model_lanes.js');
  const model = createRunModel();
  model.apply(events);
  const pipe = model.state.pipes['1.1'];
  return gaugeOf(pipe, pipe.lanes['a>b'] ? 'a>b' : 'b>a');
}"""


@pytest.mark.parametrize(
    ("transport", "capacity", "sends", "expected"),
    [
        # A writer of 100-byte objects (104 bytes a frame) blocks after 278 unread ones: its
        # socketpair's kernel counts 768 bytes each against 212,992 (measured on Linux 6).
        ("socketpair", 212_992, 278, {"queued": 28_912, "counted": 213_504, "fill": 1}),
        ("socketpair", 212_992, 10, {"queued": 1_040, "counted": 7_680, "fill": 7_680 / 212_992}),
        # A pipe counts the payload alone.
        ("os.pipe", 65_536, 10, {"queued": 1_040, "counted": 1_040, "fill": 1_040 / 65_536}),
    ],
)
def test_the_gauge_fills_as_the_kernel_counts_a_socketpair_or_a_pipe(
    lv_page: Any, transport: str, capacity: int, sends: int, expected: dict[str, float]
) -> None:
    pipe = pipe_event(duplex=transport == "socketpair", capacity=capacity, transport=transport)
    end = "a" if transport == "socketpair" else "b"  # a one-way pipe's writer is b
    events = [pipe] + [call(2 + n, 1, end, "send_bytes", nbytes=104) for n in range(sends)]
    gauge = lv_page.evaluate(GAUGE, events)
    assert gauge["queued"] == expected["queued"]
    assert gauge["counted"] == expected["counted"]
    assert gauge["fill"] == pytest.approx(expected["fill"])
    assert gauge["capacity"] == capacity
    assert gauge["waits"] is False
    # A send that waits: the buffer is full, whatever the frames sent before add up to.
    waiting = call(2 + sends, 1, end, "send_bytes", phase="begin")
    assert lv_page.evaluate(GAUGE, [*events, waiting])["fill"] == 1
    assert lv_page.evaluate(GAUGE, [*events, waiting])["waits"] is True


def test_a_receive_stamped_before_its_send_ended_has_no_negative_latency(lv_page: Any) -> None:
    pipe = pipe_event(duplex=False, capacity=65_536)
    # The send's end is stamped 114 µs after the receive that took its frame.
    send = call(2, 1, "b", "send_bytes", nbytes=10) | {"t": 5_114_000}
    recv = call(3, 2, "a", "recv_bytes", nbytes=10, match=2) | {"t": 5_000_000}
    state = apply(lv_page, [pipe, send, recv])
    assert state["tokens"]["2"]["latencyNs"] == 0
    assert state["pipes"]["1.1"]["lanes"]["b>a"]["latencyNs"] == 0


def test_a_frame_read_into_a_buffer_too_short_leaves_the_lane(lv_page: Any) -> None:
    pipe = pipe_event(duplex=True, capacity=212_992)
    events = [pipe, call(2, 1, "a", "send_bytes", nbytes=25, preview="b'does not fit'")]
    events.append(
        call(
            3, 2, "b", "recv_bytes_into", phase="error", error_type="BufferTooShort",
            error="b'does not fit'", match=2,
        )
    )  # fmt: skip
    state = apply(lv_page, events)
    lane = state["pipes"]["1.1"]["lanes"]["a>b"]
    assert (lane["tokens"], lane["queued"]) == ([], 0)
    assert state["tokens"]["2"]["status"] == "delivered"


def test_a_corrupt_frame_is_flagged_with_its_explanation(lv_page: Any) -> None:
    events = fixture("corrupt")
    state = apply(lv_page, events)
    bad = next(e for e in events if e.get("corrupt"))
    token = state["tokens"][str(bad["match"])]
    assert token["status"] == "delivered"
    assert token["corrupt"] == bad["corrupt"]
    assert state["counts"]["corrupt"] == 1
    assert state["pipes"]["200.1"]["ends"]["a"]["error"]["type"] == "UnpicklingError"
    # Two writers share end b; the frame sent after the corrupt one is still queued.
    assert state["pipes"]["200.1"]["ends"]["b"]["pids"] == [201, 202]
    assert len(state["pipes"]["200.1"]["lanes"]["b>a"]["tokens"]) == 1


def test_a_deadlock_verdict_is_kept_with_both_processes_blocked(lv_page: Any) -> None:
    state = apply(lv_page, fixture("deadlock"))
    assert state["deadlock"]["verdict"] == "deadlock"
    assert [w["pid"] for w in state["deadlock"]["cycle"]] == [300, 301]
    assert state["status"] == "deadlock"
    assert {p["blocked"]["op"] for p in state["processes"].values()} == {"recv"}
    ends = state["pipes"]["300.1"]["ends"]
    assert (ends["a"]["state"], ends["b"]["state"]) == ("blocked_recv", "blocked_recv")


def test_a_closed_end_keeps_what_was_sent_before_close(lv_page: Any) -> None:
    state = apply(lv_page, fixture("closed"))
    pipe = state["pipes"]["400.1"]
    assert pipe["duplex"] is False and list(pipe["lanes"]) == ["b>a"]
    assert pipe["ends"]["b"]["state"] == "closed"
    assert pipe["ends"]["a"]["state"] == "idle"
    assert len(pipe["lanes"]["b>a"]["tokens"]) == 2
    assert state["counts"]["messages"] == 1


def test_a_recorded_pingpong_pairs_a_receive_recorded_before_its_send(lv_page: Any) -> None:
    events = fixture("recorded_pingpong")
    state = apply(lv_page, events)
    sends = [e for e in events if e.get("op") == "send" and e.get("phase") == "end"]
    early = next(e for e in events if e.get("match", 0) > e["seq"])
    assert state["delivered"] == [e["seq"] for e in sends]
    token = state["tokens"][str(early["match"])]
    assert (token["status"], token["toPid"], token["recvSeq"]) == (
        "delivered",
        early["pid"],
        early["seq"],
    )
    assert all(ln["tokens"] == [] for p in state["pipes"].values() for ln in p["lanes"].values())
    assert state["pendingRecv"] == {}


def test_delivery_order_is_receive_order_even_when_a_send_is_recorded_late(
    lv_page: Any,
) -> None:
    # Recorded: proc1's send returned (and was recorded) only after proc2 had already
    # received it and answered, so the answer's send has the smaller seq.
    events = fixture("recorded_pingpong_late_send")
    state = apply(lv_page, events)
    recvs = [e for e in events if e.get("op") == "recv" and e.get("phase") == "end"]
    assert [r["match"] for r in recvs] != sorted(r["match"] for r in recvs)
    assert state["delivered"] == [r["match"] for r in recvs]
    assert [state["tokens"][str(r["match"])]["preview"] for r in recvs] == ["'proc1'", "'proc2'"]


def test_a_recorded_race_shows_the_interleaved_frame_and_the_shared_end(lv_page: Any) -> None:
    events = fixture("recorded_race")
    state = apply(lv_page, events)
    bad = next(e for e in events if e.get("corrupt"))
    assert state["tokens"][str(bad["match"])]["corrupt"] == bad["corrupt"]
    assert state["counts"]["corrupt"] == 1
    writers = next(p for p in state["pipes"].values() if p["name"] == "two writers")
    assert len(writers["ends"]["b"]["pids"]) == 2
    readers = next(p for p in state["pipes"].values() if p["name"] == "two readers")
    assert len(readers["ends"]["a"]["pids"]) == 2


def test_a_recorded_deadlock_keeps_the_cycle_after_the_processes_are_killed(lv_page: Any) -> None:
    events = fixture("recorded_deadlock")
    state = apply(lv_page, events)
    verdict = next(e for e in events if e.get("verdict") == "deadlock")
    assert state["deadlock"]["cycle"] == verdict["cycle"]
    assert state["status"] == "deadlock"
    killed = {e["pid"] for e in events if e.get("op") == "exit" and e.get("killed")}
    assert killed and all(state["processes"][str(pid)]["killed"] for pid in killed)
    before = apply(lv_page, events[: verdict["seq"]])
    waiting = {w["pid"]: w["op"] for w in verdict["cycle"]}
    assert {pid: before["processes"][str(pid)]["blocked"]["op"] for pid in waiting} == waiting


PACE = """async ({ speed, frames }) => {
  const { createPlayback } = await import('/static/js/playback.js');
  const pb = createPlayback({ live: false });
  pb.setSpeed(speed);
  const events = [];
  for (let i = 0; i < 200; i++) events.push({ seq: i + 1, kind: 'call', t: 5e9 + i * 10e6 });
  pb.push(events);
  let released = 0;
  for (let f = 0; f <= frames; f++) released += pb.advance(1000 + f * 16).length;
  return { released, backlog: pb.backlog };
}"""


def test_playback_paces_recorded_time_and_half_speed_halves_the_rate(lv_page: Any) -> None:
    full = lv_page.evaluate(PACE, {"speed": 1, "frames": 50})
    half = lv_page.evaluate(PACE, {"speed": 0.5, "frames": 50})
    # 800 ms of injected clock: 81 events at 1x (one per 10 ms, the first at once), 41 at 0.5x.
    assert full["released"] == 81
    assert half["released"] == 41
    assert full["backlog"] == 200 - 81


FLOOD = """async () => {
  const { createPlayback } = await import('/static/js/playback.js');
  const pb = createPlayback();
  const events = [];
  for (let i = 0; i < 10000; i++) events.push({ seq: i + 1, kind: 'call', t: 1e9 + i * 1e6 });
  pb.push(events);
  const first = pb.advance(0).length;
  const live = createPlayback();
  let maxBacklog = 0;
  let maxDelay = 0;
  let released = 0;
  // Live input at its own pace, arriving in frames 33 ms late: the view keeps up.
  for (let f = 0; f < 300; f++) {
    const now = f * 16;
    live.push(events.filter((e) => (e.t - 1e9) / 1e6 <= now - 33 && (e.t - 1e9) / 1e6 > now - 49));
    released += live.advance(now).length;
    maxBacklog = Math.max(maxBacklog, live.backlog);
    maxDelay = Math.max(maxDelay, live.delayMs);
  }
  return { first, backlog: pb.backlog, caughtUp: pb.caughtUp, released, maxBacklog, maxDelay };
}"""


def test_playback_catches_up_under_a_flood_and_keeps_live_input_close(lv_page: Any) -> None:
    out = lv_page.evaluate(FLOOD)
    assert (out["first"], out["backlog"], out["caughtUp"]) == (10000, 0, 10000)
    assert out["maxBacklog"] <= 40, out
    assert out["maxDelay"] <= 50, out


def test_speed_outside_the_range_is_clamped_and_nonsense_refused(lv_page: Any) -> None:
    out = lv_page.evaluate(
        """async () => {
          const { createPlayback } = await import('/static/js/playback.js');
          const pb = createPlayback();
          pb.setSpeed(100); const hi = pb.speed; pb.setSpeed(0.01); const lo = pb.speed;
          let message = '';
          try { pb.setSpeed('fast'); } catch (err) { message = err.message; }
          return { hi, lo, message };
        }"""
    )
    assert (out["hi"], out["lo"]) == (4, 0.1)
    assert out["message"] == "speed must be a positive number, got fast"


DESCRIBE = """async (token) => {
  const { describeToken } = await import('/static/js/tokendetail.js');
  return describeToken(token);
}"""


def test_token_detail_decodes_a_real_pickle_head(lv_page: Any) -> None:
    head = pickle.dumps("proc1", protocol=5)
    token = {"head": head.hex(), "nbytes": len(head), "op": "send", "preview": "'proc1'"}
    detail = lv_page.evaluate(DESCRIBE, token)
    assert [op["name"] for op in detail["opcodes"]] == [
        "PROTO",
        "FRAME",
        "SHORT_BINUNICODE",
        "MEMOIZE",
        "STOP",
    ]
    assert detail["opcodes"][2]["arg"] == "proc1"
    assert (detail["protocol"], detail["complete"], detail["size"]) == (5, True, len(head))
    assert detail["hex"].split(" ")[:2] == ["80", "05"]


def test_token_detail_stops_cleanly_where_the_head_ends(lv_page: Any) -> None:
    data = pickle.dumps({"job": 7, "blob": "x" * 500, "ok": True}, protocol=5)
    framed = len(data).to_bytes(4, "big") + data  # a head that kept the length prefix
    detail = lv_page.evaluate(DESCRIBE, {"head": framed[:64].hex(), "nbytes": len(data)})
    names = [op["name"] for op in detail["opcodes"]]
    assert names[:4] == ["PROTO", "FRAME", "EMPTY_DICT", "MEMOIZE"]
    assert detail["complete"] is False
    last = detail["opcodes"][-1]
    assert last["name"] == "BINUNICODE" and last["truncated"] is True and last["length"] == 500


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


def test_reset_starts_over_in_the_same_state_object(lv_page: Any) -> None:
    out = lv_page.evaluate(
        """async (events) => {
          const { createRunModel } = await import('/static/js/model.js');
          const model = createRunModel();
          const held = model.state;
          model.apply(events);
          model.reset({ id: 'r2', state: 'running', message: '' });
          return { same: held === model.state, pipes: Object.keys(held.pipes).length,
                   run: held.run.id, status: held.status, events: held.counts.events };
        }""",
        fixture("pingpong"),
    )
    assert out == {"same": True, "pipes": 0, "run": "r2", "status": "running", "events": 0}


def test_events_seen_twice_are_applied_once(lv_page: Any) -> None:
    events = fixture("pingpong")
    out = lv_page.evaluate(
        """async (events) => {
          const { createRunModel } = await import('/static/js/model.js');
          const model = createRunModel();
          model.apply(events.slice(0, 14));
          model.apply(events);
          return model.state;
        }""",
        events,
    )
    assert out["counts"]["events"] == len(events)
    assert out["counts"]["messages"] == 2
    assert out["delivered"] == [
        e["seq"] for e in events if e.get("op") == "send" and e.get("phase") == "end"
    ]


def test_a_snapshot_of_the_latest_calls_only_shows_no_false_corruption_or_stuck_frame(
    lv_page: Any,
) -> None:
    events = synthetic.windowed_snapshot()
    state = apply(lv_page, events)
    held = len(events)
    assert state["window"] == {"from": synthetic.WINDOW_FROM, "skipped": synthetic.LAST_SEND - held}
    lane = state["pipes"][synthetic.PIPE]["lanes"]["a>b"]
    # Only the newest send waits; the one read before the window does not stay in the tube.
    assert lane["tokens"] == [synthetic.LAST_SEND]
    assert str(synthetic.WINDOW_FROM + 2) not in state["tokens"]
    assert lane["sent"] - lane["received"] == len(lane["tokens"])
    assert state["counts"]["corrupt"] == 0
    assert not [tk for tk in state["tokens"].values() if tk["corrupt"]]
    # Receives of frames sent before the window: delivered, from the end's only writer.
    early = state["tokens"][str(synthetic.WINDOW_FROM)]
    assert (early["status"], early["fromPid"], early["toPid"], early["sendUnseen"]) == (
        "delivered",
        synthetic.WRITER,
        synthetic.READER,
        True,
    )
    assert state["delivered"][:2] == [synthetic.WINDOW_FROM, synthetic.WINDOW_FROM + 1]
    assert {p["blocked"] is None for p in state["processes"].values()} == {True}

    done = apply(lv_page, events + synthetic.finish({"key": "completed", "args": {}}))
    assert done["pipes"][synthetic.PIPE]["lanes"]["a>b"]["tokens"] == []
    assert (done["status"], done["reason"]) == ("completed", {"key": "completed", "args": {}})
    assert done["counts"]["corrupt"] == 0


def test_a_whole_stream_has_no_window(lv_page: Any) -> None:
    assert apply(lv_page, fixture("pingpong"))["window"] is None


OUTCOME = """async ({ reason, message, lang }) => {
  const { createI18n } = await import('/static/js/i18n.js');
  const { outcomeText } = await import('/static/js/i18n_run.js');
  const i18n = createI18n(lang);
  return outcomeText(reason, message, (k, v) => i18n.t(k, v));
}"""


@pytest.mark.parametrize(
    ("reason", "lang", "expected"),
    [
        ({"key": "completed", "args": {}}, "zh", "场景已运行完毕"),
        ({"key": "timeout", "args": {"limit": 30}}, "zh", "运行超过了 30 秒的时间限制"),
        (
            {
                "key": "worker_killed",
                "args": {"process": "Process-1", "pid": 7, "signal": "SIGKILL", "code": 1},
            },
            "en",
            "Process-1 (pid 7) was killed by SIGKILL; the main process exited with 1",
        ),
        (  # a process that vanished: no signal is known
            {
                "key": "worker_killed",
                "args": {"process": "chatter", "pid": 7, "signal": "", "code": 0},
            },
            "zh",
            "chatter（pid 7）被终止；主进程以退出码 0 退出",
        ),
        ({"key": "exit_code", "args": {"code": 2, "stderr": ""}}, "zh", "主进程以退出码 2 退出"),
        (
            {"key": "exit_code", "args": {"code": 2, "stderr": "boom"}},
            "en",
            "the main process exited with code 2: boom",
        ),
        ({"key": "no_such_outcome", "args": {}}, "zh", "the server's words"),
        ({"key": "main_killed", "args": {}}, "zh", "the server's words"),
        (None, "zh", "the server's words"),
    ],
)
def test_an_outcome_is_told_in_the_page_language_or_in_the_server_words(
    lv_page: Any, reason: Any, lang: str, expected: str
) -> None:
    args = {"reason": reason, "message": "the server's words", "lang": lang}
    assert lv_page.evaluate(OUTCOME, args) == expected


SLICES = """async (events) => {
  const { slices } = await import('/static/js/socket_worker.js');
  const shuffled = [...events].reverse();
  const parts = slices({ type: 'snapshot', run: { id: 'rwindow' }, events: shuffled,
    notice: 'n' }, 500);
  const batch = slices({ type: 'events', run: 'rwindow', events: events.slice(0, 1200) }, 500);
  const small = slices({ type: 'runs', runs: [] }, 500);
  return { parts: parts.map((p) => ({ type: p.type, run: p.run, n: p.events.length,
    missing: p.missing, notice: p.notice, seqs: p.events.map((e) => e.seq) })),
    batch: batch.map((p) => [p.type, p.run, p.events.length]), small };
}"""


def test_a_long_snapshot_reaches_the_page_in_slices_in_seq_order(lv_page: Any) -> None:
    events = synthetic.windowed_snapshot()
    out = lv_page.evaluate(SLICES, events)
    first, *rest = out["parts"]
    assert (first["type"], first["n"], first["notice"]) == ("snapshot", 500, "n")
    assert first["missing"] == synthetic.LAST_SEND - len(events)
    assert {(p["type"], p["run"]) for p in rest} == {("events", synthetic.RUN)}
    assert [s for p in out["parts"] for s in p["seqs"]] == [e["seq"] for e in events]
    assert out["batch"] == [
        ["events", "rwindow", 500],
        ["events", "rwindow", 500],
        ["events", "rwindow", 200],
    ]
    assert out["small"] == [{"type": "runs", "runs": []}]


GATHER = """async (events) => {
  const { slices } = await import('/static/js/socket_worker.js');
  const { gatherSnapshots } = await import('/static/js/socket.js');
  const got = [];
  const take = gatherSnapshots((frame) => got.push(frame));
  const parts = slices({ type: 'snapshot', run: { id: 'rwindow' }, events, notice: 'n' }, 500);
  const seen = [];
  parts.forEach((part, i) => {
    take(JSON.parse(JSON.stringify(part)));  // as the worker posts them: JSON text
    if (i === 1) take({ type: 'runs', runs: [] });  // other frames are not held up
    seen.push(got.map((f) => [f.type, f.events?.length ?? 0]));
  });
  take({ type: 'events', run: 'rwindow', events: [{ seq: 1e6 }] });
  return { seen, last: got.map((f) => [f.type, f.events?.length ?? 0, f.sliced ?? null]) };
}"""


def test_the_slices_of_a_snapshot_reach_the_page_as_one_snapshot(lv_page: Any) -> None:
    # A finished run's snapshot applied slice by slice read "running" part of the way.
    events = synthetic.windowed_snapshot()
    out = lv_page.evaluate(GATHER, events)
    assert len(out["seen"]) > 2, "the snapshot is long enough to be cut up"
    assert all(seen == [] for seen in out["seen"][:1])
    assert all(seen == [["runs", 0]] for seen in out["seen"][1:-1])
    assert out["last"] == [["runs", 0, None], ["snapshot", len(events), False], ["events", 1, None]]


FEED = """async () => {
  const { createFeed } = await import('/static/js/feed.js');
  const { createPlayback } = await import('/static/js/playback.js');
  const applied = [];
  const model = { apply: (batch) => applied.push(batch.map((e) => e.seq)), reset() {} };
  let now = 0;
  const clock = () => (now += 1); // each look at the clock costs a millisecond
  const feed = createFeed({ model, playback: createPlayback(), budgetMs: 6, clock });
  const events = [];
  for (let i = 1; i <= 5000; i++) events.push({ seq: i, kind: 'call', t: 1e9 + i });
  feed.push(events);
  const perFrame = [];
  for (let f = 0; f < 10 && (f === 0 || feed.backlog); f++) {
    const before = applied.flat().length;
    feed.pump(f * 16);
    perFrame.push(applied.flat().length - before);
  }
  return { perFrame, seqs: applied.flat(), backlog: feed.backlog };
}"""


def test_the_feed_spreads_a_large_batch_over_frames_in_order(lv_page: Any) -> None:
    out = lv_page.evaluate(FEED)
    assert len(out["perFrame"]) > 1 and max(out["perFrame"]) < 5000, out["perFrame"]
    assert sum(out["perFrame"]) == 5000 and out["backlog"] == 0
    assert out["seqs"] == list(range(1, 5001))


SKIP = """async () => {
  const { createFeed } = await import('/static/js/feed.js');
  const { createPlayback } = await import('/static/js/playback.js');
  const applied = [];
  const skips = [];
  const model = { apply: (batch) => applied.push(...batch), reset() {} };
  const feed = createFeed({ model, playback: createPlayback(), maxWaiting: 1000, keep: 100,
    onSkip: (n) => skips.push(n) });
  const events = [];
  for (let i = 1; i <= 3000; i++) {
    const kind = i % 500 === 0 ? 'process' : 'call';
    events.push({ seq: i, kind, t: 1e9 + i });
  }
  feed.push(events);
  for (let f = 0; f < 50 && (f === 0 || feed.backlog); f++) feed.pump(f * 16);
  return { seqs: applied.map((e) => e.seq), kinds: applied.map((e) => e.kind), skips };
}"""


def test_a_view_that_falls_behind_keeps_every_run_event_and_the_latest_calls(
    lv_page: Any,
) -> None:
    out = lv_page.evaluate(SKIP)
    calls = [s for s, k in zip(out["seqs"], out["kinds"], strict=True) if k == "call"]
    assert calls == list(range(2900, 3000))  # the latest 100 calls (3000 is no call)
    assert [s for s, k in zip(out["seqs"], out["kinds"], strict=True) if k != "call"] == [
        500,
        1000,
        1500,
        2000,
        2500,
        3000,
    ]
    assert out["seqs"] == sorted(out["seqs"])
    assert out["skips"] == [3000 - 6 - 100]


THIN = """async () => {
  const { thin } = await import('/static/js/socket_worker.js');
  const frames = [];
  let seq = 0;
  for (let f = 0; f < 6; f++) {
    const events = [];
    for (let i = 0; i < 500; i++) {
      seq += 1;
      events.push({ seq, kind: seq % 1000 === 0 ? 'verdict' : 'call', t: seq });
    }
    frames.push({ type: 'events', run: 'r1', events });
    if (f === 2) frames.push({ type: 'snapshot', run: { id: 'r2' }, events: [] });
  }
  const { frames: left, gone } = thin(frames, 100);
  return { gone, types: left.map((f) => f.type),
    seqs: left.filter((f) => f.type === 'events').flatMap((f) => f.events.map((e) => e.seq)) };
}"""


def test_a_worker_thins_what_waits_to_the_run_events_and_the_latest_calls(lv_page: Any) -> None:
    out = lv_page.evaluate(THIN)
    assert out["gone"] == [["r1", 3000 - 3 - 100]]
    # every verdict, then the latest 100 calls; the other run's snapshot stays in its place
    assert out["seqs"] == [1000, 2000, *range(2900, 3000), 3000]
    assert out["types"].count("snapshot") == 1


VERDICT = """async ({ verdicts, lang }) => {
  const { createI18n } = await import('/static/js/i18n.js');
  const { verdictText, verdictCounts } = await import('/static/js/i18n_verdicts.js');
  const i18n = createI18n(lang);
  const t = (k, v) => i18n.t(k, v);
  return { lines: verdicts.map((v) => verdictText(v, t)), counts: verdictCounts(verdicts, t) };
}"""


def _verdicts_of_a_stream() -> list[dict[str, Any]]:
    """Real verdicts of the analysis: killed with and without a signal, an EOF, corrupt
    frames (a mismatch, a raced one, a frame nobody sent)."""
    from pipecore.analysis import Analysis
    from tests.unit.eventstream import Stream

    s, an = Stream(), Analysis("r1")
    s.pipe()
    s.add(100, 12, "process", op="exit", exitcode=-9)
    s.add(102, 10, "process", op="exit", exitcode=None, killed=True)
    s.send(110, 11, "a", "11111111", 10)
    s.call(120, 12, "b", "recv_bytes", "end", nbytes=9)
    s.call(130, 12, "b", "recv", "error", error_type="UnpicklingError", error="invalid load key")
    s.call(200, 11, "a", "send", "begin")
    s.call(210, 11, "a", "send", "error", error_type="BrokenPipeError", error="[Errno 32]")
    verdicts = s.feed(an)
    assert [v["verdict"] for v in verdicts] == ["killed", "killed", "corrupt", "corrupt", "eof"]
    return verdicts


def test_verdicts_are_told_in_the_page_language(lv_page: Any) -> None:
    verdicts = _verdicts_of_a_stream()
    english = lv_page.evaluate(VERDICT, {"verdicts": verdicts, "lang": "en"})
    # The page's English is the server's own sentence, word for word.
    assert english["lines"] == [v["message"] for v in verdicts]
    assert english["counts"] == "killed ×2 · corrupt ×2 · eof"
    chinese = lv_page.evaluate(VERDICT, {"verdicts": verdicts, "lang": "zh"})
    assert chinese["lines"] == [
        "Process-2（pid 12）被信号 9（SIGKILL）终止",
        "MainProcess（pid 10）被终止",
        "管道 p1 a>b 上的损坏帧：应为 Process-1 seq 5（哈希 11111111，10 字节），"
        "收到 Process-2 seq 6（哈希 ?，9 字节）",
        "管道 p1 a>b 上的损坏帧：收到 Process-2 seq 7（UnpicklingError: invalid load key），"
        "但没有帧发往 b 端",
        "Process-1 在管道 p1 的 a 端调用 send 时得到 BrokenPipeError："
        "没有人能再接收，另一端的所有副本都已关闭",
    ]
    assert chinese["counts"] == "被终止 ×2 · 损坏 ×2 · 文件结束"
    # A verdict without a reason (a record made before reasons) keeps the server's words.
    old = {"verdict": "killed", "message": "the server's words"}
    assert lv_page.evaluate(VERDICT, {"verdicts": [old], "lang": "zh"})["lines"] == [
        "the server's words"
    ]


END_PIDS = """async (events) => {
  const { createRunModel } = await import('/static/js/model.js');
  const { endPid } = await import('/static/js/topology.js');
  const model = createRunModel();
  model.apply(events);
  const pipe = model.state.pipes['1.1'];
  return [endPid(pipe.ends.a), endPid(pipe.ends.b)];
}"""


def test_a_closed_pipe_is_drawn_to_the_processes_that_used_its_ends(lv_page: Any) -> None:
    """A child that only closed the copy of an end it inherited (or was handed to close)
    does not take that end from the writer that sent on it, once every copy is closed."""
    pipe = pipe_event(duplex=False, capacity=65_536)
    sends = [call(2 + n, 2, "b", "send_bytes", nbytes=10) for n in range(3)]
    recvs = [call(5 + n, 3, "a", "recv_bytes", nbytes=10) for n in range(3)]
    # The reader was handed the write end too, only to close it (race.py does, so that
    # under fork the writers see the readers leave).
    handed = {"run": "r1", "seq": 8, "kind": "attach", "t": 8, "pid": 3, "process": "P3"}
    handed |= {"pipe": "1.1", "pipe_name": "p", "end": "b"}
    closes = [
        call(9, 1, "a", "close"), call(10, 1, "b", "close"), call(11, 3, "b", "close"),
        call(12, 2, "b", "close"), call(13, 3, "a", "close"),
    ]  # fmt: skip
    assert lv_page.evaluate(END_PIDS, [pipe, *sends, *recvs, handed, *closes]) == [3, 2]


BANNERS = """async (events) => {
  const { createRunModel } = await import('/static/js/model.js');
  const { bannersFor } = await import('/static/js/banner.js');
  const model = createRunModel();
  model.apply(events);
  return bannersFor(model.state, (k) => k).map((b) => [b.kind, b.lines]);
}"""


def test_processes_the_runs_teardown_ended_are_no_finding(lv_page: Any) -> None:
    """A worker killed while the run went on is a finding; those its stop, time-out or
    deadlock teardown ended (after `teardown_t` of the terminal run event) are not."""

    def verdict(seq: int, t: int, who: str) -> dict[str, Any]:
        return {"run": "r1", "seq": seq, "kind": "verdict", "t": t, "pid": 0, "process": "",
                "verdict": "killed", "message": f"{who} was killed"}  # fmt: skip

    run = {"run": "r1", "kind": "run", "pid": 0, "process": "pipescope"}
    events = [
        {**run, "seq": 1, "t": 1, "state": "running"},
        verdict(2, 100, "early"),  # killed by a fault, before the end
        verdict(3, 300, "late"),  # ended by the teardown
        {**run, "seq": 4, "t": 400, "state": "stopped", "message": "stopped on request",
         "reason": {"key": "stopped", "args": {}}, "teardown_t": 200},
    ]  # fmt: skip
    banners = dict(lv_page.evaluate(BANNERS, events))
    assert banners["killed"] == ["early was killed"]
    events[-1] = {**events[-1], "teardown_t": 50}  # both after it: no killed banner at all
    assert "killed" not in dict(lv_page.evaluate(BANNERS, events))


TRANSLATED = """async () => {
  const tables = [
    ['i18n_text.js', 'MESSAGES'], ['i18n_run.js', 'RUN_MESSAGES'],
    ['i18n_records.js', 'RECORDS_MESSAGES'], ['i18n_verdicts.js', 'VERDICT_MESSAGES'],
    ['i18n_stats.js', 'STATS_MESSAGES'],
  ];
  const missing = {};
  for (const [file, name] of tables) {
    const table = (await import(`/static/js/${file}`))[name];
    const en = Object.keys(table.en);
    const zh = Object.keys(table.zh);
    missing[file] = [...en.filter((k) => !zh.includes(k)), ...zh.filter((k) => !en.includes(k))];
  }
  const live = await import('/static/js/liveview_text.js');
  missing['liveview_text.js'] = Object.keys(live.LIVEVIEW_TEXT)
    .filter((k) => !(k in live.LIVEVIEW_TEXT_ZH));
  return missing;
}"""


def test_every_label_has_its_chinese(lv_page: Any) -> None:
    missing = lv_page.evaluate(TRANSLATED)
    assert missing == {file: [] for file in missing}, missing
    assert len(missing) == 6


STATUS = """async ({ proc, teardownT }) => {
  const { statusLine } = await import('/static/js/render_process.js');
  return statusLine(proc, (k) => k, 0, teardownT)[0];
}"""


@pytest.mark.parametrize(
    ("proc", "teardown_t", "expected"),
    [
        # Killed by the stop's teardown (its exit after the teardown began): no finding.
        ({"exited": True, "killed": True, "exitcode": -15, "exitT": 300}, 200, "ended_by_run"),
        # Killed while the run went on: a finding, with its signal.
        ({"exited": True, "killed": True, "exitcode": -9, "exitT": 100}, 200, "killed (signal 9)"),
        ({"exited": True, "killed": True, "exitcode": None, "exitT": 100}, None, "killed"),
        ({"exited": True, "killed": False, "exitcode": 0, "exitT": 300}, 200, "exited (0)"),
    ],
)
def test_a_process_box_tells_a_kill_from_the_runs_own_end(
    lv_page: Any, proc: dict[str, Any], teardown_t: int | None, expected: str
) -> None:
    assert lv_page.evaluate(STATUS, {"proc": proc, "teardownT": teardown_t}) == expected


LANES = """async (events) => {
  const { createRunModel } = await import('/static/js/model.js');
  const model = createRunModel();
  const seen = [];
  for (const ev of events) {
    model.apply([ev]);
    const pipe = model.state.pipes['1.1'];
    seen.push({ lanes: Object.keys(pipe.lanes), errorB: pipe.ends.b.error?.type ?? null });
  }
  return { seen, marks: model.state.marks.map((m) => [m.end, m.kind, m.text]) };
}"""


def test_a_one_way_pipe_keeps_its_one_lane_when_a_forbidden_call_fails(lv_page: Any) -> None:
    """The writer's recv and the reader's send fail (OSError): no lane for them, the error
    is on the end and in the marks."""
    pipe = pipe_event(duplex=False, capacity=65_536, transport="os.pipe")
    oserror = {"phase": "error", "error_type": "OSError", "error": "connection is write-only"}
    events = [
        pipe,
        call(2, 2, "b", "send", nbytes=24),
        call(3, 2, "b", "send", nbytes=24),
        # A receiving call measures what the kernel holds (FIONREAD) at its begin.
        call(4, 2, "b", "recv", phase="begin", queued=56),
        call(5, 2, "b", "recv", **oserror),
        call(6, 3, "a", "send", phase="begin"),
        call(7, 3, "a", "send", **oserror | {"error": "connection is read-only"}),
        call(8, 3, "a", "recv", nbytes=24, match=2),
    ]  # fmt: skip
    found = lv_page.evaluate(LANES, events)
    assert {tuple(step["lanes"]) for step in found["seen"]} == {("b>a",)}
    assert [step["errorB"] for step in found["seen"]][4] == "OSError"
    assert found["marks"] == [["b", "error", "recv: OSError"], ["a", "error", "send: OSError"]]


GAUGE_LABEL = """async ({ events, lang }) => {
  const { createRunModel } = await import('/static/js/model.js');
  const { gaugeOf } = await import('/static/js/model_lanes.js');
  const { gaugeLabel } = await import('/static/js/render_gauge.js');
  const { createI18n } = await import('/static/js/i18n.js');
  const { withDefaults } = await import('/static/js/liveview_text.js');
  const model = createRunModel();
  model.apply(events);
  const pipe = model.state.pipes['1.1'];
  const dir = pipe.lanes['a>b'] ? 'a>b' : 'b>a';
  return gaugeLabel(gaugeOf(pipe, dir), withDefaults(createI18n(lang).t));
}"""


def test_the_gauge_of_a_waiting_send_counts_the_part_of_its_frame_in_the_buffer(
    lv_page: Any,
) -> None:
    """A writer waits in send only once the kernel buffer is full: a step-mode hold comes
    before its `begin`. With no frame sent before it, its own frame fills the buffer, which
    `queued` (frames whose send returned) does not count: the label says so, not
    "queued 0 B" beside a full gauge."""
    pipe = pipe_event(duplex=False, capacity=65_536, transport="os.pipe")
    waiting = call(2, 2, "b", "send_bytes", phase="begin")

    def label(events: list[dict[str, Any]], lang: str = "en") -> str:
        said: str = lv_page.evaluate(GAUGE_LABEL, {"events": events, "lang": lang})
        return said

    assert label([pipe, waiting]) == "64 KiB full of the frame being sent"
    assert label([pipe, waiting], "zh") == "64 KiB 已满：正在发送的帧"
    sent = [call(2 + n, 2, "b", "send_bytes", nbytes=1024) for n in range(3)]
    assert label([pipe, *sent]) == "queued 3.0 KiB / 64 KiB"
    assert label([pipe, *sent, call(5, 2, "b", "send_bytes", phase="begin")]) == (
        "64 KiB full: 3.0 KiB queued + the frame being sent"
    )
    # Frames already sent that fill the buffer: the waiting one has no part in it.
    full = [call(2 + n, 2, "b", "send_bytes", nbytes=16_384) for n in range(4)]
    assert label([pipe, *full, call(6, 2, "b", "send_bytes", phase="begin")]) == (
        "queued 64 KiB / 64 KiB · full: send waits"
    )


THREAD_ROWS = """async (events) => {
  const { describeEvent } = await import('/static/js/eventlog.js');
  return events.map((event) => describeEvent(event, 0).slice(4));
}"""


def test_the_event_log_says_how_many_threads_are_queue_feeders(lv_page: Any) -> None:
    event = {"run": "r1", "seq": 5, "kind": "thread", "t": 0, "pid": 7, "process": "left"}
    rows = lv_page.evaluate(
        THREAD_ROWS,
        [
            event | {"op": "start", "threads": 2, "helpers": 1},
            event | {"op": "start", "threads": 4, "helpers": 2},
            event | {"op": "end", "threads": 1, "helpers": 0},
            event | {"op": "end", "threads": 1},  # a stream from before the field
        ],
    )
    assert rows == [
        ["thread start", "2 threads: 1 Queue feeder"],
        ["thread start", "4 threads: 2 Queue feeders"],
        ["thread end", "1 thread"],
        ["thread end", "1 thread"],
    ]


GAUGE_TEXT = """async ({ events, lang, rooms }) => {
  const { createRunModel } = await import('/static/js/model.js');
  const { gaugeOf } = await import('/static/js/model_lanes.js');
  const { gaugeText } = await import('/static/js/render_gauge.js');
  const { createI18n } = await import('/static/js/i18n.js');
  const { withDefaults } = await import('/static/js/liveview_text.js');
  const model = createRunModel();
  model.apply(events);
  const pipe = model.state.pipes['1.1'];
  const gauge = gaugeOf(pipe, pipe.lanes['a>b'] ? 'a>b' : 'b>a');
  const ctx = document.createElement('canvas').getContext('2d');
  ctx.font = '10px system-ui, sans-serif';  // as the live view draws it
  const t = withDefaults(createI18n(lang).t);
  return rooms.map((room) => gaugeText(ctx, gauge, t, room));
}"""


def test_a_short_lane_says_the_gauge_in_its_short_form_not_cut_off(lv_page: Any) -> None:
    pipe = pipe_event(duplex=False, capacity=65_536, transport="os.pipe")
    sent = [call(2 + n, 2, "b", "send_bytes", nbytes=16_384) for n in range(3)]
    waiting = call(5, 2, "b", "send_bytes", phase="begin")
    # The back-pressure scenario at 1366 x 768: three 16 KiB frames queued, the fourth's
    # send waits with part of its frame in the buffer.
    # A laptop's two-process lane is about 200 px long; a wide window's, 500.
    rooms = [500, 200, 90]

    def texts(events: list[dict[str, Any]], lang: str = "en") -> list[str]:
        said: list[str] = lv_page.evaluate(
            GAUGE_TEXT, {"events": events, "lang": lang, "rooms": rooms}
        )
        return said

    assert texts([pipe, *sent, waiting]) == [
        "64 KiB full: 48 KiB queued + the frame being sent",
        "64 KiB full: send waits",
        "64 KiB full: send waits",
    ]
    assert texts([pipe, *sent, waiting], "zh")[2] == "64 KiB 已满：send 等待"
    # A label that fits stays whole; a shorter one drops its words, not its figures.
    assert texts([pipe, *sent]) == ["queued 48 KiB / 64 KiB"] * 2 + ["48 KiB / 64 KiB"]


DEADLOCK_TEXT = """async ({ events, lang }) => {
  const { createRunModel } = await import('/static/js/model.js');
  const { bannersFor } = await import('/static/js/banner.js');
  const { deadlockText } = await import('/static/js/i18n_verdicts.js');
  const { createI18n } = await import('/static/js/i18n.js');
  const { withDefaults } = await import('/static/js/liveview_text.js');
  const model = createRunModel();
  model.apply(events);
  const t = createI18n(lang).t;
  const banner = bannersFor(model.state, t).find((b) => b.kind === 'deadlock');
  // What the live view draws: its lookup passes no arguments on (and knows no text without
  // the page's); a wide canvas, so the bar is not cut short.
  const { drawDeadlock } = await import('/static/js/render_process.js');
  const ctx = document.createElement('canvas').getContext('2d');
  const drawn = [];
  ctx.fillText = (text) => drawn.push(text);
  drawDeadlock(ctx, 3000, 400, model.state.deadlock, withDefaults(t), 0);
  return { drawn, bar: deadlockText(model.state.deadlock, withDefaults(t)), lines: banner.lines,
    bare: deadlockText(model.state.deadlock, withDefaults(null)) };
}"""


def test_the_deadlock_bar_says_who_waits_in_the_page_language(lv_page: Any) -> None:
    pipe = pipe_event(duplex=True, capacity=212_992, name="recv-recv", transport="socketpair")
    message = (
        "left waits in recv on pipe recv-recv end a, right waits in recv on pipe recv-recv "
        "end b; nothing is queued in either direction"
    )
    cycle = [
        {"pid": 11, "process": "left", "pipe": "1.1", "end": "a", "op": "recv"},
        {"pid": 12, "process": "right", "pipe": "1.1", "end": "b", "op": "recv"},
    ]
    for wait in cycle:
        wait["pipe_name"] = "recv-recv"
    verdict = {"run": "r1", "seq": 2, "kind": "verdict", "t": 9, "pid": 0, "process": ""}
    verdict |= {"verdict": "deadlock", "message": message, "cycle": cycle, "events": []}
    zh = lv_page.evaluate(DEADLOCK_TEXT, {"events": [pipe, verdict], "lang": "zh"})
    assert zh["bar"] == (
        "死锁：left（pid 11）在管道 recv-recv 的 a 端等待 recv；"
        "right（pid 12）在管道 recv-recv 的 b 端等待 recv"
    )
    assert zh["drawn"] == [zh["bar"]]
    assert zh["bar"] == "死锁：" + "；".join(zh["lines"])  # as the banner says it
    en = lv_page.evaluate(DEADLOCK_TEXT, {"events": [pipe, verdict], "lang": "en"})
    assert en["bar"] == (
        "Deadlock: left (pid 11) waits in recv on pipe recv-recv, end a; "
        "right (pid 12) waits in recv on pipe recv-recv, end b"
    )
    assert en["bare"] == f"Deadlock: {message}"  # no page lookup: the server's words


BANNERS_IN = """async ({ events, lang }) => {
  const { createRunModel } = await import('/static/js/model.js');
  const { bannersFor } = await import('/static/js/banner.js');
  const { createI18n } = await import('/static/js/i18n.js');
  const model = createRunModel();
  model.apply(events);
  return bannersFor(model.state, createI18n(lang).t).map((b) => [b.kind, b.title, b.lines]);
}"""


def test_a_run_killed_with_its_worker_says_so_in_one_banner(lv_page: Any) -> None:
    """The `killed` verdict and the run's `killed` outcome name one process: one banner, with
    the outcome's sentence (it tells how the main process ended)."""
    run = {"run": "r1", "kind": "run", "pid": 0, "process": "pipescope"}
    who = {"process": "chatter", "pid": 7, "signal": ""}
    killed = {"run": "r1", "seq": 2, "kind": "verdict", "t": 100, "pid": 0, "process": ""}
    killed |= {"verdict": "killed", "message": "chatter (pid 7) was killed"}
    killed["reason"] = {"key": "killed", "args": {**who, "signum": None}}
    ended = {**run, "seq": 3, "t": 400, "state": "killed", "teardown_t": 300}
    ended["message"] = "chatter (pid 7) was killed; the main process carried on and exited with 0"
    ended["reason"] = {"key": "worker_killed", "args": {**who, "code": 0}}
    events = [{**run, "seq": 1, "t": 1, "state": "running"}, killed, ended]
    assert lv_page.evaluate(BANNERS_IN, {"events": events, "lang": "en"}) == [
        ["killed", "Process killed", ["chatter (pid 7) was killed; the main process exited with 0"]]
    ]
    assert lv_page.evaluate(BANNERS_IN, {"events": events, "lang": "zh"}) == [
        ["killed", "进程被终止", ["chatter（pid 7）被终止；主进程以退出码 0 退出"]]
    ]
    # A verdict of an earlier server, without its reason, names the process in its message.
    old = [events[0], {k: v for k, v in killed.items() if k != "reason"}, ended]
    assert [b[0] for b in lv_page.evaluate(BANNERS_IN, {"events": old, "lang": "en"})] == ["killed"]
    # Another process's kill is a finding of its own, beside the run's outcome.
    other = killed | {"message": "talker (pid 8) was killed"}
    other["reason"] = {"key": "killed", "args": {"process": "talker", "pid": 8}}
    banners = lv_page.evaluate(BANNERS_IN, {"events": [events[0], other, ended], "lang": "en"})
    assert [b[0] for b in banners] == ["killed", "status-killed"]
