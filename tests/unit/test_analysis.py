"""Tests for pipecore.analysis and the modules it builds on, over hand-built event streams."""

from __future__ import annotations

import json
import random
from typing import Any

from pipecore.analysis import Analysis
from pipecore.digest import EXACT_LATENCIES, LatencyDigest, percentiles

Event = dict[str, Any]
NAMES = {10: "MainProcess", 11: "Process-1", 12: "Process-2", 13: "Process-3"}
SECOND = 1_000_000_000


class Stream:
    """Builds a run's event stream in the collector's shape; `seq` counts up."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.fed = 0

    def add(self, t: int, pid: int, kind: str, **fields: Any) -> Event:
        ev: Event = {"run": "r1", "seq": len(self.events) + 1, "kind": kind, "t": t, "pid": pid}
        ev.update(process=NAMES.get(pid, ""), **fields)
        self.events.append(ev)
        return ev

    def pipe(self, t: int = 0, pipe: str = "p1", capacity: int = 1000, duplex: bool = True) -> None:
        self.add(t, 10, "pipe", pipe=pipe, pipe_name=pipe, duplex=duplex, capacity=capacity)

    def call(self, t: int, pid: int, end: str, op: str, phase: str, **fields: Any) -> Event:
        fields.setdefault("pipe", "p1")
        return self.add(t, pid, "call", end=end, op=op, phase=phase, **fields)

    def send(self, t: int, pid: int, end: str, h: str, n: int, **fields: Any) -> Event:
        self.call(t, pid, end, "send", "begin", **fields)
        return self.call(t, pid, end, "send", "end", hash=h, nbytes=n, **fields)

    def recv(self, t: int, pid: int, end: str, h: str, n: int, **fields: Any) -> Event:
        self.call(t, pid, end, "recv", "begin", **fields)
        return self.call(t, pid, end, "recv", "end", hash=h, nbytes=n, **fields)

    def feed(self, analysis: Analysis) -> list[Event]:
        """Feed the events added since the last feed; return the new verdicts."""
        new, self.fed = self.events[self.fed :], len(self.events)
        return analysis.feed(new)


def kinds(verdicts: list[Event]) -> list[str]:
    return [v["verdict"] for v in verdicts]


def test_fifo_matches_each_direction_in_order_with_latency() -> None:
    s, an = Stream(), Analysis("r1")
    s.pipe()
    x1 = s.send(100, 11, "a", "00000001", 10)
    y1 = s.send(150, 12, "b", "000000f1", 7)
    x2 = s.send(200, 11, "a", "00000002", 20)
    r1 = s.recv(300, 12, "b", "00000001", 10)
    q1 = s.recv(330, 11, "a", "000000f1", 7)
    r2 = s.recv(450, 12, "b", "00000002", 20)
    assert s.feed(an) == []
    assert (r1["match"], r1["latency_ns"]) == (x1["seq"], 200)
    assert (r2["match"], r2["latency_ns"]) == (x2["seq"], 250)
    assert (q1["match"], q1["latency_ns"]) == (y1["seq"], 180)
    assert not any("corrupt" in ev for ev in s.events)


def test_receive_seen_before_its_send_is_matched_when_the_send_arrives() -> None:
    s, an = Stream(), Analysis("r1")
    s.pipe()
    r = s.recv(100, 12, "b", "0000abcd", 5)
    s.feed(an)
    assert "match" not in r
    x = s.send(101, 11, "a", "0000abcd", 5)
    assert s.feed(an) == []
    assert (r["match"], r["latency_ns"]) == (x["seq"], 0)
    assert an.ends()["p1/b"]["queued"] == 0


def test_hash_mismatch_is_corrupt_naming_both_events_and_matching_goes_on() -> None:
    s, an = Stream(), Analysis("r1")
    s.pipe()
    x1 = s.send(100, 11, "a", "11111111", 10)
    x2 = s.send(110, 11, "a", "22222222", 12)
    bad = s.recv(200, 12, "b", "deadbeef", 10)
    good = s.recv(210, 12, "b", "22222222", 12)
    verdicts = s.feed(an)
    assert kinds(verdicts) == ["corrupt"]
    v = verdicts[0]
    assert v["events"] == [x1["seq"], bad["seq"]]
    assert (v["pipe"], v["end"], v["pid"], v["kind"]) == ("p1", "b", 0, "verdict")
    for text in ("Process-1 seq 3", "Process-2 seq 7", "11111111", "deadbeef", "10 bytes"):
        assert text in v["message"]
    assert bad["corrupt"] == v["message"] and bad["match"] == x1["seq"]
    assert good["match"] == x2["seq"] and "corrupt" not in good
    assert an.verdicts == verdicts
    assert an.stats()["p1"]["a>b"]["corrupt"] == 1


def test_size_mismatch_is_corrupt() -> None:
    s, an = Stream(), Analysis("r1")
    s.pipe()
    s.send(100, 11, "a", "11111111", 10)
    s.call(200, 12, "b", "recv_bytes", "end", nbytes=9)
    assert kinds(s.feed(an)) == ["corrupt"]


def test_frame_may_overtake_another_writers_frame_but_not_its_own() -> None:
    s, an = Stream(), Analysis("r1")
    s.pipe()
    x1 = s.send(100, 11, "a", "11111111", 10)
    x3 = s.send(101, 13, "a", "33333333", 10)
    r3 = s.recv(200, 12, "b", "33333333", 10)
    r1 = s.recv(201, 12, "b", "11111111", 10)
    assert s.feed(an) == []
    assert (r3["match"], r1["match"]) == (x3["seq"], x1["seq"])
    s.send(300, 11, "a", "44444444", 10)
    s.send(301, 11, "a", "55555555", 10)
    s.recv(400, 12, "b", "55555555", 10)
    assert kinds(s.feed(an)) == ["corrupt"]


def test_buffer_too_short_is_matched_and_not_corrupt() -> None:
    s, an = Stream(), Analysis("r1")
    s.pipe()
    x = s.send(100, 11, "a", "11111111", 64)
    err = s.call(
        200, 12, "b", "recv_bytes_into", "error", error_type="BufferTooShort", error="too short"
    )
    assert s.feed(an) == []
    assert err["match"] == x["seq"] and "corrupt" not in err
    assert an.ends()["p1/b"]["state"] == "idle"
    assert an.ends()["p1/b"]["queued"] == 0


def test_bad_message_length_is_corrupt_only_after_a_race() -> None:
    clean, an = Stream(), Analysis("r1")
    clean.pipe()
    clean.send(100, 11, "a", "11111111", 5000)
    over = clean.call(
        200, 12, "b", "recv_bytes", "error", error_type="OSError", error="bad message length"
    )
    assert clean.feed(an) == []
    assert "corrupt" not in over and an.ends()["p1/b"]["state"] == "errored"

    raced, an = Stream(), Analysis("r1")
    raced.pipe(capacity=65536)
    raced.call(100, 11, "a", "send_bytes", "begin")
    raced.call(101, 13, "a", "send_bytes", "begin")
    raced.call(150, 11, "a", "send_bytes", "end", hash="11111111", nbytes=5000)
    raced.call(151, 13, "a", "send_bytes", "end", hash="33333333", nbytes=5000)
    raced.call(200, 12, "b", "recv_bytes", "end", hash="0badf00d", nbytes=5000)
    bad = raced.call(
        210, 12, "b", "recv_bytes", "error", error_type="OSError", error="bad message length"
    )
    verdicts = raced.feed(an)
    assert kinds(verdicts) == ["corrupt", "corrupt"]
    assert "bad message length" in bad["corrupt"] and "interleaved" in bad["corrupt"]
    # 10008 bytes written, 5004 + 4 read: the rest is still in the kernel.
    assert an.stats()["p1"]["a>b"]["queued"] == 5000


def test_matching_resynchronises_after_a_garbled_frame_swallows_two_frames() -> None:
    s, an = Stream(), Analysis("r1")
    s.pipe()
    x1 = s.send(100, 11, "a", "11111111", 100)
    s.send(101, 13, "a", "22222222", 100)
    x3 = s.send(102, 13, "a", "33333333", 50)
    # One header read, then 204 bytes: the rest of x1 and all of x2 (104 + 104 = 4 + 204).
    bad = s.recv(200, 12, "b", "0badf00d", 204)
    good = s.recv(210, 12, "b", "33333333", 50)
    assert kinds(s.feed(an)) == ["corrupt"]
    assert bad["match"] == x1["seq"]
    assert good["match"] == x3["seq"] and "corrupt" not in good
    assert an.stats()["p1"]["a>b"]["queued"] == 0


def test_a_frame_nobody_sent_is_flagged_after_the_threshold() -> None:
    s, an = Stream(), Analysis("r1", deadlock_after_ns=SECOND)
    s.pipe()
    s.send(100, 11, "a", "11111111", 10)
    s.recv(200, 12, "b", "11111111", 10)
    extra = s.recv(300, 12, "b", "99999999", 10)
    assert s.feed(an) == []
    assert an.tick(300 + SECOND) == []  # its send event may still be on its way
    verdicts = an.tick(301 + SECOND)
    assert kinds(verdicts) == ["corrupt"] and verdicts[0]["events"] == [extra["seq"]]
    assert "no frame was sent towards end b" in extra["corrupt"]


def test_unpickling_error_on_recv_is_corrupt() -> None:
    s, an = Stream(), Analysis("r1")
    s.pipe()
    s.send(100, 11, "a", "11111111", 10)
    s.call(200, 12, "b", "recv", "error", error_type="UnpicklingError", error="invalid load key")
    verdicts = s.feed(an)
    assert kinds(verdicts) == ["corrupt"] and "invalid load key" in verdicts[0]["message"]


def test_garbled_race_stream_neither_crashes_nor_explodes() -> None:
    rng = random.Random(7)
    s, an = Stream(), Analysis("r1", deadlock_after_ns=1000)
    s.pipe(capacity=65536)
    t, receives = 0, 0
    for _ in range(400):
        t += rng.randrange(1, 50)
        if rng.random() < 0.5:
            s.send(
                t, rng.choice([11, 13]), "a", f"{rng.getrandbits(32):08x}", rng.randrange(1, 9000)
            )
        elif rng.random() < 0.9:
            receives += 1
            s.recv(t, 12, "b", f"{rng.getrandbits(32):08x}", rng.randrange(1, 9000))
        else:
            receives += 1
            s.call(t, 12, "b", "recv", "error", error_type="OSError", error="bad message length")
        s.feed(an)
    an.tick(t + 10_000)
    assert 0 < len(an.verdicts) <= receives
    assert all(v["verdict"] == "corrupt" for v in an.verdicts)
    json.dumps(an.snapshot())


def test_any_sequence_of_calls_is_analysed_without_error() -> None:
    rng = random.Random(11)
    s, an = Stream(), Analysis("r1", deadlock_after_ns=100)
    s.pipe(pipe="p1")
    s.pipe(pipe="p2", duplex=False)
    ops = ["send", "send_bytes", "recv", "recv_bytes", "recv_bytes_into", "poll", "close"]
    errors = [("EOFError", ""), ("OSError", "bad message length"), ("BufferTooShort", "")]
    errors += [("UnpicklingError", "invalid load key"), ("BrokenPipeError", "[Errno 32]")]
    for t in range(1, 3000):
        pid, op = rng.choice([10, 11, 12, 13]), rng.choice(ops)
        where = {"pipe": rng.choice(["p1", "p2"]), "end": rng.choice(["a", "b", "?"])}
        phase = rng.choice(["begin", "end", "end", "error"])
        fields: dict[str, Any] = {"timeout": rng.choice([None, 0.0, 1.0])}
        if phase == "error":
            fields["error_type"], fields["error"] = rng.choice(errors)
        if rng.random() < 0.7:
            fields.update(hash=f"{rng.randrange(4):08x}", nbytes=rng.randrange(0, 100))
        s.add(t, pid, "call", op=op, phase=phase, **where, **fields)
        if rng.random() < 0.01:
            s.add(t, pid, "process", op="exit", exitcode=rng.choice([0, -9, None]))
        s.feed(an)
        an.tick(t)
    json.dumps(an.snapshot())
    assert {v["verdict"] for v in an.verdicts} <= {"corrupt", "deadlock", "eof", "killed"}


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


def recv_recv_deadlock(threshold: int) -> tuple[Stream, Analysis]:
    s, an = Stream(), Analysis("r1", deadlock_after_ns=threshold)
    s.pipe()
    s.add(1, 11, "attach", pipe="p1", pipe_name="p1", end="a")
    s.add(1, 12, "attach", pipe="p1", pipe_name="p1", end="b")
    s.call(100, 11, "a", "recv", "begin", queued=0)
    s.call(110, 12, "b", "recv", "begin", queued=0)
    s.feed(an)
    return s, an


def test_recv_recv_deadlock_is_reported_after_the_threshold_and_once() -> None:
    _, an = recv_recv_deadlock(SECOND)
    assert an.tick(110 + SECOND) == []
    verdicts = an.tick(111 + SECOND)
    assert kinds(verdicts) == ["deadlock"]
    v = verdicts[0]
    assert v["message"] == (
        "deadlock: Process-1 waits in recv on pipe p1 end a, "
        "Process-2 waits in recv on pipe p1 end b; nothing is queued in either direction"
    )
    assert v["cycle"] == [
        {"pid": 11, "process": "Process-1", "pipe": "p1", "end": "a", "op": "recv"},
        {"pid": 12, "process": "Process-2", "pipe": "p1", "end": "b", "op": "recv"},
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


def test_broken_pipe_and_killed_verdicts() -> None:
    s, an = Stream(), Analysis("r1")
    s.pipe()
    exit_event = s.add(100, 12, "process", op="exit", exitcode=-9)
    s.add(101, 13, "process", op="exit", exitcode=0)
    s.add(
        102, 10, "process", op="exit", exitcode=None, killed=True
    )  # vanished, as the collector saw
    s.call(200, 11, "a", "send", "begin")
    err = s.call(210, 11, "a", "send", "error", error_type="BrokenPipeError", error="[Errno 32]")
    s.call(220, 11, "a", "send", "error", error_type="BrokenPipeError", error="[Errno 32]")
    verdicts = s.feed(an)
    assert kinds(verdicts) == ["killed", "killed", "eof"]
    assert verdicts[0]["message"] == "Process-2 (pid 12) was killed by signal 9 (SIGKILL)"
    assert verdicts[0]["events"] == [exit_event["seq"]]
    assert verdicts[1]["message"] == "MainProcess (pid 10) was killed"
    assert verdicts[2]["events"] == [err["seq"]] and verdicts[2]["end"] == "a"
    assert "BrokenPipeError in send on pipe p1 end a" in verdicts[2]["message"]
    assert an.ends()["p1/a"]["state"] == "errored"


def test_statistics_are_exact_on_a_small_example() -> None:
    s, an = Stream(), Analysis("r1")
    s.pipe(capacity=8192)
    s.call(0, 12, "b", "recv", "begin")
    s.send(1 * SECOND, 11, "a", "00000001", 10)
    s.call(1 * SECOND + 100, 12, "b", "recv", "end", hash="00000001", nbytes=10)
    s.send(2 * SECOND, 11, "a", "00000002", 20)
    s.send(3 * SECOND, 11, "a", "00000003", 30)
    s.call(3 * SECOND + 50, 12, "b", "recv", "begin")
    s.call(3 * SECOND + 250, 12, "b", "recv", "end", hash="00000002", nbytes=20)
    s.call(3 * SECOND + 300, 12, "b", "recv", "begin")
    s.call(3 * SECOND + 1300, 12, "b", "recv", "end", hash="00000003", nbytes=30)
    s.feed(an)
    stats = an.stats()["p1"]["a>b"]
    assert stats == {
        "messages": 3,
        "bytes": 60,
        "messages_per_s": 1.5,
        "bytes_per_s": 30.0,
        "latency_ns": {"p50": 1300, "p90": SECOND + 250, "p99": SECOND + 250, "max": SECOND + 250},
        "blocked_ns": {"recv": SECOND + 100 + 200 + 1000, "send": 0},
        "queued": 0,
        "peak_queued": 58,  # frames of 20 and 30 bytes, each with its 4-byte header
        "capacity": 8192,
        "corrupt": 0,
    }
    assert an.stats()["p1"]["b>a"]["messages"] == 0
    snapshot = an.snapshot()
    assert json.loads(json.dumps(snapshot)) == snapshot


def test_queued_bytes_never_exceed_the_capacity() -> None:
    s, an = Stream(), Analysis("r1")
    s.pipe(capacity=1000)
    # A 5000-byte frame's send ends only after the receiver has read most of it.
    s.send(100, 11, "a", "11111111", 5000)
    s.feed(an)
    assert (an.ends()["p1/b"]["queued"], an.ends()["p1/b"]["peak_queued"]) == (1000, 1000)
    s.recv(200, 12, "b", "11111111", 5000)
    s.feed(an)
    assert an.stats()["p1"]["a>b"]["queued"] == 0


def test_a_one_way_pipe_has_one_direction() -> None:
    s, an = Stream(), Analysis("r1")
    s.pipe(duplex=False)
    s.call(10, 11, "a", "send", "begin")
    s.call(11, 11, "a", "send", "error", error_type="OSError", error="connection is read-only")
    x = s.send(20, 12, "b", "11111111", 10)
    r = s.recv(30, 11, "a", "11111111", 10)
    assert s.feed(an) == []
    assert list(an.stats()["p1"]) == ["b>a"] and r["match"] == x["seq"]


def test_calls_before_the_pipe_event_of_a_one_way_pipe_then_use_its_one_direction() -> None:
    s, an = Stream(), Analysis("r1")
    s.call(10, 11, "a", "send", "begin")
    s.call(11, 11, "a", "send", "error", error_type="OSError", error="connection is read-only")
    assert s.feed(an) == []  # taken for a duplex pipe until its pipe event says otherwise
    s.pipe(t=12, duplex=False)
    s.call(20, 11, "a", "send", "begin")
    s.call(23, 11, "a", "send", "error", error_type="OSError", error="connection is read-only")
    x = s.send(30, 12, "b", "11111111", 10)
    r = s.recv(40, 11, "a", "11111111", 10)
    assert s.feed(an) == []
    stats = an.stats()["p1"]
    assert stats["a>b"]["blocked_ns"] == {"send": 1}
    assert stats["b>a"]["blocked_ns"] == {"recv": 0, "send": 3}
    assert r["match"] == x["seq"]


def test_percentiles_use_the_nearest_rank() -> None:
    assert percentiles(list(range(10, 0, -1))) == {"p50": 5, "p90": 9, "p99": 10, "max": 10}
    assert percentiles([]) == {"p50": None, "p90": None, "p99": None, "max": None}


def test_latency_percentiles_past_the_exact_values_stay_within_one_percent() -> None:
    rng = random.Random(7)
    # Microseconds to seconds, a cluster of tiny values, and ties.
    values = [int(rng.lognormvariate(11, 2.5)) for _ in range(30_000)]
    values += [rng.randrange(0, 2000) for _ in range(5000)] + [123_456] * 3000
    rng.shuffle(values)
    digest = LatencyDigest()
    for i, value in enumerate(values, 1):
        digest.add(value)
        if i in (EXACT_LATENCIES, EXACT_LATENCIES + 1, len(values)):
            exact, got = percentiles(values[:i]), digest.percentiles()
            assert got["max"] == exact["max"]
            for p in ("p50", "p90", "p99"):
                want, have = exact[p], got[p]
                assert want is not None and have is not None
                assert abs(have - want) <= 0.01 * want, (i, p, have, want)
    assert digest.count == len(values)


def test_latency_statistics_of_many_messages_come_from_the_digest() -> None:
    s, an = Stream(), Analysis("r1")
    s.pipe(capacity=10**9)
    latencies = [1000 + 37 * i for i in range(EXACT_LATENCIES + 500)]
    for i, latency in enumerate(latencies):
        t = 10 * SECOND + i * 100_000
        s.send(t, 11, "a", f"{i:08x}", 5)
        s.recv(t + latency, 12, "b", f"{i:08x}", 5)
    s.feed(an)
    stats = an.stats()["p1"]["a>b"]
    exact = percentiles(latencies)
    assert stats["messages"] == len(latencies) and stats["latency_ns"]["max"] == exact["max"]
    for p in ("p50", "p90", "p99"):
        want = exact[p]
        assert want is not None
        assert abs(stats["latency_ns"][p] - want) <= 0.01 * want
