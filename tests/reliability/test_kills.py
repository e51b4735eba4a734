"""Faults: workers SIGKILLed at random points, in runs and in pairs with a side channel."""

import functools
import mmap
import multiprocessing
import os
import random
import signal
import struct
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any

import pipecore
from pipecore import telemetry
from pipecore.collector import Collector
from pipecore.runs import Run, RunManager, RunState
from tests.reliability.conftest import SEED, Event, Leaks, figure, started_pids, wait_for

# 200 kills in all: through RunManager runs, and in-process pairs with a side channel.
RUN_KILLS = 100
PAIR_KILLS = 100
PEER_ERRORS = {"EOFError", "BrokenPipeError", "OSError"}


def calls(events: list[Event], pid: int, phase: str | None = None) -> list[Event]:
    return [
        e
        for e in events
        if e["kind"] == "call" and e["pid"] == pid and (phase is None or e["phase"] == phase)
    ]


def kill_point(events: list[Event], pid: int, killed_at: int) -> str:
    """Where the victim was when the signal left: in which call, and for how long."""
    before = [e for e in calls(events, pid) if e["t"] <= killed_at]
    if not before or before[-1]["phase"] != "begin":
        return "idle (between calls)"
    last = before[-1]
    waited_ms = (killed_at - int(last["t"])) / 1e6
    where = "send" if "send" in str(last["op"]) else "recv"
    return f"blocked in {where}" if waited_ms > 2 else f"mid-{where}"


def both_started(run: Run) -> bool:
    return {"producer", "consumer"} <= set(started_pids(run))


def kill_one_run(manager: RunManager, rng: random.Random) -> dict[str, Any]:
    """Start a producer/consumer run, SIGKILL one of the two at a random moment, check it."""
    size = rng.choice([64, 4096, 16384, 100_000])
    # A killed producer leaves a full pipe that the consumer drains at its own pace.
    delay = 0.001 if size == 64 else rng.choice([0.001, 0.005, 0.02])
    params = {"messages": 1000, "size": size, "delay": delay}
    victim = rng.choice(["producer", "consumer"])
    peer = "consumer" if victim == "producer" else "producer"
    for _attempt in range(5):
        run = manager.start("backpressure", params)
        wait_for(functools.partial(both_started, run), 30, "workers started")
        pids = started_pids(run)
        # Both should still be working at the kill. The consumer pauses at least `delay`
        # per message; the producer is done once the unread rest fits in the 64 KiB pipe,
        # which for 64-byte frames (84 bytes on the wire) takes at least 1000 - 780 = 220
        # pauses.
        time.sleep(rng.uniform(0, 0.15 if size == 64 else 0.25))
        killed_at = time.monotonic_ns()
        try:
            os.kill(pids[victim], signal.SIGKILL)
            break
        except ProcessLookupError:
            # On a loaded machine the start events can reach us so late that the victim
            # has finished and exited: no kill happened, so this run proves nothing. Again.
            run.wait(30)
    else:
        raise AssertionError(f"the {victim} had always exited before the kill: {params}")
    state = run.wait(30)
    events = run.events()
    where = f"{run.id} {params} killing {victim}"
    # The main process carries on (or fails) without the victim: the run was killed.
    assert state is RunState.KILLED, f"{where}: {state} {run.message}"

    verdicts = [v["message"] for v in run.summary()["verdicts"] if v["verdict"] == "killed"]
    # The collector is not the victim's parent: it sees the process vanish, not the signal.
    named = f"{victim} (pid {pids[victim]}) was killed"
    assert any(message.startswith(named) for message in verdicts), f"{where}: {verdicts}"
    assert run.message.startswith(named), f"{where}: {run.message}"
    why = run.summary()["reason"]
    assert why["key"] == "worker_killed", f"{where}: {why}"
    assert (why["args"]["process"], why["args"]["pid"]) == (victim, pids[victim]), where
    # The peer's error, as an error event and as the traceback it printed.
    errors = [e["error_type"] for e in calls(events, pids[peer], "error")]
    # On a loaded machine the peer may have done all its work before the kill (the
    # producer's last frame in the pipe, or the consumer past the end marker): it closed
    # its end normally and has nothing to report.
    peer_done = any(e["op"] == "close" for e in calls(events, pids[peer], "end"))
    if not (peer_done and not errors):
        assert errors and errors[-1] in PEER_ERRORS, f"{where}: peer errors {errors}"
        printed = [e["text"] for e in events if e["kind"] == "output" and e["pid"] == pids[peer]]
        shown = [line for line in printed if line.split(":")[0] == errors[-1]]
        assert shown, f"{where}: {printed[-3:]}"

    lost = 0
    for pid in pids.values():
        pseqs = [e["pseq"] for e in events if e["pid"] == pid and "pseq" in e]
        assert pseqs == list(range(1, len(pseqs) + 1)), f"{where}: a gap in pid {pid}'s events"
    sent = calls(events, pids["producer"], "end")
    received = calls(events, pids["consumer"], "end")
    if victim == "producer":
        # Every frame whose send returned is in the pipe, and the consumer drains the pipe
        # before its EOFError: so receives count every returned send, plus at most the
        # one the kill caught between its write and its `end`.
        last = calls(events, pids["producer"])[-1]
        in_flight = 1 if last["phase"] == "begin" else 0
        lost = max(0, len(received) - len(sent) - in_flight)
        assert 0 <= len(received) - len(sent) <= in_flight, (
            f"{where}: {len(received)} frames received, {len(sent)} sends recorded"
        )
    else:
        # Every recorded receive was of a recorded send, matched FIFO.
        assert len(received) <= len(sent), where
        assert all("match" in e for e in received if e["op"] == "recv"), where
    return {"point": f"{victim} {kill_point(events, pids[victim], killed_at)}", "lost": lost}


def test_sigkill_of_a_worker_at_random_points_loses_no_returned_call(
    manager: RunManager, leaks: Leaks
) -> None:
    rng = random.Random(SEED)
    seeds = [rng.randrange(1 << 30) for _ in range(RUN_KILLS)]
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda s: kill_one_run(manager, random.Random(s)), seeds))
    points = Counter(r["point"] for r in results)
    # The manager still starts and completes runs afterwards.
    assert manager.start("ping-pong").wait(30) is RunState.COMPLETED
    figure(
        "runs killed",
        f"{len(results)} runs, {sum(r['lost'] for r in results)} events lost, "
        f"{time.monotonic() - started:.0f} s, seed {SEED}; points {dict(points)}",
    )
    # Each role was caught in a call and between calls at least once.
    assert {p.split()[0] for p in points} == {"producer", "consumer"}
    assert any("idle" in p for p in points) and any("idle" not in p for p in points), points
    manager.shutdown()
    leaks.check(manager.list())


# -- in-process pairs with a side channel ---------------------------------------------


ROLES = ("producer", "consumer")


def _returned(shared: mmap.mmap, role: str) -> int:
    count: int = struct.unpack_from("q", shared, 8 * ROLES.index(role))[0]
    return count


def _producer(conn: Connection, other: Connection, shared: mmap.mmap, size: int) -> None:
    other.close()  # a forked child inherits both ends: only then does the peer see EOF
    frame = b"p" * size
    done = 0
    while True:
        conn.send_bytes(frame)
        done += 1
        struct.pack_into("q", shared, 0, done)  # only after the call returned


def _consumer(conn: Connection, other: Connection, shared: mmap.mmap, pause: float) -> None:
    other.close()
    done = 0
    while True:
        conn.recv_bytes()
        done += 1
        struct.pack_into("q", shared, 8, done)
        if pause:
            time.sleep(pause)


def _exited(events: list[Event], pid: int) -> bool:
    return any(e["kind"] == "process" and e.get("op") == "exit" and e["pid"] == pid for e in events)


def test_every_call_a_killed_worker_completed_is_recorded(leaks: Leaks) -> None:
    """Each worker counts its returned calls in shared memory that outlives it.

    After a SIGKILL at a random moment, the recorded `end` events of the victim must be
    at least that count (and at most one more: a call that returned, was recorded, but
    was killed before the count went up).
    """
    rng = random.Random(SEED)
    ctx = multiprocessing.get_context("fork")
    lost = 0
    points: Counter[str] = Counter()
    started = time.monotonic()
    for _ in range(PAIR_KILLS):
        run_dir = tempfile.mkdtemp(prefix=f"pipescope-test-{os.getpid()}-", dir="/dev/shm")
        collector = Collector(run_dir, "rfaults")
        telemetry.activate(run_dir, "rfaults")
        try:
            a, b = pipecore.Pipe(name="side channel")
            # Anonymous shared memory: a fork shares it, and it outlives a killed child.
            shared = mmap.mmap(-1, 16)
            size = rng.choice([16, 4096, 70_000])
            pause = rng.choice([0.0, 0.001])
            workers = {
                "producer": ctx.Process(target=_producer, args=(b, a, shared, size)),
                "consumer": ctx.Process(target=_consumer, args=(a, b, shared, pause)),
            }
            for worker in workers.values():
                worker.start()
            a.close()
            b.close()
            victim = rng.choice(list(workers))
            wait_for(lambda: _returned(shared, "producer") > 0, 10, "first send")  # noqa: B023
            time.sleep(rng.uniform(0, 0.03))
            pid = workers[victim].pid or 0
            killed_at = time.monotonic_ns()
            os.kill(pid, signal.SIGKILL)
            for worker in workers.values():
                worker.join(10)
                if worker.is_alive():  # the peer stuck on its own: not under test here
                    worker.kill()
                    worker.join(10)
                worker.close()
            events: list[Event] = []
            deadline = time.monotonic() + 10
            while not _exited(events, pid) and time.monotonic() < deadline:
                events += collector.drain()
                time.sleep(0.01)
            events += collector.drain(final=True)
            op = "send_bytes" if victim == "producer" else "recv_bytes"
            recorded = len([e for e in calls(events, pid, "end") if e["op"] == op])
            returned = _returned(shared, victim)
            shared.close()
            lost += max(0, returned - recorded)
            points[f"{victim} {kill_point(events, pid, killed_at)}"] += 1
            assert returned <= recorded <= returned + 1, (
                f"{victim} returned {returned} calls, {recorded} recorded (size {size})"
            )
        finally:
            telemetry.deactivate()
            collector.close()
    figure(
        "pairs killed (side channel)",
        f"{PAIR_KILLS} kills, {lost} events lost, {time.monotonic() - started:.0f} s, "
        f"seed {SEED}; points {dict(points)}",
    )
    leaks.check()
