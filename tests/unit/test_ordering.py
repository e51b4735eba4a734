"""The merged stream is causal: a receive never comes before the send it took."""

from __future__ import annotations

from typing import Any

from pipecore.analysis import Analysis
from pipecore.ordering import FINAL_NS, MAX_HOLD_NS, CausalOrder

Event = dict[str, Any]

NOW = 1_000  # just after the events below (ns)


def call(pid: int, pseq: int, t: int, op: str, phase: str, end: str) -> dict[str, Any]:
    return {"kind": "call", "pid": pid, "pseq": pseq, "t": t, "op": op, "phase": phase,
            "pipe": "1.1", "end": end}  # fmt: skip


def ordered(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(events, key=lambda e: (e["t"], e["pid"], e["pseq"]))


def names(events: list[dict[str, Any]]) -> list[str]:
    return [f"{e['pid']}:{e['op']}:{e['phase']}" for e in events]


def test_a_receive_stamped_before_its_send_ended_follows_the_send() -> None:
    # 1 sends 'proc1'; 2 receives it and replies before 1 stamps its send's end
    events = ordered([
        call(1, 1, 100, "send", "begin", "a"),
        call(2, 1, 90, "recv", "begin", "b"),
        call(2, 2, 120, "recv", "end", "b"),
        call(2, 3, 125, "send", "begin", "b"),
        call(2, 4, 130, "send", "end", "b"),
        call(1, 2, 140, "send", "end", "a"),
        call(1, 3, 141, "recv", "begin", "a"),
        call(1, 4, 150, "recv", "end", "a"),
    ])  # fmt: skip
    out, held = CausalOrder().release(events, NOW)
    assert held == []
    assert names(out) == [
        "2:recv:begin", "1:send:begin", "1:send:end", "2:recv:end",
        "2:send:begin", "2:send:end", "1:recv:begin", "1:recv:end",
    ]  # fmt: skip


def test_time_order_is_kept_when_it_is_already_causal() -> None:
    events = ordered([
        call(1, 1, 100, "send", "begin", "a"),
        call(1, 2, 110, "send", "end", "a"),
        call(2, 1, 105, "recv", "begin", "b"),
        call(2, 2, 120, "recv", "end", "b"),
    ])  # fmt: skip
    out, held = CausalOrder().release(events, NOW)
    assert out == events and held == []


def test_a_receive_waits_for_a_send_seen_in_a_later_drain() -> None:
    order = CausalOrder()
    first = [call(1, 1, 100, "send", "begin", "a"), call(2, 1, 120, "recv", "end", "b"),
             call(2, 2, 121, "send", "begin", "b")]  # fmt: skip
    out, held = order.release(first, NOW)
    assert names(out) == ["1:send:begin"]
    assert names(held) == ["2:recv:end", "2:send:begin"]
    out, held = order.release(ordered([*held, call(1, 2, 130, "send", "end", "a")]), NOW)
    assert names(out) == ["1:send:end", "2:recv:end", "2:send:begin"] and held == []


def test_a_thread_receiving_what_another_thread_of_its_process_sends_does_not_wait() -> None:
    # One process, two threads: the receiving thread stamps its end before the sending
    # thread stamps the send's; the process's own order (pseq) is kept, nothing held.
    events = ordered([
        call(1, 1, 90, "recv", "begin", "b"),
        call(1, 2, 100, "send", "begin", "a"),
        call(1, 3, 120, "recv", "end", "b"),
        call(1, 4, 140, "send", "end", "a"),
        call(1, 5, 150, "send", "begin", "b"),
    ])  # fmt: skip
    out, held = CausalOrder().release(events, NOW)
    assert out == events and held == []
    # Another process's send in flight still makes a receive wait for it.
    events = ordered([
        call(1, 1, 100, "send", "begin", "a"),
        call(2, 1, 105, "send", "begin", "a"),
        call(1, 2, 120, "recv", "end", "b"),
        call(2, 2, 140, "send", "end", "a"),
    ])  # fmt: skip
    out, held = CausalOrder().release(events, NOW)
    assert names(out) == ["1:send:begin", "2:send:begin", "2:send:end", "1:recv:end"]
    assert held == []


def test_no_send_in_flight_means_no_wait() -> None:
    # a garbled stream (two unlocked writers) can deliver a frame nobody sent whole
    out, held = CausalOrder().release([call(2, 1, 120, "recv", "end", "b")], NOW)
    assert names(out) == ["2:recv:end"] and held == []


def test_a_wait_ends_when_the_sender_dies_or_after_the_hold_limit() -> None:
    order = CausalOrder()
    begin = call(1, 1, 100, "send", "begin", "a")
    recv = call(2, 1, 120, "recv", "end", "b")
    out, held = order.release([begin, recv], NOW)
    assert held == [recv]
    death = {"kind": "process", "op": "exit", "pid": 1, "pseq": 2, "t": 130, "killed": True}
    out, held = order.release(ordered([recv, death]), NOW)
    assert out == [death, recv] and held == []

    other = CausalOrder()
    other.release([begin], NOW)
    out, held = other.release([recv], recv["t"] + 10 * MAX_HOLD_NS)
    assert held == [recv], "the clock alone (a lagging collector) releases nothing"
    later = {"kind": "output", "pid": 3, "pseq": 1, "t": recv["t"] + MAX_HOLD_NS + 1}
    out, held = other.release([recv, later], NOW)
    assert out == [recv, later] and held == []


def test_the_final_drain_still_orders_a_batch_causally_and_holds_nothing() -> None:
    events = ordered([
        call(1, 1, 100, "send", "begin", "a"),
        call(2, 1, 120, "recv", "end", "b"),
        call(1, 2, 140, "send", "end", "a"),
        call(3, 1, 150, "send", "begin", "a"),
        call(4, 1, 160, "recv", "end", "b"),  # its send never ends: released anyway
        call(4, 2, 170, "send", "begin", "b"),
    ])  # fmt: skip
    out, held = CausalOrder().release(events, FINAL_NS)
    assert held == []
    assert names(out) == [
        "1:send:begin", "1:send:end", "2:recv:end", "3:send:begin", "4:recv:end", "4:send:begin",
    ]  # fmt: skip


def test_a_wait_keeps_the_sends_of_a_shared_pipe_in_time_order() -> None:
    # A pool: MainProcess (10) sends a task on pipe "tasks"; its feeder thread stamps the
    # send's end late (it waited for the GIL). Worker 12 receives the task before that
    # stamp and sends its result on the shared pipe "results" before worker 13 sends its
    # own. Waiting for the late send must not put 12's result behind 13's: MainProcess
    # reads 12's frame first, and FIFO matching would pair both frames wrongly.
    def on(pipe: str, pid: int, t: int, op: str, phase: str, end: str, **more: Any) -> Event:
        return {"kind": "call", "pid": pid, "pseq": t, "t": t, "op": op, "phase": phase,
                "pipe": pipe, "end": end, "process": f"P{pid}", **more}  # fmt: skip

    frame = {"nbytes": 20}
    stream = ordered([
        on("tasks", 10, 100, "send_bytes", "begin", "a"),
        on("tasks", 12, 120, "recv_bytes", "end", "b", hash="7a5c", **frame),
        on("results", 12, 130, "send_bytes", "begin", "b"),
        on("results", 12, 140, "send_bytes", "end", "b", hash="0012", **frame),
        on("results", 13, 150, "send_bytes", "begin", "b"),
        on("results", 13, 160, "send_bytes", "end", "b", hash="0013", **frame),
        on("results", 10, 170, "recv_bytes", "end", "a", hash="0012", **frame),
        on("results", 10, 180, "recv_bytes", "end", "a", hash="0013", **frame),
        on("tasks", 10, 200, "send_bytes", "end", "a", hash="7a5c", **frame),
    ])  # fmt: skip
    out, held = CausalOrder().release(stream, NOW)
    assert held == []
    results = [f"{e['pid']}:{e['op']}:{e['phase']}" for e in out if e["pipe"] == "results"]
    assert results == [
        "12:send_bytes:begin", "12:send_bytes:end", "13:send_bytes:begin",
        "13:send_bytes:end", "10:recv_bytes:end", "10:recv_bytes:end",
    ]  # fmt: skip
    analysis = Analysis("r1")
    pipes = [{"kind": "pipe", "pid": 10, "t": 0, "pipe": p, "pipe_name": p, "duplex": True}
             for p in ("tasks", "results")]  # fmt: skip
    numbered = [{**e, "run": "r1", "seq": i} for i, e in enumerate([*pipes, *out], 1)]
    assert analysis.feed(numbered) == [], "no frame is corrupt"
    ends = [e for e in numbered if e.get("phase") == "end"]
    sent = {e["hash"]: e["seq"] for e in ends if e["op"] == "send_bytes"}
    got = [(e["hash"], e["match"]) for e in ends if e["op"] == "recv_bytes"]
    assert got == [("7a5c", sent["7a5c"]), ("0012", sent["0012"]), ("0013", sent["0013"])]
