"""Telemetry: the ring loses nothing, output and process lifetime become events, step mode."""

import multiprocessing
import os
import sys
import threading
import time
import zlib
from multiprocessing.connection import Connection
from typing import Any

import pytest

import pipecore
from pipecore import telemetry
from pipecore.ring import HASH_FULL_LIMIT, HEAD_STORE, frame_hash, sample_stride
from tests.unit.conftest import START_METHODS, Event, RunFixture, calls, make_run

ROUNDS = 50_000  # four call events each: 200k events through a 64 KiB ring


def _many_calls(activator: Connection, rounds: int) -> None:
    a, b = pipecore.Pipe()
    for i in range(rounds):
        a.send_bytes(bytes(i % 300))  # varying record sizes: wrap-around at odd places
        b.recv_bytes()
    activator.close()


def _exited(events: list[Event], pid: int) -> bool:
    return any(e["kind"] == "process" and e.get("op") == "exit" and e["pid"] == pid for e in events)


def test_a_small_ring_wraps_and_waits_for_the_collector_without_losing_events() -> None:
    run = make_run(ring_bytes=64 * 1024)
    try:
        run.activate()
        activator, keep = pipecore.Pipe()
        child = multiprocessing.get_context("spawn").Process(
            target=_many_calls, args=(activator, ROUNDS)
        )
        child.start()
        pid = child.pid or 0
        deadline = time.monotonic() + 90
        events: list[Event] = []
        done = False
        while not done and time.monotonic() < deadline:
            batch = run.collector.drain()
            events.extend(batch)
            done = _exited(batch, pid)
            time.sleep(0.01)
        child.join(30)
        events.extend(run.collector.drain(final=True))
        assert child.exitcode == 0
        mine = [e for e in events if e["pid"] == child.pid]
        assert [e["pseq"] for e in mine] == list(range(1, len(mine) + 1))
        received = calls(mine, op="recv_bytes", phase="end")
        assert len(received) == ROUNDS
        assert [e["nbytes"] for e in received] == [i % 300 for i in range(ROUNDS)]
        assert len(calls(mine, phase="begin")) == 2 * ROUNDS
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        keep.close()
    finally:
        telemetry.deactivate()
        run.collector.close()


def test_threads_of_one_process_record_without_mixing_records(run: RunFixture) -> None:
    run.activate()

    def work(n: int) -> None:
        a, b = pipecore.Pipe(name=f"thread {n}")
        for i in range(500):
            a.send((n, i))
            assert b.recv() == (n, i)
            telemetry.record_event({"kind": "output", "stream": "stdout", "text": f"{n}:{i}"})
        a.close()
        b.close()

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    events = run.drain_until(lambda ev: len(calls(ev, op="close")) == 8)
    assert sorted(e["pseq"] for e in events) == list(range(1, len(events) + 1))
    for n in range(4):
        got = calls(events, pipe_name=f"thread {n}", op="recv", phase="end")
        assert [e["preview"] for e in got] == [repr((n, i)) for i in range(500)]
    texts = [e["text"] for e in events if e["kind"] == "output"]
    assert sorted(texts) == sorted(f"{n}:{i}" for n in range(4) for i in range(500))


def test_a_thread_that_starts_or_ends_says_how_many_threads_are_left(run: RunFixture) -> None:
    run.activate()
    base = threading.active_count()  # this process's threads (the test's, and any others)
    go = threading.Event()
    first = threading.Thread(target=go.wait)
    second = threading.Thread(target=go.wait)
    first.start()
    second.start()
    go.set()
    first.join()
    second.join()
    events = run.drain_until(lambda ev: len([e for e in ev if e["kind"] == "thread"]) == 4)
    threads = [(e["op"], e["threads"]) for e in events if e["kind"] == "thread"]
    assert threads[:2] == [("start", base + 1), ("start", base + 2)]
    assert sorted(threads[2:]) == [("end", base), ("end", base + 1)]


def test_a_queues_feeder_thread_is_counted_as_a_helper(run: RunFixture) -> None:
    run.activate()
    base = threading.active_count()
    queue: multiprocessing.Queue[int] = multiprocessing.Queue()
    queue.put(1)  # starts the queue's feeder thread
    assert queue.get(timeout=10) == 1
    queue.close()
    queue.join_thread()  # the feeder ends once it has flushed
    events = run.drain_until(lambda ev: len([e for e in ev if e["kind"] == "thread"]) == 2)
    threads = [(e["op"], e["threads"], e["helpers"]) for e in events if e["kind"] == "thread"]
    assert threads == [("start", base + 1, 1), ("end", base, 0)]


def _child_prints(activator: Connection) -> None:
    print("hello")
    print("two\nlines", flush=True)
    print("to stderr", file=sys.stderr)
    sys.stdout.write("no newline at exit")
    activator.close()


@pytest.mark.parametrize("method", START_METHODS)
def test_printed_lines_become_output_events_and_still_print(
    run: RunFixture, method: str, capfd: pytest.CaptureFixture[str]
) -> None:
    run.activate()
    activator, keep = pipecore.Pipe()
    ctx: Any = multiprocessing.get_context(method)
    child = ctx.Process(target=_child_prints, args=(activator,))
    child.start()
    child.join(30)
    events = run.drain_until(lambda ev: _exited(ev, child.pid))
    lines = [(e["stream"], e["text"]) for e in events if e["kind"] == "output"]
    assert lines == [
        ("stdout", "hello"),
        ("stdout", "two"),
        ("stdout", "lines"),
        ("stderr", "to stderr"),
        ("stdout", "no newline at exit"),
    ]
    if method != "forkserver":  # a fork server's children write to its own stdout
        out, err = capfd.readouterr()
        assert "hello\ntwo\nlines\nno newline at exit" in out
        assert "to stderr\n" in err
    keep.close()


def _child_exits(activator: Connection, code: int) -> None:
    activator.close()
    sys.exit(code)


@pytest.mark.parametrize("method", START_METHODS)
def test_a_child_records_its_start_and_its_exit_code(run: RunFixture, method: str) -> None:
    run.activate()
    activator, keep = pipecore.Pipe()
    ctx: Any = multiprocessing.get_context(method)
    child = ctx.Process(target=_child_exits, args=(activator, 3), name="worker-x")
    child.start()
    child.join(30)
    assert child.exitcode == 3
    events = run.drain_until(lambda ev: _exited(ev, child.pid))
    lifetime = [e for e in events if e["kind"] == "process" and e["pid"] == child.pid]
    assert [(e["op"], e["process"]) for e in lifetime] == [
        ("start", "worker-x"),
        ("exit", "worker-x"),
    ]
    assert lifetime[0]["parent"] == os.getpid()
    assert lifetime[1]["exitcode"] == 3
    assert "killed" not in lifetime[1]
    keep.close()


def _child_sends_five(end: Connection) -> None:
    for i in range(5):
        end.send(i)


def _settles(run: RunFixture, pid: int, expected: int) -> None:
    """Drain for a while and check the child's finished sends stay at `expected`."""
    for _ in range(10):
        run.drain()
        time.sleep(0.02)
        assert len(calls(run.events, op="send", phase="end", pid=pid)) == expected


def test_step_mode_lets_exactly_one_call_run_per_grant(run: RunFixture) -> None:
    run.activate()
    run.collector.grant(3)  # granted while step mode is off: must not count later
    run.collector.set_step_mode(True)
    a, b = pipecore.Pipe()
    child = multiprocessing.get_context("fork").Process(target=_child_sends_five, args=(b,))
    child.start()
    pid = child.pid or 0

    def sends_done(events: list[Event]) -> int:
        return len(calls(events, op="send", phase="end", pid=pid))

    try:
        _settles(run, pid, 0)
        assert calls(run.events, pid=pid) == []  # waits before its begin
        for k in (1, 2):
            run.collector.grant()
            run.drain_until(lambda ev, k=k: sends_done(ev) == k)  # type: ignore[misc]
            _settles(run, pid, k)
        run.collector.set_step_mode(False)  # releases the waiting call and the rest
        run.drain_until(lambda ev: sends_done(ev) == 5)
        assert [a.recv() for _ in range(5)] == [0, 1, 2, 3, 4]
    finally:
        child.join(10)
        if child.is_alive():
            child.kill()
            child.join()
    assert child.exitcode == 0
    a.close()
    b.close()


def test_frame_hash_is_crc32_whole_then_length_head_and_strided_samples() -> None:
    small = os.urandom(HASH_FULL_LIMIT)
    assert frame_hash(small) == zlib.crc32(small)
    big = bytearray(os.urandom(1 << 20))
    n = len(big)
    stride = sample_stride(n)
    expected = zlib.crc32(n.to_bytes(8, "little"))
    expected = zlib.crc32(big[:HEAD_STORE], expected)
    sample = zlib.crc32(bytes(big[n - 1 :: -stride]))
    expected = zlib.crc32(sample.to_bytes(4, "little"), expected)
    assert frame_hash(memoryview(big)) == expected
    assert frame_hash(bytes(big)) == expected
    before = frame_hash(big)
    big[0] ^= 1
    assert frame_hash(big) != before


@pytest.mark.parametrize("n", [HASH_FULL_LIMIT + 1, 64 * 1024, 1 << 20, 3 * (1 << 20) + 5])
def test_frame_hash_sees_a_splice_of_one_stride_anywhere_in_a_one_byte_frame(n: int) -> None:
    # Two writers' frames of one repeated byte each: a run of the other writer's
    # bytes as long as the stride changes the hash wherever it lands.
    stride = sample_stride(n)
    intact = b"A" * n
    before = frame_hash(intact)
    for start in range(0, n - stride + 1, max(1, (n - stride) // 97)):
        spliced = intact[:start] + b"B" * stride + intact[start + stride :]
        assert frame_hash(spliced) != before, (n, start)


def test_activate_is_idempotent_and_deactivate_restores_the_streams(run: RunFixture) -> None:
    stdout: Any = sys.stdout
    run.activate()
    run.activate()
    assert telemetry.active_run_dir() == run.run_dir
    assert telemetry.active_run_id() == run.run_id
    assert sys.stdout is not stdout
    telemetry.deactivate()
    assert sys.stdout is stdout
    assert telemetry.active_run_dir() is None
    rings = [n for n in os.listdir(run.run_dir) if n.endswith(".ring")]
    assert rings == [f"{os.getpid()}.ring"]
    events = run.drain(final=True)
    starts = [e for e in events if e["kind"] == "process"]
    assert len(starts) == 1
