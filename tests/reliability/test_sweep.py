"""A server killed mid-run: the next RunManager ends that run's processes and removes its
directory, and leaves every run of a live server alone. A tracer killed: its directory goes
once its program has ended."""

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipecore import runmarks, runprocs
from pipecore.runs import RunManager
from pipecore.runsweep import UNOWNED_AGE, Swept, sweep

from .conftest import alive, descendants, python_program, wait_for

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]
# A server that starts a long run and says so (run id and its pid), then waits to be killed.
SERVER = """
import os, sys, time
from pipecore.runs import RunManager
runs = RunManager(run_root=sys.argv[1], max_run_seconds=60.0)
run = runs.start("backpressure", {"messages": 1000, "size": 1024, "delay": 2.0}, timeout=60.0)
deadline = time.monotonic() + 30.0
while time.monotonic() < deadline:
    started = {e["process"] for e in run.events() if e["kind"] == "process" and e["op"] == "start"}
    if {"producer", "consumer"} <= started or run.state.terminal:
        break
    time.sleep(0.01)
print(run.id, os.getpid(), ",".join(sorted(started)) or "-", run.state.value, flush=True)
print(run.message, file=sys.stderr, flush=True)
sys.stdin.read()
"""


def marked(prefix: str) -> set[int]:
    """Live processes whose run marker starts with `prefix` (read from /proc directly)."""
    needle = f"\0{runprocs.MARK_VARIABLE}={prefix}".encode()
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            state = Path(f"/proc/{entry}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
            environ = b"\0" + Path(f"/proc/{entry}/environ").read_bytes()
        except (OSError, IndexError):
            continue
        if state != b"Z" and needle in environ:
            found.add(int(entry))
    return found


def start_time(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[19])


def boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def gone_process() -> tuple[int, int]:
    """The pid and start time of a process that has exited."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    start = start_time(proc.pid)
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait()
    return proc.pid, start


def make_run_dir(root: Path, run_id: str, owner: tuple[int, int] | None) -> Path:
    run_dir = root / f"pipescope-{run_id}"
    run_dir.mkdir()
    (run_dir / "1234.ring").write_bytes(bytes(4096))
    if owner is not None:
        pid, start = owner
        record = {"pid": pid, "start": start, "boot": boot_id()}
        (run_dir / runmarks.OWNER_FILE).write_text(json.dumps(record))
    return run_dir


@pytest.fixture
def sleepers() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Marked stand-ins for a run's workers, each in a session of its own; ended at the end."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def sleeper(procs: list[subprocess.Popen[bytes]], mark: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        SLEEPER, env=runmarks.marked_environment(dict(os.environ), mark), start_new_session=True
    )
    procs.append(proc)
    return proc


@pytest.mark.parametrize("owner", ["exited", "pid reused"])
def test_the_run_of_a_dead_server_is_ended_and_removed(
    tmp_path: Path, sleepers: list[subprocess.Popen[bytes]], owner: str
) -> None:
    if owner == "exited":
        pid, start = gone_process()
    else:
        # This process has the pid, but it started at another time: not the owner.
        pid, start = os.getpid(), start_time(os.getpid()) + 1
    run_dir = make_run_dir(tmp_path, "r0dead1", (pid, start))
    worker = sleeper(sleepers, f"r0dead1.{pid}.0a0b0c0d")
    # A run of another server, and another run id, are not this run's.
    other = sleeper(sleepers, f"r0dead1.{pid}1.0a0b0c0d")
    assert marked(f"r0dead1.{pid}.") == {worker.pid}

    manager = RunManager(run_root=str(tmp_path))
    try:
        wait_for(lambda: not run_dir.exists() and not marked(f"r0dead1.{pid}."), 10.0, "sweep")
        assert worker.wait(10.0) is not None
        assert other.poll() is None
        assert manager.swept == Swept(directories=1, processes=1)
    finally:
        manager.shutdown()


def test_the_runs_of_a_live_server_are_left_alone(
    tmp_path: Path, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    run_dir = make_run_dir(tmp_path, "r0a11ve", (os.getpid(), start_time(os.getpid())))
    # Old enough to go if it had no owner.
    old = os.stat(run_dir).st_mtime - 2 * UNOWNED_AGE
    os.utime(run_dir / "1234.ring", (old, old))
    os.utime(run_dir, (old, old))
    worker = sleeper(sleepers, f"r0a11ve.{os.getpid()}.0a0b0c0d")
    before = sorted(p.name for p in run_dir.iterdir())

    manager = RunManager(run_root=str(tmp_path))
    try:
        assert manager.swept == Swept()
        assert sorted(p.name for p in run_dir.iterdir()) == before
        assert worker.poll() is None
        assert marked(f"r0a11ve.{os.getpid()}.") == {worker.pid}
    finally:
        manager.shutdown()


def test_a_directory_without_an_owner_goes_only_when_old_and_idle(
    tmp_path: Path, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    fresh = make_run_dir(tmp_path, "r00fe5h", None)
    old_idle = make_run_dir(tmp_path, "r0001d1", None)
    old_busy = make_run_dir(tmp_path, "r000b5y", None)
    old_idle_trace = make_run_dir(tmp_path, "t0001d1", None)
    not_a_run = tmp_path / "pipescope-x0001d1"
    not_a_run.mkdir()
    for run_dir in (old_idle, old_busy, old_idle_trace, not_a_run):
        old = os.stat(run_dir).st_mtime - 2 * UNOWNED_AGE
        for path in (*run_dir.iterdir(), run_dir):
            os.utime(path, (old, old))
    worker = sleeper(sleepers, "r000b5y.1.0a0b0c0d")

    assert sweep(str(tmp_path)) == Swept(directories=2, processes=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "pipescope-r000b5y",
        "pipescope-r00fe5h",
        "pipescope-x0001d1",
    ]
    assert worker.poll() is None
    assert fresh.exists()


def test_a_server_killed_mid_run_leaves_nothing_after_the_next_start(tmp_path: Path) -> None:
    before = descendants()
    server = python_program(SERVER, str(tmp_path))
    manager: RunManager | None = None
    try:
        assert server.stdout is not None
        line = server.stdout.readline().decode()
        run_id, pid, started, _state = line.split()
        assert {"producer", "consumer"} <= set(started.split(",")), line
        run_dir = tmp_path / f"pipescope-{run_id}"
        prefix = f"{run_id}.{pid}."
        workers = marked(prefix)
        assert run_dir.is_dir()
        assert len(workers) >= 3, f"expected the main process and 2 workers, got {workers}"

        server.send_signal(signal.SIGKILL)
        server.wait(10.0)
        assert marked(prefix) == workers, "the run's processes outlive its server"
        assert run_dir.is_dir()
        # The run's collector process exits by itself once its server is gone; re-parented
        # to this process (a subreaper), it waits as a zombie for the sweep to reap it.
        collector = int((run_dir / "collector.pid").read_text())
        wait_for(lambda: not alive(collector), 20.0, "the collector process exits")

        manager = RunManager(run_root=str(tmp_path))
        wait_for(lambda: not run_dir.exists() and not marked(prefix), 20.0, "sweep")
        assert manager.swept.directories == 1
        assert manager.swept.processes >= len(workers)
        assert list(tmp_path.iterdir()) == []
        # Those re-parented to this process (the run manager is a subreaper) are reaped.
        wait_for(lambda: not descendants() - before, 10.0, "no process left")
    finally:
        if manager is not None:
            manager.shutdown()
        if server.poll() is None:
            server.kill()
        server.wait()
        # Only when the test failed early: the server is gone, so its run goes now.
        sweep(str(tmp_path))
        for stream in (server.stdin, server.stdout):
            if stream is not None:
                stream.close()


def test_the_directory_of_a_dead_tracer_goes_once_its_program_has_ended(
    tmp_path: Path, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    pid, start = gone_process()
    ended = make_run_dir(tmp_path, "t0dead1", (pid, start))
    running = make_run_dir(tmp_path, "t0dead2", (pid, start))
    live = make_run_dir(tmp_path, "t0a11ve", (os.getpid(), start_time(os.getpid())))
    # The traced program of t0dead2 still runs (and writes into its directory): it is the
    # user's, not the sweep's to end.
    program = sleeper(sleepers, f"t0dead2.{pid}.0a0b0c0d")

    assert sweep(str(tmp_path)) == Swept(directories=1, processes=0)
    assert not ended.exists()
    assert running.is_dir() and live.is_dir()
    assert program.poll() is None

    program.kill()
    program.wait()
    assert sweep(str(tmp_path)) == Swept(directories=1, processes=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipescope-t0a11ve"]
