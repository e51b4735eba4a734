"""Pipe ends (pipecore.ends): their states as calls go, who holds them, the deadlocks they form."""

from __future__ import annotations

from pipecore.analysis import Analysis
from tests.unit.eventstream import SECOND, Stream, kinds


def test_end_states_follow_the_calls() -> None:
    s, an = Stream(), Analysis("r1")
    s.pipe(capacity=4096)
    s.add(5, 12, "attach", pipe="p1", pipe_name="p1", end="b")
    s.call(10, 11, "a", "send", "begin")
    s.call(20, 12, "b", "recv", "begin", queued=0)
    s.feed(an)
    ends = an.ends()
    assert (ends["p1/a"]["state"], ends["p1/b"]["state"]) == ("blocked_send", "blocked_recv")
    assert (ends["p1/b"]["since"], ends["p1/b"]["pids"], ends["p1/b"]["capacity"]) == (
        20,
        [12],
        4096,
    )
    s.call(30, 11, "a", "send", "end", hash="11111111", nbytes=96)
    s.feed(an)
    assert an.ends()["p1/a"]["state"] == "idle"
    assert an.ends()["p1/b"]["queued"] == 100  # 96 bytes of payload plus the 4-byte header
    s.call(40, 12, "b", "recv", "end", hash="11111111", nbytes=96)
    s.call(50, 12, "b", "poll", "begin", timeout=0)
    s.feed(an)
    assert an.ends()["p1/b"]["state"] == "idle"
    s.call(50, 12, "b", "poll", "end", result=False)
    s.call(60, 12, "b", "poll", "begin", timeout=0.5, queued=7)
    s.feed(an)
    assert an.ends()["p1/b"]["state"] == "blocked_recv"
    assert an.ends()["p1/b"]["kernel_queued"] == 7
    assert an.ends()["p1/b"]["peak_queued"] == 100
    s.call(70, 12, "b", "poll", "end", result=True)
    s.call(71, 12, "b", "poll", "begin", timeout=0.5, queued=700)  # an untraced sender's bytes
    s.feed(an)
    assert an.ends()["p1/b"]["peak_queued"] == 700
    s.call(72, 12, "b", "poll", "end", result=True)
    s.call(80, 11, "a", "close", "end")
    s.call(90, 12, "b", "recv", "begin")
    s.call(95, 12, "b", "recv", "error", error_type="EOFError", error="")
    verdicts = s.feed(an)
    ends = an.ends()
    assert (ends["p1/a"]["state"], ends["p1/b"]["state"]) == ("closed", "errored")
    assert ends["p1/b"]["error"] == "EOFError"
    assert kinds(verdicts) == ["eof"]
    assert verdicts[0]["end"] == "b"
    assert verdicts[0]["message"] == (
        "Process-2 got EOFError in recv on pipe p1 end b: "
        "nothing more can arrive, every copy of the other end was closed"
    )


def test_two_threads_of_a_process_wait_in_one_end_one_receiving_one_sending() -> None:
    # A receiving thread waits in end a; another thread of the same process sends on it.
    s, an = Stream(), Analysis("r1")
    s.pipe(capacity=4096)
    s.call(10, 11, "a", "recv", "begin", queued=0)
    s.call(20, 11, "a", "send", "begin")
    s.feed(an)
    blocked = an.ends()["p1/a"]["blocked"]
    assert [(b["pid"], b["op"]) for b in blocked] == [(11, "recv"), (11, "send")]
    assert an.ends()["p1/a"]["state"] == "blocked_send"
    s.call(30, 11, "a", "send", "end", hash="11111111", nbytes=96)
    s.feed(an)
    # The send returned; the receiving thread still waits.
    assert an.ends()["p1/a"]["state"] == "blocked_recv"
    assert [(b["op"], b["since"]) for b in an.ends()["p1/a"]["blocked"]] == [("recv", 10)]
    s.call(40, 12, "b", "recv", "end", hash="11111111", nbytes=96)
    s.call(50, 12, "b", "send", "end", hash="22222222", nbytes=8)
    s.call(60, 11, "a", "recv", "end", hash="22222222", nbytes=8)
    s.feed(an)
    assert an.ends()["p1/a"]["state"] == "idle"
    assert an.stats()["p1"]["b>a"]["blocked_ns"] == {"recv": 50}
    # Its exit ends whatever calls of the process still waited.
    s.call(70, 11, "a", "recv", "begin", queued=0)
    s.call(71, 11, "a", "send", "begin")
    s.add(80, 11, "process", op="exit", exitcode=0)
    s.feed(an)
    assert an.ends()["p1/a"]["blocked"] == []


def recv_recv_deadlock(threshold: int) -> tuple[Stream, Analysis]:
    s, an = Stream(), Analysis("r1", deadlock_after_ns=threshold)
    s.pipe()
    s.add(1, 11, "attach", pipe="p1", pipe_name="p1", end="a")
    s.add(1, 12, "attach", pipe="p1", pipe_name="p1", end="b")
    s.call(100, 11, "a", "recv", "begin", queued=0)
    s.call(110, 12, "b", "recv", "begin", queued=0)
    s.feed(an)
    return s, an


def test_a_wait_is_no_deadlock_while_another_thread_of_its_process_may_end_it() -> None:
    # Process-1's main thread waits in recv; a timer thread of its own will send later.
    s, an = recv_recv_deadlock(SECOND)
    s.add(50, 11, "thread", op="start", threads=2)
    s.feed(an)
    assert an.tick(10 * SECOND) == [], "a second thread of Process-1 may still send"
    # The timer ended without sending: every thread of both processes waits for good.
    s.add(10 * SECOND, 11, "thread", op="end", threads=1)
    s.feed(an)
    assert kinds(an.tick(12 * SECOND)) == ["deadlock"]


def test_a_queues_feeder_thread_does_not_keep_a_wait_from_being_a_deadlock() -> None:
    # Process-1 put into a multiprocessing.Queue (its feeder thread lives on, idle), then
    # waits in recv: the feeder only moves what Process-1's own threads put, so nothing
    # of Process-1 is left to end the wait.
    s, an = recv_recv_deadlock(SECOND)
    s.add(50, 11, "thread", op="start", threads=2, helpers=1)
    s.feed(an)
    assert kinds(an.tick(10 * SECOND)) == ["deadlock"]
    # A thread of its own besides the feeder may still send: no deadlock then.
    s, an = recv_recv_deadlock(SECOND)
    s.add(50, 11, "thread", op="start", threads=3, helpers=1)
    s.feed(an)
    assert an.tick(10 * SECOND) == []


def test_recv_recv_deadlock_is_reported_after_the_threshold_and_once() -> None:
    _, an = recv_recv_deadlock(SECOND)
    assert an.tick(110 + SECOND) == []
    verdicts = an.tick(111 + SECOND)
    assert kinds(verdicts) == ["deadlock"]
    v = verdicts[0]
    assert v["message"] == (
        "Process-1 waits in recv on pipe p1 end a, "
        "Process-2 waits in recv on pipe p1 end b; nothing is queued in either direction"
    )
    assert v["cycle"] == [
        {
            "pid": 11,
            "process": "Process-1",
            "pipe": "p1",
            "pipe_name": "p1",
            "end": "a",
            "op": "recv",
        },
        {
            "pid": 12,
            "process": "Process-2",
            "pipe": "p1",
            "pipe_name": "p1",
            "end": "b",
            "op": "recv",
        },
    ]
    assert (v["events"], v["t"]) == ([4, 5], 111 + SECOND)
    assert an.tick(5 * SECOND) == []
    assert an.verdicts == verdicts


def test_send_send_deadlock_with_full_buffers() -> None:
    s, an = Stream(), Analysis("r1", deadlock_after_ns=SECOND)
    s.pipe(capacity=65536)
    s.call(100, 11, "a", "send_bytes", "begin")
    s.call(100, 12, "b", "send_bytes", "begin")
    s.feed(an)
    verdicts = an.tick(3 * SECOND)
    assert kinds(verdicts) == ["deadlock"]
    assert [m["op"] for m in verdicts[0]["cycle"]] == ["send_bytes", "send_bytes"]
    assert "full" in verdicts[0]["message"]


def test_three_process_ring_deadlock() -> None:
    s, an = Stream(), Analysis("r1", deadlock_after_ns=SECOND)
    for pipe, reader, writer in (("p1", 11, 12), ("p2", 12, 13), ("p3", 13, 11)):
        s.pipe(pipe=pipe, duplex=False)
        s.add(1, writer, "attach", pipe=pipe, pipe_name=pipe, end="b")
        s.call(10, reader, "a", "recv", "begin", pipe=pipe)
    s.feed(an)
    verdicts = an.tick(2 * SECOND)
    assert kinds(verdicts) == ["deadlock"]
    assert sorted(m["pid"] for m in verdicts[0]["cycle"]) == [11, 12, 13]
    assert "nothing is queued in any of these directions" in verdicts[0]["message"]


def test_no_deadlock_while_the_other_party_runs() -> None:
    s, an = Stream(), Analysis("r1", deadlock_after_ns=SECOND)
    s.pipe()
    s.add(1, 12, "attach", pipe="p1", pipe_name="p1", end="b")
    s.call(100, 11, "a", "recv", "begin")
    s.feed(an)
    assert an.tick(3 * SECOND) == []  # Process-2 holds end b but is not blocked
    s.call(3 * SECOND, 12, "b", "recv", "begin")
    s.add(3 * SECOND + 500, 12, "output", stream="stdout", text="still here")
    s.feed(an)
    assert an.tick(4 * SECOND + 200) == []  # Process-2 was heard from less than a second ago
    assert kinds(an.tick(4 * SECOND + 501)) == ["deadlock"]


def test_no_deadlock_when_something_is_queued_or_a_party_exited() -> None:
    s, an = recv_recv_deadlock(SECOND)
    s.send(120, 12, "b", "11111111", 10)
    s.call(130, 12, "b", "recv", "begin")
    s.feed(an)
    assert an.tick(5 * SECOND) == []  # a frame waits for Process-1

    s, an = recv_recv_deadlock(SECOND)
    s.add(200, 12, "process", op="exit", exitcode=0)
    assert s.feed(an) == []
    assert an.tick(5 * SECOND) == []


def test_no_deadlock_for_a_poll_with_a_timeout() -> None:
    s, an = Stream(), Analysis("r1", deadlock_after_ns=SECOND)
    s.pipe()
    s.call(100, 11, "a", "poll", "begin", timeout=5.0)
    s.call(100, 12, "b", "recv", "begin")
    s.feed(an)
    assert an.tick(3 * SECOND) == []


def test_poll_without_timeout_takes_part_in_a_deadlock() -> None:
    s, an = Stream(), Analysis("r1", deadlock_after_ns=SECOND)
    s.pipe()
    s.call(100, 11, "a", "poll", "begin", timeout=float("nan"))  # poll(None) in the ring
    s.call(100, 12, "b", "recv", "begin")
    s.feed(an)
    assert an.ends()["p1/a"]["state"] == "blocked_recv"
    verdicts = an.tick(3 * SECOND)
    assert [m["op"] for m in verdicts[0]["cycle"]] == ["poll", "recv"]


def test_an_end_is_closed_once_every_holder_closed_it_or_exited() -> None:
    s, an = Stream(), Analysis("r1")
    s.pipe()
    s.add(1, 11, "attach", pipe="p1", pipe_name="p1", end="b")
    s.call(2, 10, "b", "close", "end")
    s.feed(an)
    assert an.ends()["p1/b"]["state"] == "idle"  # Process-1 still holds it
    s.add(3, 11, "process", op="exit", exitcode=0)
    assert s.feed(an) == []
    assert an.ends()["p1/b"]["state"] == "closed"
    assert an.ends()["p1/b"]["pids"] == []
    s.call(4, 12, "a", "recv", "begin")
    s.add(5, 12, "process", op="exit", exitcode=1)
    s.feed(an)
    assert an.ends()["p1/a"]["state"] == "closed"  # the kernel closes an exiting process's ends
