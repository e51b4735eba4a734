"""RunManager: caps with clear errors, shutdown, the run directories it owns, event limits."""

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from pipecore import runmarks, runprocs
from pipecore.runs import CapacityError, RunManager
from pipecore.scenarios import ParamError
from tests.unit.conftest import group_exists


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


class _Run:
    """A run as the spares see it: how many events it published, and whether it ended."""

    def __init__(self, published: int, terminal: bool) -> None:
        self.published = published
        self.state = SimpleNamespace(terminal=terminal)


def test_the_spares_weigh_only_the_events_of_runs_that_still_go() -> None:
    # A spare waits while the runs flood (pipecore.spares); an ended run, however fast
    # it went, holds none back.
    runs = RunManager()
    try:
        runs._runs["r1"] = _Run(1_000, terminal=False)  # type: ignore[assignment]
        runs._runs["r2"] = _Run(500_000, terminal=True)  # type: ignore[assignment]
        assert runs._published() == 1_000
    finally:
        runs._runs.clear()
        runs.shutdown()
