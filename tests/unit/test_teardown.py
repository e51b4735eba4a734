"""Teardown: a stopped, killed or completed run leaves no process, fd or shared memory."""

import importlib
import os
import signal
import tempfile
from pathlib import Path
from typing import Any

import pytest

from pipecore import runprocs
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
    # The processes the stop ended exited after the teardown began, as the end event says.
    teardown_t = run.events()[-1]["teardown_t"]
    killed = [e for e in run.events() if e.get("verdict") == "killed"]
    assert killed and all(e["t"] >= teardown_t for e in killed)
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


@pytest.mark.parametrize("end", ["stop", "deadlock", "timeout", "complete"])
def test_a_run_leaves_no_temporary_directory_however_it_ends(
    monkeypatch: pytest.MonkeyPatch, end: str
) -> None:
    """A fork server keeps its socket in a `pymp-*` directory under TMPDIR, which a process
    ended by a signal never removes: each main process gets a TMPDIR of its own, removed
    with the run (stopped runs under forkserver left one in /tmp each)."""
    # Short: the fork server's socket path must fit (pytest's tmp_path is too long).
    tmp_path = Path(tempfile.mkdtemp(prefix="ps-", dir="/tmp"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    runs = RunManager(max_runs=1, max_run_seconds=20.0, spare_main=False)
    try:
        if end == "stop":
            run = runs.start("poll", {"messages": 200})
            wait_for(lambda: any(e.get("op") == "poll" for e in run.events()))
            assert any(tmp_path.glob("pipescope-*/pymp-*"))  # the fork server's, in use
            run.stop()
        elif end == "timeout":
            run = runs.start("poll", {"messages": 200}, timeout=1.0)
        else:
            run = runs.start("deadlock" if end == "deadlock" else "ping-pong")
        assert run.wait(20) is not None and run.state.terminal
        assert sorted(p.name for p in tmp_path.iterdir()) == []
    finally:
        runs.shutdown()
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    tmp_path.rmdir()


def test_the_semaphores_a_process_made_are_found_by_inode() -> None:
    # sem_open makes a semaphore under a temporary name, maps it, links it to its name and
    # unlinks the temporary one: its maker maps "/dev/shm/sem.XXXXXX (deleted)".
    _multiprocessing: Any = importlib.import_module("_multiprocessing")  # no type stubs
    name = f"/mp-test-{os.getpid()}"
    lock = _multiprocessing.SemLock(1, 1, 1, name, False)  # kind 1: a semaphore
    try:
        assert runprocs.semaphores([os.getpid()]) == {f"/dev/shm/sem.{name[1:]}"}
    finally:
        _multiprocessing.sem_unlink(name)
        del lock
    assert runprocs.semaphores([os.getpid()]) == set()
