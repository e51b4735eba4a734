"""Ending a run's processes: its process group, then those that left it, then what is left."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from pipecore import runmarks
from pipecore.runprocs import Proc, alive, find, semaphores

if TYPE_CHECKING:  # for annotations only
    import subprocess

POLL_SECONDS = 0.01
# A process that forks while it is being ended may leave a child: look again, a few times.
ROUNDS = 3


def _signal(procs: Iterable[Proc], sig: signal.Signals) -> None:
    for proc in alive(procs):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(proc.pid, sig)


def _wait(procs: set[Proc], seconds: float) -> set[Proc]:
    deadline = time.monotonic() + seconds
    left = alive(procs)
    while left and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
        left = alive(left)
    return left


def end(
    mark: str,
    known: Iterable[Proc] = (),
    *,
    prefix: bool = False,
    term_grace: float = 1.0,
    kill_grace: float = 3.0,
) -> int:
    """End every process carrying `mark` (with `prefix`, a marker that starts with `mark`)
    and those of `known` still alive: SIGTERM, then SIGKILL after `term_grace`; return how
    many there were."""
    ended: set[Proc] = set()
    extra = set(known)
    for _ in range(ROUNDS):
        procs = alive(find(mark, prefix=prefix) | extra)
        extra = set()
        if not procs:
            break
        ended |= procs
        _signal(procs, signal.SIGTERM)
        left = _wait(procs, term_grace)
        if left:
            _signal(left, signal.SIGKILL)
            _wait(left, kill_grace)
    return len(ended)


def remove_semaphores(paths: Iterable[str]) -> int:
    """Unlink what is left of `paths`; return how many were still there."""
    removed = 0
    for path in paths:
        with contextlib.suppress(FileNotFoundError, PermissionError):
            os.unlink(path)
            removed += 1
    return removed


def end_run(
    proc: subprocess.Popen[bytes], mark: str, *, term_grace: float, kill_grace: float
) -> int:
    """End a run: the process group of its main process `proc`, then every process that
    left the group (found by `mark`, or below `proc` by parentage); SIGTERM, then SIGKILL
    after `term_grace`. Return how many were found outside the group."""
    pgid = proc.pid
    marked = find(mark, [pgid])
    # Below the main process by parentage now: a process that left the group is found
    # by the run's marker too, unless it dropped its environment.
    below = marked if proc.poll() is None else set()
    # multiprocessing's resource tracker unlinks the run's named semaphores when the run
    # ends, unless the end caught it (or the process creating one) half-way: note them
    # now, and remove what is left once every process of the run is gone.
    named = semaphores(p.pid for p in marked)
    if proc.poll() is not None:
        # The main process ended on its own: give its helpers (forkserver, resource
        # tracker) a moment to exit cleanly before signalling them.
        _wait_group(proc, 0.5)
    for sig, grace in ((signal.SIGTERM, term_grace), (signal.SIGKILL, kill_grace)):
        if not _group_alive(proc):
            break
        named |= semaphores(p.pid for p in marked)  # made since: a start caught mid-way
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)
        _wait_group(proc, grace)
    proc.wait(timeout=kill_grace)
    _reap_group(pgid)
    # Whatever left the group (os.setsid, setpgid) is ended by its marker.
    outside = end(mark, below, term_grace=term_grace, kill_grace=kill_grace)
    remove_semaphores(named)
    temp = runmarks.temp_dir(mark)
    if temp is not None:
        shutil.rmtree(temp, ignore_errors=True)
    return outside


def _wait_group(proc: subprocess.Popen[bytes], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while _group_alive(proc) and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)


def _group_alive(proc: subprocess.Popen[bytes]) -> bool:
    if proc.poll() is not None:
        _reap_group(proc.pid)
    try:
        os.killpg(proc.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_groups(pgids: Iterable[int]) -> None:
    """Reap the finished children of this process in any of `pgids`: a run's process that
    exited before it could be found (a zombie's marker cannot be read) and was re-parented
    to this process (a child subreaper)."""
    for pgid in pgids:
        _reap_group(pgid)


def _reap_group(pgid: int) -> None:
    # Orphans of the run re-parented to this process (the subreaper).
    while True:
        try:
            pid, _ = os.waitpid(-pgid, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


__all__ = ["end", "end_run", "reap_groups", "remove_semaphores"]
