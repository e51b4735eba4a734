"""A scenario's run: states in order, start methods, time limit, step mode, record, collector."""

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from pipecore.collectwire import Message
from pipecore.parts import Part, encode_events
from pipecore.runs import Run, RunManager, RunState
from pipecore.scenarios import get_scenario
from tests.unit.conftest import Event, group_exists, wait_for


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


def _parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[1])


@pytest.mark.parametrize("method", [None, "spawn"], ids=["default", "spawn"])
def test_a_run_starts_its_workers_from_a_fork_server_by_default(
    manager: RunManager, method: str | None
) -> None:
    # Step mode holds every process at its first traced call: the workers are alive.
    if method is None:
        run = manager.start("ping-pong", step_mode=True)
    else:
        run = manager.start("ping-pong", start_method=method, step_mode=True)

    def started() -> dict[str, int]:
        return {e["process"]: e["pid"] for e in run.events() if e["kind"] == "process"}

    wait_for(lambda: {"MainProcess", "Process-1", "Process-2"} <= set(started()))
    pids = started()
    main = pids["MainProcess"]
    for worker in (pids["Process-1"], pids["Process-2"]):
        parent = _parent_of(worker)
        if method is None:
            # Forked by the main process's fork server, not by the main process itself.
            assert parent != main and _parent_of(parent) == main
            command = Path(f"/proc/{parent}/cmdline").read_bytes()
            assert b"from multiprocessing.forkserver import main" in command
        else:
            assert parent == main
    run.set_step_mode(False)
    assert run.wait(30) is RunState.COMPLETED
    assert run.summary()["start_method"] == (method or "forkserver")


def test_subscribers_get_batches_on_the_runs_collector_thread(manager: RunManager) -> None:
    # Held in step mode, the run publishes its calls' events only after the subscription.
    run = manager.start("ping-pong", step_mode=True)
    threads: list[str] = []
    received: list[Event] = []

    def on_batch(batch: list[Event]) -> None:
        threads.append(threading.current_thread().name)
        received.extend(batch)

    _, unsubscribe = run.subscribe(on_batch)
    run.set_step_mode(False)
    assert run.wait(30) is RunState.COMPLETED
    unsubscribe()
    assert any(e["kind"] == "call" for e in received) and received[-1]["state"] == "completed"
    assert set(threads) == {f"pipescope-collector-{run.id}"}


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
