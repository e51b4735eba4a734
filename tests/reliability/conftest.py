"""Reliability fixtures: leak accounting, a RunManager, polling, and test-only scenarios."""

import os
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from multiprocessing import resource_tracker
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Protocol

import pytest

import pipecore
from pipecore.runs import Run, RunManager
from pipecore.scenarios import SCENARIOS
from pipecore.scenarios.catalogue import Params, RunContext, Scenario

Event = dict[str, Any]
ROOT = Path(__file__).resolve().parents[2]
TERMINAL = {"completed", "failed", "stopped", "timeout", "deadlock", "killed"}
# Each test seeds its randomness from this, so a failure can be replayed (printed on failure).
SEED = int(os.environ.get("PIPESCOPE_RELIABILITY_SEED", "0") or 0) or random.randrange(1, 1 << 30)


def python_program(source: str, *args: str) -> subprocess.Popen[bytes]:
    """`source` run by a new interpreter that imports this tree's pipecore, with `args`
    after it; its stdin and stdout are pipes to this process."""
    return subprocess.Popen(
        [sys.executable, "-c", source, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    """Poll `predicate` every 10 ms until it holds; fail naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what}: not reached within {timeout} s"
        time.sleep(0.01)


def descendants(root: int | None = None) -> set[int]:
    """Every live process below `root` (default: this one), found through /proc."""
    root = os.getpid() if root is None else root
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(b")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found: set[int] = set()
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def alive(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat.rsplit(b")", 1)[1].split()[0] != b"Z"


def open_fds() -> set[str]:
    """This process's open fds with what each points to."""
    fds = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            fds.add(f"{fd} -> {os.readlink(f'/proc/self/fd/{fd}')}")
        except OSError:
            continue  # the fd listdir itself held
    return fds


def shm_entries() -> set[str]:
    """The /dev/shm names a test can leave: multiprocessing semaphores and segments, and
    this process's own run directories (other programs' runs are not this test's)."""
    prefixes = ("sem.mp", "psm_", f"pipescope-test-{os.getpid()}-")
    return {n for n in os.listdir("/dev/shm") if n.startswith(prefixes)}


class Identified(Protocol):
    """Anything with a run id (a run of this server, or of another kind)."""

    @property
    def id(self) -> str: ...


@dataclass
class Leaks:
    """What this process holds before a test; `check` compares after, with a deadline."""

    processes: set[int] = field(default_factory=descendants)
    fds: set[str] = field(default_factory=open_fds)
    shm: set[str] = field(default_factory=shm_entries)

    def found(self) -> dict[str, list[str]]:
        return {
            "processes": sorted(str(p) for p in descendants() - self.processes),
            "fds": sorted(open_fds() - self.fds),
            "shm": sorted(shm_entries() - self.shm),
        }

    def check(self, runs: Iterable[Identified] = (), timeout: float = 20.0) -> dict[str, int]:
        """Wait until nothing is left over, the directories of `runs` included; return the
        counts (all 0) for the figures.

        Other programs on the machine may hold semaphores for a while; a leaked one stays.
        """
        deadline = time.monotonic() + timeout
        run_dirs = [f"/dev/shm/pipescope-{run.id}" for run in runs]
        while True:
            left = self.found()
            left["shm"] += [os.path.basename(d) for d in run_dirs if os.path.exists(d)]
            if not any(left.values()) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert not any(left.values()), f"left over after the test: {left}"
        return {name: len(items) for name, items in left.items()}


@pytest.fixture
def leaks() -> Leaks:
    # The helper process multiprocessing keeps for the test process itself lives on.
    resource_tracker.ensure_running()
    return Leaks()


@pytest.fixture
def manager() -> Iterator[RunManager]:
    """A RunManager for up to 4 concurrent runs, shut down when the test ends."""
    runs = RunManager(max_runs=4, max_processes=16, max_run_seconds=30.0)
    try:
        yield runs
    finally:
        runs.shutdown()


def started_pids(run: Run) -> dict[str, int]:
    """Process name -> pid, from the run's `process` start events."""
    return {
        str(e["process"]): int(e["pid"])
        for e in run.events()
        if e["kind"] == "process" and e.get("op") == "start"
    }


def figure(name: str, text: str) -> None:
    """Print a measured figure; `pytest -s tests/reliability` shows them for the docs."""
    print(f"\n[figure] {name}: {text}")


# -- test-only scenarios ---------------------------------------------------------
# The product's registry is fixed: a run's main process runs only what pipecore.scenarios
# lists. These scenarios exist only in main processes started by `faulty_runmain`, which
# the tests put in place of the interpreter RunManager launches (see `faulty_scenarios`).

MEGABYTES = 4
LINE = "x" * 99


def _raises(params: Params, ctx: RunContext) -> None:
    a, b = pipecore.Pipe(name="before the failure")
    a.send("last words")
    b.recv()
    raise RuntimeError("the scenario failed on purpose")


def _chatty(conn: Connection) -> None:
    for i in range(MEGABYTES * 1024 * 1024 // (len(LINE) + 1)):
        print(LINE)
        if i == 0:
            conn.send("printing")
    print("y" * (1024 * 1024))  # one line of a mebibyte


def _prints_megabytes(params: Params, ctx: RunContext) -> None:
    a, b = pipecore.Pipe(name="chatty")
    p = ctx.Process(target=_chatty, args=(b,), name="chatty")
    p.start()
    assert a.recv() == "printing"
    p.join(60)


def _spawner(conn: Connection) -> None:
    # A grandchild from os.fork and one from a subprocess, both outliving this worker.
    pid = os.fork()
    if pid == 0:
        time.sleep(600)
        os._exit(0)
    sleeper = __import__("subprocess").Popen(["sleep", "600"])
    conn.send([pid, sleeper.pid])
    time.sleep(600)


def _forks_grandchildren(params: Params, ctx: RunContext) -> None:
    a, b = pipecore.Pipe(name="grandchildren")
    # Daemonic: main's exit ends the worker, leaving its grandchildren orphaned in the group.
    p = ctx.Process(target=_spawner, args=(b,), name="spawner", daemon=True)
    p.start()
    print(f"grandchildren: {a.recv()}")
    # Main returns with the worker and its grandchildren still running.


def _setsid_spawner(conn: Connection) -> None:
    # A grandchild that leaves the run's process group and session.
    pid = os.fork()
    if pid == 0:
        os.setsid()
        time.sleep(600)
        os._exit(0)
    # Reported once it has left, as seen while it lives: the run may end it at any time
    # after the pid is printed.
    while os.getsid(pid) != pid:
        time.sleep(0.001)
    conn.send(f"{pid} {os.getsid(pid)} {os.getpgid(pid)}")
    time.sleep(600)


def _escapes_the_group(params: Params, ctx: RunContext) -> None:
    a, b = pipecore.Pipe(name="escapee")
    p = ctx.Process(target=_setsid_spawner, args=(b,), name="spawner", daemon=True)
    p.start()
    print(f"escaped: {a.recv()}")
    # Main returns with the grandchild in a session of its own.


FAULTY = {
    scenario.id: scenario
    for scenario in (
        Scenario("test-raises", {"en": "raises", "zh": "raises"}, {"en": "", "zh": ""}, [],
                 _raises, __name__, processes=lambda params: 0),
        Scenario("test-prints-megabytes", {"en": "prints", "zh": "prints"}, {"en": "", "zh": ""},
                 [], _prints_megabytes, __name__, processes=lambda params: 1),
        Scenario("test-forks-grandchildren", {"en": "forks", "zh": "forks"},
                 {"en": "", "zh": ""}, [], _forks_grandchildren, __name__,
                 processes=lambda params: 3),
        Scenario("test-escapes-the-group", {"en": "setsid", "zh": "setsid"},
                 {"en": "", "zh": ""}, [], _escapes_the_group, __name__,
                 processes=lambda params: 2),
    )
}  # fmt: skip


def faulty_runmain() -> int:
    """`pipecore.runmain` with the test-only scenarios registered too."""
    from pipecore import runmain

    SCENARIOS.update(FAULTY)
    return runmain.main(sys.argv[1:])


class _Interpreter:
    """Stands in for `sys` inside pipecore.runmain: the same, but another executable."""

    def __init__(self, executable: str) -> None:
        self.executable = executable

    def __getattr__(self, name: str) -> Any:
        return getattr(sys, name)


@pytest.fixture
def faulty_scenarios(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Let RunManager start the test-only scenarios (in this test process and its runs)."""
    launcher = tmp_path / "python"
    # RunManager runs `<executable> -m pipecore.runmain ARGS`: drop `-m pipecore.runmain`.
    launcher.write_text(
        "#!/bin/sh\nshift 2\n"
        f"exec {sys.executable} -c 'import sys; from tests.reliability.conftest import "
        'faulty_runmain; sys.exit(faulty_runmain())\' "$@"\n'
    )
    launcher.chmod(0o755)
    import pipecore.runmain

    monkeypatch.setattr(pipecore.runmain, "sys", _Interpreter(str(launcher)))
    for scenario_id, scenario in FAULTY.items():
        monkeypatch.setitem(SCENARIOS, scenario_id, scenario)
