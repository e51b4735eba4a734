"""Faults: scenarios that raise, flood output or escape the group, and a dead resource tracker."""

import contextlib
import json
import os
import signal
from pathlib import Path

import pytest

from pipecore import runprocs
from pipecore.runs import RunManager, RunState
from tests.reliability.conftest import (
    LINE,
    MEGABYTES,
    Leaks,
    alive,
    figure,
    started_pids,
    wait_for,
)


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
