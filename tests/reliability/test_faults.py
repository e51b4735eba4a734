"""Faults: workers SIGKILLed at random points, start/stop churn, a server stopped mid-run."""

import contextlib
import functools
import json
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
from pathlib import Path
from typing import Any

import httpx
import pytest

import pipecore
from app.store import Store
from pipecore import runprocs, telemetry
from pipecore.collector import Collector
from pipecore.runs import Run, RunManager, RunState
from tests.conftest import serve_pipescope
from tests.reliability.conftest import (
    LINE,
    MEGABYTES,
    SEED,
    TERMINAL,
    Event,
    Leaks,
    alive,
    descendants,
    figure,
    started_pids,
    wait_for,
)

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


# -- start/stop churn -------------------------------------------------------------------

CHURN_CYCLES = 100
CHURN_SCENARIOS: list[tuple[str, dict[str, object]]] = [
    ("ping-pong", {}),
    ("pipeline", {}),
    ("fan-in", {}),
    ("lock-queue", {}),
    ("race", {}),
    ("custom", {"topology": "fan-in", "writers": 3, "rate": 0.0, "count": 1000}),
    ("poll", {}),
    ("backpressure", {"messages": 200}),
    ("deadlock", {"variant": "recv-recv"}),
]


def churn_once(manager: RunManager, cycle: int, rng: random.Random) -> str:
    """One cycle: a run stopped at once, stopped mid-flight, timed out, or left to finish."""
    method = ("forkserver", "spawn", "fork")[cycle % 3]
    action = ("stop at once", "stop mid-flight", "stop mid-flight", "finish", "time out")[cycle % 5]
    if action == "time out":
        run = manager.start("backpressure", {"delay": 0.5}, start_method=method, timeout=1.0)
    else:
        scenario, params = CHURN_SCENARIOS[cycle % len(CHURN_SCENARIOS)]
        run = manager.start(scenario, params, start_method=method)
        if action == "stop mid-flight":
            time.sleep(rng.uniform(0, 0.4))
        if action != "finish":
            run.stop()
    state = run.wait(30)
    assert state.terminal, f"{run.id} ({run.scenario}, {action}) still {state}"
    expected = {"time out": {RunState.TIMEOUT}, "finish": set(RunState) - {RunState.STOPPED}}
    allowed = expected.get(action, {RunState.STOPPED, RunState.COMPLETED, RunState.DEADLOCK})
    assert state in allowed, f"{run.id} ({run.scenario}, {action}): {state} {run.message}"
    assert not os.path.exists(run.run_dir), f"{run.run_dir} left after {action}"
    assert run.pgid is not None
    with pytest.raises(ProcessLookupError):
        os.killpg(run.pgid, 0)
    return f"{action}: {state.value}"


def test_start_stop_churn_leaves_no_process_fd_or_shared_memory(leaks: Leaks) -> None:
    manager = RunManager(max_runs=4, max_run_seconds=30.0)
    # Warm up what the first run opens lazily and keeps (the collector's decoders).
    manager.start("ping-pong").wait(30)
    before = Leaks()
    rng = random.Random(SEED)
    started = time.monotonic()
    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            outcomes = Counter(
                pool.map(lambda c: churn_once(manager, c, random.Random(rng.random())),
                         range(CHURN_CYCLES))
            )  # fmt: skip
    finally:
        manager.shutdown()
    found = before.check(manager.list())
    figure(
        "start/stop churn",
        f"{CHURN_CYCLES} cycles in {time.monotonic() - started:.0f} s; outcomes "
        f"{dict(outcomes)}; leftover processes {found['processes']}, fds {found['fds']}, "
        f"/dev/shm entries {found['shm']}",
    )
    leaks.check()


# -- the server stopped by SIGTERM while busy -------------------------------------------

BUSY = [
    {"scenario": "backpressure", "params": {"messages": 1000, "delay": 0.05}},
    {
        "scenario": "custom",
        "params": {"topology": "fan-in", "writers": 4, "rate": 0, "count": 1000},
    },
    {"scenario": "poll", "params": {"messages": 200}},
    {"scenario": "lock-queue", "start_method": "spawn"},
]


def test_sigterm_to_a_busy_server_ends_workers_keeps_records_and_exits_0(
    tmp_path: Path, leaks: Leaks
) -> None:
    db = tmp_path / "runs.sqlite3"
    with serve_pipescope({"PIPESCOPE_DB": str(db)}) as server:
        run_ids = []
        for body in BUSY:
            response = httpx.post(f"{server.url}/api/runs", json=body, timeout=30)
            assert response.status_code == 201, response.text
            run_ids.append(response.json()["id"])
        pids: set[int] = set()

        def workers_started() -> bool:
            pids.clear()
            for run_id in run_ids:
                events = httpx.get(f"{server.url}/api/runs/{run_id}/events", timeout=30).json()
                starts = [e["pid"] for e in events if e["kind"] == "process" and e["op"] == "start"]
                if len(starts) < 3:
                    return False
                pids.update(starts)
            return True

        wait_for(workers_started, 30, "every run's workers started")
        pids |= descendants(server.process.pid)  # the runs' main processes and helpers
        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        wait_for(lambda: not any(alive(pid) for pid in pids), 2.0, "every worker gone")
        gone_after = time.monotonic() - signalled
        code = server.process.wait(20)
        log = server.log()
    assert code == 0, f"exit status {code}; log:\n{log[-2000:]}"
    assert "Application shutdown complete" in log
    # Read back through the store, whatever its tables look like.
    store = Store(str(db))
    try:
        stored = {summary["id"]: summary for summary in store.runs()}
        seqs = {run_id: [e["seq"] for e in store.iter_events(run_id)] for run_id in run_ids}
    finally:
        store.close()
    counts = {run_id: len(found) for run_id, found in seqs.items()}
    for run_id in run_ids:
        assert not os.path.exists(f"/dev/shm/pipescope-{run_id}"), run_id
        assert stored[run_id]["state"] in TERMINAL, stored[run_id]
        assert seqs[run_id] == list(range(1, stored[run_id]["events"] + 1)), run_id
    figure(
        "SIGTERM to a busy server",
        f"{len(run_ids)} runs, {len(pids)} processes gone {gone_after:.2f} s after the signal, "
        f"exit status {code}, {sum(counts.values())} events on disk",
    )
    leaks.check()


# -- scenarios that misbehave -----------------------------------------------------------


def test_a_scenario_that_raises_fails_with_its_error_and_is_cleaned_up(
    faulty_scenarios: None, manager: RunManager, leaks: Leaks
) -> None:
    run = manager.start("test-raises")
    assert run.wait(30) is RunState.FAILED
    assert run.message == (
        "the main process exited with code 1: RuntimeError: the scenario failed on purpose"
    )
    assert run.events()[-1]["reason"] == {
        "key": "exit_code",
        "args": {"code": 1, "stderr": "RuntimeError: the scenario failed on purpose"},
    }
    printed = [e["text"] for e in run.events() if e["kind"] == "output"]
    assert "Traceback (most recent call last):" in printed
    # The calls made before the failure are all there.
    assert [e["op"] for e in run.events() if e["kind"] == "call" and e["phase"] == "end"] == [
        "send",
        "recv",
    ]
    manager.shutdown()
    leaks.check(manager.list())


def test_a_scenario_printing_megabytes_is_recorded_line_by_line_with_bounded_lines(
    faulty_scenarios: None, manager: RunManager, leaks: Leaks
) -> None:
    run = manager.start("test-prints-megabytes")
    assert run.wait(60) is RunState.COMPLETED, run.message
    lines = [e["text"] for e in run.events() if e["kind"] == "output" and e["stream"] == "stdout"]
    expected = MEGABYTES * 1024 * 1024 // (len(LINE) + 1)
    assert lines[:expected] == [LINE] * expected
    # The mebibyte line is kept, cut to a bounded length that says so.
    assert len(lines) == expected + 1
    assert lines[-1].startswith("yyyy") and lines[-1].endswith("…")
    assert len(lines[-1]) < 64 * 1024
    figure("megabytes printed", f"{MEGABYTES + 1} MiB printed -> {len(lines)} output events")
    manager.shutdown()
    leaks.check(manager.list())


@pytest.mark.parametrize("method", ["forkserver", "fork"])
def test_grandchildren_outliving_their_worker_are_ended_with_the_run(
    faulty_scenarios: None, manager: RunManager, leaks: Leaks, method: str
) -> None:
    run = manager.start("test-forks-grandchildren", start_method=method)
    wait_for(
        lambda: any(e.get("text", "").startswith("grandchildren:") for e in run.events()),
        30,
        "the grandchildren's pids printed",
    )
    printed = next(e["text"] for e in run.events() if e.get("text", "").startswith("grandchild"))
    grandchildren = json.loads(printed.split(":", 1)[1])
    spawner = started_pids(run)["spawner"]
    # Not asserted alive here: on a loaded machine the printed line can reach the test
    # after the run has already ended and torn them down. They sleep far longer than the
    # run lasts, so any still alive after the run is one the teardown missed.
    # Main returns at once: the run ends, and its teardown ends everything in its group.
    assert run.wait(30) is RunState.COMPLETED, run.message
    assert not any(alive(pid) for pid in [*grandchildren, spawner])
    manager.shutdown()
    leaks.check(manager.list())


@pytest.mark.parametrize("method", ["forkserver", "spawn", "fork"])
def test_a_grandchild_in_a_session_of_its_own_is_ended_with_the_run(
    faulty_scenarios: None, manager: RunManager, leaks: Leaks, method: str
) -> None:
    run = manager.start("test-escapes-the-group", start_method=method)
    wait_for(
        lambda: any(e.get("text", "").startswith("escaped:") for e in run.events()),
        30,
        "the grandchild's pid printed",
    )
    printed = next(e["text"] for e in run.events() if e.get("text", "").startswith("escaped:"))
    grandchild, session, group = (int(word) for word in printed.split(":", 1)[1].split())
    # It left the run's process group (seen while it lived): killing the group alone
    # would miss it.
    assert session == grandchild
    assert run.pgid is not None and group != run.pgid
    assert run.wait(30) is RunState.COMPLETED, run.message
    wait_for(lambda: not alive(grandchild), 10, "the grandchild ended")
    manager.shutdown()
    leaks.check(manager.list())


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError):
                stat = Path(f"/proc/{entry}/stat").read_bytes().rsplit(b")", 1)[1].split()
                if int(stat[2]) == pgid:
                    members.append(int(entry))
    return members


def test_a_runs_semaphores_are_removed_even_when_its_resource_tracker_died(
    manager: RunManager, leaks: Leaks
) -> None:
    # Under spawn, multiprocessing's locks are named semaphores in /dev/shm that the
    # run's resource tracker unlinks when the run ends. A stop can catch the tracker (or
    # the process creating a lock) half-way; here the tracker is simply dead.
    run = manager.start("lock-queue", {}, start_method="spawn", step_mode=True)
    wait_for(lambda: len(started_pids(run)) >= 5, 30, "main and four workers started")
    pgid = run.pgid
    assert pgid is not None
    named = runprocs.semaphores([pgid, *started_pids(run).values()])
    assert len(named) >= 2, f"expected the scenario's two locks at least, got {named}"
    trackers = [
        pid
        for pid in _group_members(pgid)
        if b"resource_tracker" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]
    assert len(trackers) == 1, trackers
    os.kill(trackers[0], signal.SIGKILL)
    run.stop()
    assert run.wait(30) is RunState.STOPPED
    assert [p for p in sorted(named) if os.path.exists(p)] == []
    leaks.check(manager.list())
