"""A run's main process started ahead of its run (a spare): it becomes that run in every way,
one that died is replaced by a normal start, and one no run took leaves nothing behind."""

import contextlib
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipecore import runmarks, runprocs
from pipecore.outcome import RunState
from pipecore.runprocs import SPARE_NICE
from pipecore.runs import RunManager
from pipecore.runsweep import sweep
from pipecore.spares import SPARES

from .conftest import Leaks, alive, descendants, python_program, started_pids, wait_for

# A server keeping a spare main process (and a spare collector), which says its pid once
# the spare's fork server runs, then waits to be killed.
SERVER = """
import os, sys, time
from pipecore.spares import SPARES
from pipecore.runs import RunManager
from pipecore.runsweep import sweep
runs = RunManager(run_root=sys.argv[1], spare_main=True, spare_collector=True)
print(os.getpid(), flush=True)
sys.stdin.read()
"""


def spares(server: int | None = None) -> set[int]:
    """Live processes carrying the run marker of a spare of `server` (default: this one)."""
    server = os.getpid() if server is None else server
    return {p.pid for p in runprocs.find(f"spare.{server}.", prefix=True)}


def spare_mains(server: int | None = None) -> list[int]:
    """The spares (not their helpers) of `server` (default: this one), oldest first."""
    server = os.getpid() if server is None else server
    found = runprocs.find(f"spare.{server}.", prefix=True)
    mains = [p for p in found if (runprocs.stat_of(p.pid) or ("", 0, 0))[1] == server]
    return [p.pid for p in sorted(mains, key=lambda p: (p.start, p.pid))]


def warm_spares(server: int | None = None, count: int = SPARES) -> list[int]:
    """Wait until `count` spares run, each with its fork server and resource tracker;
    their pids, the one a run takes next first."""

    def warm() -> bool:
        mains = spare_mains(server)
        marked = spares(server)
        return len(mains) == count and all(len(descendants(m) & marked) >= 2 for m in mains)

    wait_for(warm, 60, f"{count} spares with their helpers")
    return spare_mains(server)


def new_processes(before: set[int]) -> set[int]:
    """Processes below this one that were not `before`, once those that exited and were
    re-parented to this process (a subreaper) are reaped."""
    for pid in descendants() - before:
        if not alive(pid):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
    return descendants() - before


@pytest.fixture
def spared(tmp_path: Path) -> Iterator[RunManager]:
    """A RunManager keeping a spare main process and a spare collector process."""
    runs = RunManager(
        max_run_seconds=30.0, run_root=str(tmp_path), spare_main=True, spare_collector=True
    )
    try:
        yield runs
    finally:
        runs.shutdown()


def test_a_spare_no_run_took_ends_at_shutdown_and_leaves_nothing(
    leaks: Leaks, tmp_path: Path
) -> None:
    runs = RunManager(run_root=str(tmp_path), spare_main=True)
    try:
        warm_spares()
    finally:
        runs.shutdown()
    # The spare, its fork server and its resource tracker, their pipes and files: all gone.
    assert spares() == set()
    leaks.check()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("method", ["forkserver", "spawn", "fork"])
def test_a_run_that_took_the_spare_is_that_run_in_every_way(
    spared: RunManager, leaks: Leaks, method: str
) -> None:
    spare = warm_spares()[0]
    run = spared.start("ping-pong", start_method=method)
    assert run.wait(30) is RunState.COMPLETED, run.message
    assert run.pgid == spare
    assert started_pids(run)["MainProcess"] == spare
    assert {"Process-1", "Process-2"} <= set(started_pids(run))
    # The workers' stdout lines are events, as from a main process started for the run.
    printed = [e["text"] for e in run.events() if e["kind"] == "output"]
    assert sorted(text.rsplit(")", 1)[-1] for text in printed) == ["收到 proc1", "收到 proc2"]
    ends = [e["op"] for e in run.events() if e["kind"] == "call" and e["phase"] == "end"]
    assert sorted(op for op in ends if op in ("send", "recv")) == ["recv", "recv", "send", "send"]
    assert not alive(spare)
    spared.shutdown()
    leaks.check(spared.list())


def test_a_spare_that_died_is_replaced_by_a_normal_start(spared: RunManager, leaks: Leaks) -> None:
    mains = warm_spares()
    killed = spares()
    for spare in mains:
        os.killpg(spare, signal.SIGKILL)
    wait_for(lambda: not spares(), 10, "the spares and their helpers dead")
    run = spared.start("ping-pong", start_method="forkserver")
    assert run.wait(30) is RunState.COMPLETED, run.message
    assert run.pgid not in killed
    assert started_pids(run)["MainProcess"] == run.pgid
    assert len([e for e in run.events() if e["kind"] == "output"]) == 2
    spared.shutdown()
    leaks.check(spared.list())


def session_nice(pid: int) -> int:
    """The nice value of the scheduling group of `pid`'s session (its autogroup)."""
    with open(f"/proc/{pid}/autogroup") as f:
        return int(f.read().split()[-1])


@pytest.mark.skipif(
    not os.path.exists("/proc/self/autogroup"), reason="the kernel keeps no autogroups"
)
def test_spares_start_light_and_the_next_to_be_taken_gets_its_weight_back(
    spared: RunManager, leaks: Leaks
) -> None:
    first, second = warm_spares()
    assert session_nice(second) == SPARE_NICE  # started after the server's first
    run = spared.start("ping-pong", step_mode=True)  # held at its first call
    wait_for(lambda: {"Process-1", "Process-2"} <= set(started_pids(run)), 30, "workers")
    assert run.pgid == first
    # The run, its workers with it, and the next spare to be taken: normal weight.
    assert session_nice(first) == session_nice(started_pids(run)["Process-1"]) == 0
    assert session_nice(second) == 0
    # The one started in place of the taken one: the least, while the run goes.
    third = warm_spares(count=SPARES + 1)[-1]
    assert third not in (first, second)
    assert session_nice(third) == SPARE_NICE
    run.set_step_mode(False)
    assert run.wait(30) is RunState.COMPLETED, run.message
    spared.shutdown()
    leaks.check(spared.list())


@pytest.mark.parametrize("method", ["forkserver", "spawn", "fork"])
def test_stopping_a_run_that_took_the_spare_ends_all_its_processes(
    spared: RunManager, leaks: Leaks, method: str
) -> None:
    spare = warm_spares()[0]
    params = {"messages": 1000, "size": 1024, "delay": 2.0}
    run = spared.start("backpressure", params, start_method=method)
    wait_for(lambda: {"producer", "consumer"} <= set(started_pids(run)), 30, "workers started")
    assert run.pgid == spare
    pids = set(started_pids(run).values())
    run.stop()
    assert run.wait(30) is RunState.STOPPED, run.message
    assert [pid for pid in pids if alive(pid)] == []
    spared.shutdown()
    leaks.check(spared.list())


@pytest.mark.parametrize("method", ["forkserver", "spawn", "fork"])
def test_a_grandchild_in_a_session_of_its_own_is_ended_with_a_spare_started_run(
    faulty_scenarios: None, tmp_path: Path, leaks: Leaks, method: str
) -> None:
    # After faulty_scenarios: the spare is started with the test-only scenarios.
    runs = RunManager(run_root=str(tmp_path), spare_main=True, spare_collector=True)
    try:
        spare = warm_spares()[0]
        run = runs.start("test-escapes-the-group", start_method=method)
        escaped = "escaped:"
        wait_for(lambda: any(e.get("text", "").startswith(escaped) for e in run.events()), 30)
        printed = next(e["text"] for e in run.events() if e.get("text", "").startswith(escaped))
        grandchild, session, group = (int(word) for word in printed.split(":", 1)[1].split())
        assert run.pgid == spare and session == grandchild and group != spare
        assert run.wait(30) is RunState.COMPLETED, run.message
        wait_for(lambda: not alive(grandchild), 10, "the grandchild ended")
    finally:
        runs.shutdown()
    leaks.check(runs.list())


def _temp_dir_of(pid: int) -> str:
    """The TMPDIR a process was started with."""
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return next(e[7:].decode() for e in environ if e.startswith(b"TMPDIR="))


def test_a_server_killed_with_a_spare_waiting_leaves_no_process(tmp_path: Path) -> None:
    before = descendants()
    server = python_program(SERVER, str(tmp_path))
    try:
        assert server.stdout is not None
        pid = int(server.stdout.readline())
        temps = [_temp_dir_of(spare) for spare in warm_spares(pid)]
        assert all(Path(temp).name.startswith("pipescope-") for temp in temps), temps
        server.send_signal(signal.SIGKILL)
        server.wait(10)
        # The end of its input ends the spare, and its end its fork server and tracker.
        wait_for(lambda: not spares(pid), 20, "the spare and its helpers exit")
        # The spare collectors too: the end of their input ends them.
        wait_for(lambda: not new_processes(before), 20, "no process left")
        # And the spare removed the temporary directory made for it.
        wait_for(lambda: not any(map(os.path.exists, temps)), 20, "its TMPDIR removed")
    finally:
        if server.poll() is None:
            server.kill()
        server.wait()
        for stream in (server.stdin, server.stdout):
            if stream is not None:
                stream.close()


# A server whose run took a spare: it says the run's id once the workers run, then waits.
RUNNING_SERVER = """
import os, sys, time
from pipecore.runs import RunManager
from pipecore.runsweep import sweep
runs = RunManager(run_root=sys.argv[1], spare_main=True, spare_collector=True)
run = runs.start("backpressure", {"messages": 1000, "size": 1024, "delay": 2.0}, timeout=60.0)
while not run.state.terminal:
    started = {e["process"] for e in run.events() if e["kind"] == "process"}
    if {"producer", "consumer"} <= started:
        break
    time.sleep(0.01)
print(run.id, run.pgid, flush=True)
sys.stdin.read()
"""


def test_the_run_of_a_killed_server_that_took_a_spare_is_swept(tmp_path: Path) -> None:
    before = descendants()
    server = python_program(RUNNING_SERVER, str(tmp_path))
    manager: RunManager | None = None
    try:
        assert server.stdout is not None
        run_id, pgid = server.stdout.readline().decode().split()
        run_dir = tmp_path / f"pipescope-{run_id}"
        mark = json.loads((run_dir / runmarks.OWNER_FILE).read_text())["mark"]
        assert mark.startswith(f"spare.{server.pid}."), "the run took a spare"
        workers = {p.pid for p in runprocs.find(mark)}
        assert int(pgid) in workers and len(workers) >= 4, workers

        server.send_signal(signal.SIGKILL)
        server.wait(10)
        assert {p.pid for p in runprocs.find(mark)} == workers, "the run outlives its server"
        manager = RunManager(run_root=str(tmp_path))
        wait_for(lambda: not run_dir.exists() and not runprocs.find(mark), 20, "sweep")
        assert manager.swept.processes >= len(workers)
        temp = runmarks.temp_dir(mark)
        assert temp is not None and not Path(temp).exists(), "the sweep removes its TMPDIR"
        wait_for(lambda: not new_processes(before), 20, "no process left")
    finally:
        if manager is not None:
            manager.shutdown()
        if server.poll() is None:
            server.kill()
        server.wait()
        sweep(str(tmp_path))
        for stream in (server.stdin, server.stdout):
            if stream is not None:
                stream.close()


@pytest.mark.parametrize(
    "noted", ["", "spare.", "spare.1.0a0b", "r1.{pid}.", "r1.{pid}.0a0b\0", "r1.{pid}1.0a0b", 7]
)
def test_a_noted_marker_its_owner_did_not_make_is_not_used(tmp_path: Path, noted: object) -> None:
    # The sweep ends whatever carries the noted marker: one that is empty, cut short or
    # made by another server would end processes that are not this run's.
    runmarks.write_owner(str(tmp_path), "r1.x")
    owner = runmarks.read_owner(str(tmp_path))
    assert owner is not None and owner.pid == os.getpid()
    record = json.loads((tmp_path / runmarks.OWNER_FILE).read_text())
    record["mark"] = noted.format(pid=owner.pid) if isinstance(noted, str) else noted
    (tmp_path / runmarks.OWNER_FILE).write_text(json.dumps(record))
    assert runmarks.read_mark(str(tmp_path), owner) is None
    mark = f"spare.{owner.pid}.0a0b0c0d"
    runmarks.write_owner(str(tmp_path), mark)
    assert runmarks.read_mark(str(tmp_path), owner) == mark
