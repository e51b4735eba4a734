"""Collector: merged order, nothing lost on SIGKILL, blocked calls visible, clean close, pacing."""

import multiprocessing
import os
import signal
import time
from multiprocessing.connection import Connection
from typing import Any

import pytest

import pipecore
from pipecore import telemetry
from tests.unit.conftest import START_METHODS, Event, RunFixture, calls, make_run


def _exit_of(events: list[Event], pid: int) -> Event | None:
    for e in events:
        if e["kind"] == "process" and e.get("op") == "exit" and e["pid"] == pid:
            return e
    return None


def _ping(end: Connection, rounds: int) -> None:
    for i in range(rounds):
        end.send(i)
        assert end.recv() == i


def _pong(end: Connection, rounds: int) -> None:
    for _ in range(rounds):
        end.send(end.recv())


def test_events_of_several_processes_merge_in_causal_order(run: RunFixture) -> None:
    run.activate()
    a, b = pipecore.Pipe()
    ctx = multiprocessing.get_context("fork")
    ping = ctx.Process(target=_ping, args=(a, 200))
    pong = ctx.Process(target=_pong, args=(b, 200))
    ping.start()
    pong.start()
    ping.join(30)
    pong.join(30)
    assert (ping.exitcode, pong.exitcode) == (0, 0)
    ping_pid, pong_pid = ping.pid or 0, pong.pid or 0
    events = run.drain_until(
        lambda ev: _exit_of(ev, ping_pid) is not None and _exit_of(ev, pong_pid) is not None
    )
    events += run.drain(final=True)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert all(e["run"] == run.run_id for e in events)
    # time order, except that a receiver's events may move after the send it took
    # (causal order; the pure merge is tested in test_ordering.py)
    assert [e["t"] for e in events if e["pid"] == ping.pid] == sorted(
        e["t"] for e in events if e["pid"] == ping.pid
    )
    send_ends = calls(events, pid=ping.pid, op="send", phase="end")
    for sent, got in zip(
        send_ends, calls(events, pid=pong.pid, op="recv", phase="end"), strict=True
    ):
        assert sent["seq"] < got["seq"]
    for pid in (ping.pid, pong.pid):
        pseqs = [e["pseq"] for e in events if e["pid"] == pid]
        assert pseqs == list(range(1, len(pseqs) + 1))
    sends = calls(events, pid=ping.pid, op="send", phase="begin")
    received = calls(events, pid=pong.pid, op="recv", phase="end")
    assert len(sends) == len(received) == 200
    for sent, got in zip(sends, received, strict=True):
        assert sent["t"] < got["t"]
    assert [e["preview"] for e in received] == [str(i) for i in range(200)]
    a.close()
    b.close()


def _calls_then_wait(end: Connection, done: Connection, rounds: int) -> None:
    a, b = pipecore.Pipe(name="inner")
    for i in range(rounds):
        a.send(i)
        b.recv()
    done.send("returned")
    time.sleep(60)  # killed before this ends


@pytest.mark.parametrize("method", START_METHODS)
def test_sigkill_right_after_calls_returned_loses_none_of_their_events(
    run: RunFixture, method: str
) -> None:
    run.activate()
    activator, keep = pipecore.Pipe()
    done_r, done_w = multiprocessing.Pipe(duplex=False)
    ctx: Any = multiprocessing.get_context(method)
    child = ctx.Process(target=_calls_then_wait, args=(activator, done_w, 300))
    child.start()
    try:
        assert done_r.poll(30)
        assert done_r.recv() == "returned"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.join(10)
    assert child.exitcode == -signal.SIGKILL
    pid = child.pid or 0
    events = run.drain_until(lambda ev: _exit_of(ev, pid) is not None)
    inner = [e for e in events if e.get("pipe_name") == "inner"]
    assert len(calls(inner, op="send", phase="end")) == 300
    assert len(calls(inner, op="recv", phase="end")) == 300
    exit_event = _exit_of(events, pid)
    assert exit_event is not None
    assert exit_event["exitcode"] is None
    assert exit_event["killed"] is True
    assert "pseq" not in exit_event
    keep.close()
    done_r.close()
    done_w.close()


def _blocks_in_recv(end: Connection) -> None:
    assert end.recv() == "release"


def test_threads_of_one_process_talking_over_a_pipe_are_released_at_once(
    run: RunFixture,
) -> None:
    import threading

    run.activate()
    a, b = pipecore.Pipe()
    rounds = 200

    def echo() -> None:
        for _ in range(rounds):
            b.send_bytes(b.recv_bytes())

    thread = threading.Thread(target=echo)
    thread.start()
    for n in range(rounds):
        a.send_bytes(b"%d" % n)
        assert a.recv_bytes() == b"%d" % n
    thread.join()
    # Nothing is held back for being young: one drain must release every call, since a
    # receive waits only for another process's send, never for its own process's.
    run.collector.hold_ns = 0
    events = calls(run.drain())
    assert len(events) == rounds * 8, len(events)
    assert [e["pseq"] for e in events] == sorted(e["pseq"] for e in events)
    for op in ("send_bytes", "recv_bytes"):
        assert len(calls(events, op=op, phase="end")) == 2 * rounds
    a.close()
    b.close()


def test_the_begin_of_a_blocked_recv_is_visible_while_it_blocks(run: RunFixture) -> None:
    run.activate()
    a, b = pipecore.Pipe()
    child = multiprocessing.get_context("spawn").Process(target=_blocks_in_recv, args=(b,))
    child.start()
    try:
        events = run.drain_until(lambda ev: bool(calls(ev, pid=child.pid, op="recv")))
        recv_calls = calls(events, pid=child.pid, op="recv")
        assert [e["phase"] for e in recv_calls] == ["begin"]
        assert recv_calls[0]["queued"] == 0
        assert recv_calls[0]["end"] == "b"
        a.send("release")
        events = run.drain_until(lambda ev: bool(calls(ev, pid=child.pid, op="recv", phase="end")))
        assert [e["phase"] for e in calls(events, pid=child.pid, op="recv")] == ["begin", "end"]
    finally:
        child.join(10)
    assert child.exitcode == 0
    a.close()
    b.close()


def _pong_once(end: Connection) -> None:
    end.send(end.recv())


def _pidfds() -> int:
    fds = os.listdir("/proc/self/fd")
    return sum(_link(f"/proc/self/fd/{fd}") == "anon_inode:[pidfd]" for fd in fds)


def _link(path: str) -> str:
    try:
        return os.readlink(path)
    except FileNotFoundError:  # the listing's own descriptor, closed since
        return ""


def test_the_ring_of_a_process_gone_is_read_to_its_end_and_removed(run: RunFixture) -> None:
    run.activate()
    children = []
    ends = []
    for _ in range(6):
        a, b = pipecore.Pipe()
        child = multiprocessing.get_context("fork").Process(target=_pong_once, args=(b,))
        child.start()
        assert child.pid is not None
        children.append((child, a))
        ends += [a, b]
    pids = [child.pid or 0 for child, _ in children]
    # Every child's ring is found while it waits in recv, so its exit is told by a pidfd.
    run.drain_until(lambda ev: all(calls(ev, pid=pid, op="recv") for pid in pids))
    assert _pidfds() == 7
    for n, (child, a) in enumerate(children):
        a.send(n)
        assert a.recv() == n
        child.join(10)
        assert child.exitcode == 0
    # Every child's calls and exit are taken; then its ring leaves the run directory.
    events = run.drain_until(lambda ev: all(_exit_of(ev, pid) for pid in pids))
    for pid in pids:
        assert [e["op"] for e in calls(events, pid=pid, phase="end")] == ["recv", "send"]
    run.drain()
    rings = sorted(n for n in os.listdir(run.run_dir) if n.endswith(".ring"))
    assert rings == [f"{os.getpid()}.ring"]
    # Only the live ring's pidfd is still open.
    assert _pidfds() == 1
    for end in ends:
        end.close()


def _exits_without_bootstrap(activator: Connection) -> None:
    activator.send("bye")
    activator.recv()
    os._exit(0)  # skips the exit event: the collector must notice the pid is gone


@pytest.mark.parametrize("pidfds", [True, False], ids=["pidfd", "proc"])
def test_a_process_gone_without_an_exit_event_is_reported_killed(
    run: RunFixture, monkeypatch: pytest.MonkeyPatch, pidfds: bool
) -> None:
    if not pidfds:  # a kernel without pidfd_open: the collector reads /proc instead
        monkeypatch.delattr(os, "pidfd_open")
    run.activate()
    activator, keep = pipecore.Pipe()
    child = multiprocessing.get_context("spawn").Process(
        target=_exits_without_bootstrap, args=(activator,)
    )
    child.start()
    assert keep.recv() == "bye"
    pid = child.pid or 0
    # Its ring is found while it lives (a pidfd is opened for it), then it ends.
    run.drain_until(lambda ev: bool(calls(ev, pid=pid, op="send", phase="end")))
    keep.send("go")
    child.join(10)
    events = run.drain_until(lambda ev: _exit_of(ev, pid) is not None)
    exit_event = _exit_of(events, pid)
    assert exit_event is not None
    assert (exit_event["exitcode"], exit_event["killed"]) == (None, True)
    assert exit_event["process"] == child.name
    keep.close()


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_close_leaves_no_files_mappings_or_fds() -> None:
    before = _open_fds()
    run = make_run()
    run.activate()
    a, b = pipecore.Pipe()
    a.send("x")
    b.recv()
    run.collector.set_step_mode(False)
    run.drain(final=True)
    a.close()
    b.close()
    telemetry.deactivate()
    run.drain(final=True)
    run.collector.close()
    assert not os.path.exists(run.run_dir)
    assert _open_fds() == before
    with open("/proc/self/maps") as maps:
        assert run.run_dir not in maps.read()
    assert run.collector.drain() == []


def _output(events: list[Event]) -> list[Event]:
    return [e for e in events if e["kind"] == "output"]


def test_pace_sizes_each_window_from_the_bytes_drained_per_unit_of_work() -> None:
    from pipecore.ring import POSITION, WINDOW_OFFSET
    from pipecore.ringpace import PACE_NS

    run = make_run(window=256 * 1024)
    run.activate()
    try:
        for n in range(600):  # about 100 KB: within the window, more than the least one
            telemetry.record_event({"kind": "output", "stream": "stdout", "text": f"{n:0100d}"})
        run.collector.bound_lag(3 * PACE_NS)
        run.drain_until(lambda events: len(_output(events)) >= 600)
        read = sum(ring.read_bytes for ring in run.collector._rings.values())
        assert 64 * 1024 < read < 256 * 1024
        run.collector.pace(PACE_NS // 2)  # not enough work yet to tell the pace
        ring_file = os.path.join(run.run_dir, f"{os.getpid()}.ring")
        with open(ring_file, "rb") as f:
            assert POSITION.unpack_from(f.read(256), WINDOW_OFFSET)[0] == 256 * 1024
        run.collector.pace(PACE_NS // 2)
        # drained `read` bytes in PACE_NS of work: three times that in 3 × PACE_NS
        with open(ring_file, "rb") as f:
            assert POSITION.unpack_from(f.read(256), WINDOW_OFFSET)[0] == (3 * read) & ~7
    finally:
        telemetry.deactivate()
        run.drain(final=True)
        run.collector.close()


def test_drains_bounded_in_bytes_and_events_still_merge_rings_in_time_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pipecore.collector import Collector
    from pipecore.ring import REC_EVENT
    from pipecore.ringwriter import RingWriter

    run = make_run()
    # Two rings of two live processes (this one and its parent), written in turn: one
    # with long records, one with short, so that a byte budget cuts them at different
    # times. Nothing may go out before an older record of the other ring.
    writers = []
    for pid in (os.getpid(), os.getppid()):
        monkeypatch.setattr(os, "getpid", lambda pid=pid: pid)
        writers.append(RingWriter(run.run_dir))
    monkeypatch.undo()
    collector = Collector(run.run_dir, run.run_id, hold_ns=0)
    written = []
    for n in range(600):
        writer = writers[n % 2]
        text = f"{n}:" + ("x" * 400 if n % 2 == 0 else "")
        writer._write_json(REC_EVENT, {"kind": "output", "stream": "stdout", "text": text}, True, n)
        written.append(text)
    out: list[dict[str, Any]] = []
    cut = 0
    for _ in range(10_000):
        got = collector.drain(budget=2048, most=50)
        assert len(got) <= 50
        out += got
        cut += collector.behind
        if not collector.behind:
            break
    out += collector.drain(final=True)
    try:
        assert cut > 10
        assert [e["text"] for e in out] == written
        assert [e["seq"] for e in out] == list(range(1, 601))
    finally:
        for writer in writers:
            writer.mm.close()
        collector.close()
        run.collector.close()
