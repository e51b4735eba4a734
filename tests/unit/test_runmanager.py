"""RunManager: caps with clear errors, shutdown, the run directories it owns, event limits."""

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from pipecore import runmanager, runmarks, runprocs
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


class _NoTimer:
    """A refill timer that never fires by itself."""

    def __init__(self, delay: float, function: object) -> None:
        self.daemon = False

    def start(self) -> None:
        pass

    def cancel(self) -> None:
        pass


class _Busy:
    """A run as the spare refill sees it: how many events it published, and whether it ended."""

    def __init__(self) -> None:
        self.published = 0
        self.state = SimpleNamespace(terminal=False)


def test_a_spare_waits_while_the_runs_flood_and_starts_once_they_calm(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Starting a spare's interpreters took 0.3-0.45 CPU-seconds out of a one-second flood."""
    clock = [1000.0]
    started: list[str] = []
    monkeypatch.setattr("pipecore.runmanager.time", SimpleNamespace(monotonic=lambda: clock[0]))
    monkeypatch.setattr("pipecore.collectmain.start_spare", lambda nice=0: started.append("c"))
    monkeypatch.setattr("threading.Timer", _NoTimer)  # the test calls _refill itself
    runs = RunManager()
    try:
        runs._keep_spares = 1  # keeps one collector spare; none is started yet
        flood = _Busy()
        runs._runs["r1"] = flood  # type: ignore[assignment]

        def look(seconds: float, events: int) -> None:
            clock[0] += seconds
            flood.published += events
            runs._refill()

        runs._schedule_refill()
        look(0.1, 30_000)  # 300,000 events/s
        assert started == [], "a spare started amid a flood"
        look(0.1, 3_000)  # 30,000 events/s: still above BUSY_EVENTS_PER_S
        assert started == []
        look(0.1, 1_000)  # 10,000 events/s: calm
        assert started == ["c"]
        # Patience: a flood that does not end delays a spare at most SPARE_PATIENCE.
        runs._spares.clear()
        runs._schedule_refill()
        waited = 0.0
        while not started[1:]:
            look(0.1, 100_000)
            waited += 0.1
            assert waited <= runmanager.SPARE_PATIENCE + 0.15, "the spare waited forever"
        assert waited >= runmanager.SPARE_PATIENCE - 0.05
        # A run that ended counts no more, however fast it went.
        runs._spares.clear()
        flood.state.terminal = True
        runs._schedule_refill()
        look(0.1, 100_000)
        assert started == ["c", "c", "c"]
    finally:
        runs._spares.clear()
        runs._runs.clear()
        runs.shutdown()
