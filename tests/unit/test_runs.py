"""RunManager and Run: lifecycle, caps, step mode, subscriptions and a clean teardown."""

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipecore import runmarks, runprocs
from pipecore.collectwire import Message
from pipecore.parts import Part, encode_events
from pipecore.runs import CapacityError, NotControllable, Run, RunManager, RunState, reason
from pipecore.scenarios import ParamError, get_scenario
from pipecore.tracing import EventError

Event = dict[str, Any]


@pytest.fixture
def manager() -> Iterator[RunManager]:
    runs = RunManager(max_runs=2, max_run_seconds=20.0)
    yield runs
    runs.shutdown()


def wait_for(predicate: Any, seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def shm_entries() -> set[str]:
    # Named semaphores of multiprocessing locks; run directories are checked by name.
    return {name for name in os.listdir("/dev/shm") if name.startswith("sem.mp")}


def no_new_semaphores(before: set[str]) -> None:
    # Other programs on the machine may hold semaphores for a while; a leaked one
    # from this run would stay for ever.
    wait_for(lambda: not shm_entries() - before, 20.0)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_completed_run_announces_its_states_in_order(manager: RunManager) -> None:
    run = manager.start("ping-pong")
    assert run.wait(30) is RunState.COMPLETED
    states = [e["state"] for e in run.events() if e["kind"] == "run"]
    assert states == ["starting", "running", "completed"]
    seqs = [e["seq"] for e in run.events()]
    assert seqs == list(range(1, len(seqs) + 1))
    summary = run.summary()
    assert summary["state"] == "completed" and summary["events"] == len(seqs)
    assert summary["reason"] == run.events()[-1]["reason"] == {"key": "completed", "args": {}}
    assert manager.get(run.id) is run and run in manager.list()


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_other_start_methods_run_the_scenario(manager: RunManager, method: str) -> None:
    run = manager.start("ping-pong", start_method=method)
    assert run.wait(30) is RunState.COMPLETED
    assert len([e for e in run.events() if e["kind"] == "output"]) == 2


def test_stop_tears_everything_down(manager: RunManager) -> None:
    fds, shm = open_fds(), shm_entries()
    run = manager.start("deadlock", {"variant": "recv-recv"})
    wait_for(lambda: any(e.get("op") == "recv" for e in run.events()))
    pgid = run.pgid
    assert pgid is not None and group_exists(pgid)
    run.stop()
    assert run.wait(15) is RunState.STOPPED
    assert run.events()[-1]["state"] == "stopped"
    assert run.events()[-1]["reason"] == {"key": "stopped", "args": {}}
    assert not group_exists(pgid)
    assert not os.path.exists(run.run_dir)
    no_new_semaphores(shm)
    assert open_fds() == fds


def test_a_run_directory_names_the_server_that_owns_it(tmp_path: Path) -> None:
    # A later server sweeps the directory of a run whose owner is gone (runsweep).
    runs = RunManager(run_root=str(tmp_path))
    try:
        run = runs.start("deadlock", {"variant": "recv-recv"})
        stat = Path(f"/proc/{os.getpid()}/stat").read_bytes().rsplit(b")", 1)[1].split()
        assert runmarks.read_owner(run.run_dir) == runprocs.Proc(os.getpid(), int(stat[19]))
        later = RunManager(run_root=str(tmp_path))
        later.shutdown()
        assert later.swept.directories == 0
        assert os.path.isdir(run.run_dir)
    finally:
        runs.shutdown()
    assert not os.path.exists(run.run_dir)


def test_a_run_over_its_time_limit_times_out(manager: RunManager) -> None:
    run = manager.start("poll", {"messages": 50}, timeout=1.0)
    assert run.wait(15) is RunState.TIMEOUT
    assert "time limit of 1 s" in run.message
    assert run.summary()["reason"] == {"key": "timeout", "args": {"limit": 1.0}}
    assert run.pgid is not None and not group_exists(run.pgid)


def test_runmain_runs_only_registered_scenarios(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipecore.runmain",
            "--run-dir",
            str(tmp_path / "run"),
            "--run-id",
            "rtest",
            "--scenario",
            "os.system",
            "--start-method",
            "spawn",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1
    assert "scenario must be one of ping-pong" in done.stderr


def test_step_mode_advances_one_call_per_step(manager: RunManager) -> None:
    run = manager.start("ping-pong", step_mode=True)

    def call_ends() -> int:
        return len([e for e in run.events() if e["kind"] == "call" and e["phase"] != "begin"])

    # Every traced call waits for a step: nothing has finished yet.
    wait_for(lambda: any(e["kind"] == "pipe" for e in run.events()))
    before = call_ends()
    assert before == 0
    run.step()
    wait_for(lambda: call_ends() > before)
    run.set_step_mode(False)
    assert run.wait(30) is RunState.COMPLETED


def test_caps_refuse_with_clear_errors() -> None:
    runs = RunManager(max_runs=1, max_processes=4, max_run_seconds=5.0)
    try:
        with pytest.raises(CapacityError, match=r"processes per run: at most 4, this run needs 7"):
            runs.start("race")
        with pytest.raises(ParamError, match="start_method must be one of forkserver, spawn, fork"):
            runs.start("ping-pong", start_method="threads")
        with pytest.raises(ParamError, match=r"timeout must be .* at most 5, got 9"):
            runs.start("ping-pong", timeout=9)
        first = runs.start("deadlock")
        with pytest.raises(CapacityError, match="concurrent runs: at most 1 may run at once"):
            runs.start("ping-pong")
        first.stop()
        first.wait(15)
    finally:
        runs.shutdown()


def test_subscribe_gets_every_event_once(manager: RunManager) -> None:
    run = manager.start("fan-in")
    received: list[Event] = []
    lock = threading.Lock()

    def on_batch(batch: list[Event]) -> None:
        with lock:
            received.extend(batch)

    wait_for(lambda: len(run.events()) > 3)
    snapshot, unsubscribe = run.subscribe(on_batch)
    run.wait(30)
    unsubscribe()
    seqs = [e["seq"] for e in snapshot + received]
    assert seqs == list(range(1, len(run.events()) + 1))


def test_shutdown_stops_every_run_and_refuses_new_ones() -> None:
    runs = RunManager(max_runs=2)
    a = runs.start("deadlock")
    b = runs.start("poll", {"messages": 50})
    runs.shutdown()
    assert a.state.terminal and b.state.terminal
    for run in (a, b):
        assert run.pgid is not None and not group_exists(run.pgid)
    with pytest.raises(CapacityError, match="shut down"):
        runs.start("ping-pong")


def test_a_killed_main_process_ends_the_run_killed_and_its_workers_go_too(
    manager: RunManager,
) -> None:
    run = manager.start("deadlock")
    wait_for(lambda: any(e.get("op") == "recv" for e in run.events()))
    assert run.pgid is not None
    os.kill(run.pgid, signal.SIGKILL)
    assert run.wait(15) is RunState.KILLED
    assert "killed by signal 9 (SIGKILL)" in run.message
    assert run.events()[-1]["reason"] == {"key": "main_killed", "args": {"signal": "SIGKILL"}}
    assert not group_exists(run.pgid)


def test_a_completed_run_leaves_no_process_fd_or_shared_memory(manager: RunManager) -> None:
    manager.start("ping-pong").wait(30)  # warm up lazily opened files
    fds, shm = open_fds(), shm_entries()
    run = manager.start("lock-queue", start_method="spawn")
    assert run.wait(30) is RunState.COMPLETED
    assert run.pgid is not None and not group_exists(run.pgid)
    assert not os.path.exists(run.run_dir)
    no_new_semaphores(shm)
    assert open_fds() == fds
    with pytest.raises(ChildProcessError):
        os.waitpid(-run.pgid, os.WNOHANG)


def _out(run_id: str, seq: int, **fields: Any) -> Event:
    common = {"run": run_id, "seq": seq, "kind": "output", "t": seq, "pid": 9}
    return {**common, "process": "Main", "stream": "stdout", "text": f"line {seq}", **fields}


def test_an_external_run_publishes_what_its_tracer_streams_and_ends_with_it() -> None:
    runs = RunManager(max_runs=2)
    try:
        run = runs.open_external("prog.py")
        assert runs.get(run.id) is run and run.summary()["state"] == "starting"
        received: list[Event] = []
        _, unsubscribe = run.subscribe(received.extend)
        run.ingest([_out(run.id, 1, kind="run", state="running"), _out(run.id, 2)])
        assert run.state is RunState.RUNNING
        run.ingest([_out(run.id, 3, kind="verdict", verdict="eof", message="end a closed")])
        why = {"key": "program_exit", "args": {"program": "prog.py", "code": -9}}
        run.ingest(
            [_out(run.id, 4, kind="run", state="killed", message="killed by SIGKILL", reason=why)]
        )
        assert run.wait(0) is RunState.KILLED and run.message == "killed by SIGKILL"
        assert run.summary()["reason"] == why
        assert [e["seq"] for e in received] == [1, 2, 3, 4]
        assert run.summary()["verdicts"] == [{"verdict": "eof", "message": "end a closed"}]
        with pytest.raises(EventError, match="after the run ended"):
            run.ingest([_out(run.id, 5)])
        run.disconnect("gone")  # already ended: nothing changes
        assert run.summary()["state"] == "killed" and len(run.events()) == 4
        unsubscribe()
    finally:
        runs.shutdown()


def test_an_external_run_counts_against_the_cap_and_refuses_control() -> None:
    runs = RunManager(max_runs=1)
    try:
        run = runs.open_external("prog.py")
        with pytest.raises(CapacityError, match="at most 1 may run at once"):
            runs.start("ping-pong")
        with pytest.raises(CapacityError):
            runs.open_external("other.py")
        for control in (run.stop, run.step, lambda: run.set_step_mode(True)):
            with pytest.raises(NotControllable, match="traces a program running elsewhere"):
                control()
        with pytest.raises(ParamError, match="name must be a string of 1 to 120"):
            runs.open_external("")
        run.ingest([_out(run.id, 1)])
        run.disconnect("disconnected: the tracer left")
        assert run.state is RunState.FAILED
        assert run.events()[-1] == {**run.events()[-1], "seq": 2, "state": "failed",
                                    "message": "disconnected: the tracer left",
                                    "reason": {"key": "disconnected", "args": {}}}  # fmt: skip
        assert run.summary()["reason"] == {"key": "disconnected", "args": {}}
        assert runs.open_external("other.py").state is RunState.STARTING
    finally:
        runs.shutdown()


def test_shutdown_ends_an_external_run_still_streaming() -> None:
    runs = RunManager()
    run = runs.open_external("prog.py")
    runs.shutdown()
    assert run.wait(0) is RunState.FAILED
    assert run.message == "the server shut down while the program was being traced"


def test_a_receive_the_collector_process_amends_shows_amended_in_the_record() -> None:
    run = Run(
        "r000001", get_scenario("ping-pong"), {}, "fork",
        step_mode=False, timeout=5.0, run_root="/dev/shm", deadlock_after_ns=10**9,
    )  # fmt: skip
    waiting = {"kind": "call", "op": "recv_bytes", "phase": "end", "seq": 3}
    part = Part(3, 3, 1, 1, text=encode_events([waiting]))
    run._take(Message(seq=3, parts=[part], kept=[]))
    assert run.events() == [waiting] and run.amended() == []
    matched = {**waiting, "match": 2, "latency_ns": 10}
    run._take(Message(seq=3, parts=[], kept=[], amended=[matched]))
    assert run.events() == [matched] and run.amended() == [matched]
    assert run.summary()["events"] == 1


STRUCTURE = {"run", "pipe", "process", "attach", "verdict"}


def test_a_run_holds_its_structure_and_only_the_newest_calls() -> None:
    runs = RunManager(max_runs=1, live_events=1000)
    try:
        run = runs.start("flood", {"messages": 2000})
        received: list[Event] = []
        snapshot, unsubscribe = run.subscribe(received.extend)
        assert run.wait(60) is RunState.COMPLETED
        unsubscribe()
        events, summary = run.events(), run.summary()
        total = summary["events"]
        assert total > 5000 and summary["events_held"] == len(events)
        kept = [e for e in events if e["kind"] in STRUCTURE]
        others = [e for e in events if e["kind"] not in STRUCTURE]
        assert len(others) == 1000 and len(events) == 1000 + len(kept)
        # Everything that draws the run is there: its states and every process's start and exit.
        assert [e["state"] for e in kept if e["kind"] == "run"] == [
            "starting",
            "running",
            "completed",
        ]
        processes = [e for e in kept if e["kind"] == "process"]
        started = {e["pid"] for e in processes if e["op"] == "start"}
        assert len(started) >= 2 and started <= {e["pid"] for e in processes if e["op"] == "exit"}
        # From the oldest call held on, nothing is missing up to the last event.
        first = others[0]["seq"]
        assert [e["seq"] for e in events if e["seq"] >= first] == list(range(first, total + 1))
        # A subscriber still saw every event exactly once.
        assert [e["seq"] for e in snapshot + received] == list(range(1, total + 1))
        tailed, unsubscribe = run.subscribe(lambda batch: None, tail=10)
        unsubscribe()
        assert tailed == sorted(kept + others[-10:], key=lambda e: e["seq"])
    finally:
        runs.shutdown()


def test_live_events_and_tail_must_be_counts() -> None:
    with pytest.raises(ValueError, match="live_events must be an integer of 1 or more, got 0"):
        RunManager(live_events=0)
    runs = RunManager()
    try:
        run = runs.open_external("prog.py")
        with pytest.raises(ValueError, match="tail must be an integer of 0 or more, got -1"):
            run.subscribe(lambda batch: None, tail=-1)
    finally:
        runs.shutdown()


def test_a_failing_collector_fails_the_run_with_its_error(
    manager: RunManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(self: Run, *, final: bool) -> None:
        if not final:
            raise RuntimeError("boom")

    monkeypatch.setattr(Run, "_pump", fail)
    run = manager.start("ping-pong")
    assert run.wait(30) is RunState.FAILED
    assert run.message == "the collector failed: RuntimeError: boom"
    assert run.summary()["reason"] == {
        "key": "collector_failed",
        "args": {"error": "RuntimeError: boom"},
    }
    assert run.pgid is not None and not group_exists(run.pgid)


def test_a_killed_collector_process_fails_the_run_and_nothing_is_left(
    manager: RunManager,
) -> None:
    run = manager.start("backpressure", {"messages": 1000, "size": 1024, "delay": 2.0})
    wait_for(lambda: any(e["kind"] == "call" for e in run.events()))
    collector = int(Path(run.run_dir, "collector.pid").read_text())
    os.kill(collector, signal.SIGKILL)
    assert run.wait(30) is RunState.FAILED
    assert run.summary()["reason"] == {
        "key": "collector_failed",
        "args": {"error": "the collector process exited with status -9"},
    }
    assert run.pgid is not None and not group_exists(run.pgid)
    assert not os.path.exists(run.run_dir)
    with pytest.raises(ProcessLookupError):
        os.kill(collector, 0)  # reaped, not a zombie


def test_a_refused_stream_ends_its_run_with_the_refusal() -> None:
    runs = RunManager()
    try:
        run = runs.open_external("prog.py")
        run.disconnect("refused: bad", reason("refused", error="bad"))
        assert run.events()[-1]["reason"] == {"key": "refused", "args": {"error": "bad"}}
    finally:
        runs.shutdown()
