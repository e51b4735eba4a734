"""The live view's model in chromium: events folded into processes, ends, lanes and verdicts."""

from typing import Any

import pytest

from tests.e2e import synthetic
from tests.e2e.liveview import apply, call, fixture, pipe_event

sync_api = pytest.importorskip("playwright.sync_api")

pytestmark = pytest.mark.e2e


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
