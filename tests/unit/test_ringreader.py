"""Reading a process's ring: in-flight slots, a writer waiting on a full ring, repeated calls."""

import importlib
import json
import os
import shutil
import tempfile
import time

import pytest

import pipecore
from pipecore import ringreader, telemetry
from pipecore.collector import Collector
from tests.unit.conftest import Event, RunFixture, calls, make_run


def test_ends_beyond_the_in_flight_slots_still_record_each_begin_once(run: RunFixture) -> None:
    run.activate()
    pipes = [pipecore.Pipe() for _ in range(150)]  # 300 ends: more than the ring's slots
    for a, b in pipes:
        a.send(a.pipe_id)
        assert b.recv() == a.pipe_id
    events = run.drain_until(lambda ev: len(calls(ev, op="recv", phase="end")) == 150)
    events += run.drain(final=True)
    for phase in ("begin", "end"):
        sends = calls(events, op="send", phase=phase)
        assert sorted(e["pipe"] for e in sends) == sorted(a.pipe_id for a, _ in pipes)
    begins = calls(events, phase="begin")
    assert len({e["pseq"] for e in begins}) == len(begins) == 300
    for a, b in pipes:
        a.close()
        b.close()


def _unread(run_dir: str) -> int:
    """Bytes the process's ring holds that the collector has not read."""
    from pipecore.ring import POSITION, READ_POS_OFFSET, WRITE_POS_OFFSET

    with open(os.path.join(run_dir, f"{os.getpid()}.ring"), "rb") as f:
        head = f.read(256)
    return int(
        POSITION.unpack_from(head, WRITE_POS_OFFSET)[0]
        - POSITION.unpack_from(head, READ_POS_OFFSET)[0]
    )


@pytest.mark.parametrize(
    ("ring_bytes", "window"),
    [(64 * 1024, 0), (None, 64 * 1024)],
    ids=["a 64 KiB ring", "a 2 MiB ring with a 64 KiB window"],
)
def test_a_writer_with_more_than_its_ring_holds_waits_is_seen_as_busy_and_loses_nothing(
    ring_bytes: int | None, window: int
) -> None:
    import threading

    run = make_run(ring_bytes=ring_bytes, window=window)
    run.activate()
    done = threading.Event()

    def flood() -> None:
        for n in range(2000):  # ~2000 × 100-byte records, about 300 KB: far more than 64 KiB
            telemetry.record_event({"kind": "output", "stream": "stdout", "text": f"{n:0100d}"})
        done.set()

    writer = threading.Thread(target=flood)
    try:
        writer.start()
        deadline = time.monotonic() + 20
        while not run.collector.writers_waiting():
            assert time.monotonic() < deadline and not done.is_set(), "the writer never waited"
            time.sleep(0.001)
        assert 0 < _unread(run.run_dir) <= 64 * 1024
        run.drain_until(lambda events: done.is_set(), timeout=20)
        writer.join(10)
        assert not run.collector.writers_waiting()
        run.drain(final=True)
        texts = [e["text"] for e in run.events if e["kind"] == "output"]
        assert texts == [f"{n:0100d}" for n in range(2000)]
    finally:
        while writer.is_alive():  # never leave the writer waiting on a ring nobody drains
            run.drain()
            writer.join(0.01)
        telemetry.deactivate()
        run.drain(final=True)
        run.collector.close()


def test_repeated_calls_from_one_line_each_get_their_own_complete_events(run: RunFixture) -> None:
    from pipecore.ring import frame_hash

    run.activate()
    a, b = pipecore.Pipe()
    # one line, frames alike and unlike: same bytes, a changed byte, a 2 KiB frame whose
    # first 192 bytes stay while its tail changes
    frames = [b"same" * 25] * 3 + [b"samE" * 25, b"same" * 25]
    frames += [b"h" * 192 + bytes([n]) * 1856 for n in (1, 2, 1)]
    for frame in frames:
        a.send_bytes(frame)
        assert b.recv_bytes() == frame
    events = run.drain_until(lambda ev: len(calls(ev, op="recv_bytes", phase="end")) == 8)
    events += run.drain(final=True)
    for op in ("send_bytes", "recv_bytes"):
        ends = calls(events, op=op, phase="end")
        assert [e["hash"] for e in ends] == [f"{frame_hash(f):08x}" for f in frames]
        assert [e["nbytes"] for e in ends] == [len(f) for f in frames]
        assert [e["head"] for e in ends] == [f[:64].hex() for f in frames]
        assert [e["preview"][:8] for e in ends] == [repr(f)[:8] for f in frames]
        begins = calls(events, op=op, phase="begin")
        assert [e["pseq"] + 1 for e in begins] == [e["pseq"] for e in ends]
        assert all(e["t"] <= end["t"] for e, end in zip(begins, ends, strict=True))
    # every event is its own object: what a consumer adds to one stays on that one
    ends = calls(events, op="recv_bytes", phase="end")
    ends[0]["match"] = 1
    assert [e.get("match") for e in ends] == [1] + [None] * 7
    a.close()
    b.close()


def _decoded(run_dir: str, run_id: str, budget: int | None) -> list[Event]:
    """Every event a fresh collector decodes from a copy of `run_dir`, drained `budget`
    bytes at a time and then finally."""
    copy = tempfile.mkdtemp(prefix="pipescope-test-", dir="/dev/shm")
    # The steps FIFO is the run's own (step mode); the rings are what is read.
    shutil.copytree(run_dir, copy, dirs_exist_ok=True, ignore=lambda _, names: ["steps"])
    collector = Collector(copy, run_id)
    try:
        events: list[Event] = []
        while True:
            got = collector.drain(budget=budget)
            events += got
            if not got and not collector.behind:
                break
        return events + collector.drain(final=True)
    finally:
        collector.close()


def test_the_c_reader_decodes_a_ring_as_the_python_reader_does(
    run: RunFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Imported whether or not this process records with the C writer (the Python writer's
    # run of these tests sets PIPESCOPE_PURE_PYTHON): the reader is compared either way.
    fast = importlib.import_module("pipecore._fastring").read_calls
    run.activate()
    a, b = pipecore.Pipe()
    c, d = pipecore.Pipe(duplex=False)
    # Calls that recur (decoded in C from their third time on) between calls that do not:
    # objects and bytes, a 2 KiB frame, a poll, an error, a second pipe, output lines.
    for n in range(60):
        a.send_bytes(b"x" * 100)
        assert b.recv_bytes() == b"x" * 100
        b.send({"n": n % 3})
        assert a.recv() == {"n": n % 3}
        if n % 7 == 0:
            d.send_bytes(bytes([n]) * 2048)
            assert c.poll(0)
            assert c.recv_bytes() == bytes([n]) * 2048
            telemetry.record_event({"kind": "output", "stream": "stdout", "text": f"line {n}"})
        if n % 11 == 0:
            with pytest.raises(OSError):
                c.send(n)
    telemetry.deactivate()
    taken = [0]

    def counted(*args: object) -> tuple[int, int, int]:
        r, got, t = fast(*args)
        taken[0] += got
        return r, got, t

    monkeypatch.setattr(ringreader, "_read_calls", counted)
    in_c = _decoded(run.run_dir, run.run_id, None)
    in_c_by_parts = _decoded(run.run_dir, run.run_id, 512)
    monkeypatch.setattr(ringreader, "_read_calls", None)
    in_python = _decoded(run.run_dir, run.run_id, None)
    assert len(in_python) > 500
    # About two records in three came through C: it was not bypassed.
    assert taken[0] > 200, taken
    assert in_c == in_python
    assert in_c_by_parts == in_python
    # Each event is its own dict, as the consumers add fields to them.
    assert len({id(e) for e in in_c}) == len(in_c)
    for conn in (a, b, c, d):
        conn.close()


def test_texts_a_process_could_not_decode_arrive_as_valid_unicode(run: RunFixture) -> None:
    """A line printed with undecodable bytes (kept by Python as lone surrogates) and a pipe
    named so reach the collector as U+FFFD, as a terminal shows them: every encoder
    downstream (JSON, the store, the websocket) needs valid text."""
    run.activate()
    telemetry.record_event({"kind": "output", "stream": "stdout", "text": "caf\udce9 \ud800!"})
    a, b = pipecore.Pipe(name="pipe caf\udce9")
    a.send("x")
    assert b.recv() == "x"
    events = run.drain_until(lambda ev: any(e["kind"] == "output" for e in ev))
    events += run.drain(final=True)
    output = next(e for e in events if e["kind"] == "output")
    assert output["text"] == "caf\ufffd \ufffd!"
    names = {e["pipe_name"] for e in events if "pipe_name" in e}
    assert names == {"pipe caf\ufffd"}
    for event in events:
        json.dumps(event, ensure_ascii=False).encode()  # raises on a lone surrogate
    a.close()
    b.close()
