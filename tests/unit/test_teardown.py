"""Teardown: a stopped, killed or completed run leaves no process, fd or shared memory."""

import os
import signal

import pytest

from pipecore.runs import RunManager, RunState
from tests.unit.conftest import group_exists, wait_for


def shm_entries() -> set[str]:
    # Named semaphores of multiprocessing locks; run directories are checked by name.
    return {name for name in os.listdir("/dev/shm") if name.startswith("sem.mp")}


def no_new_semaphores(before: set[str]) -> None:
    # Other programs on the machine may hold semaphores for a while; a leaked one
    # from this run would stay for ever.
    wait_for(lambda: not shm_entries() - before, 20.0)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


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
