"""A run's processes through /proc: found by an inherited marker or parentage, inspected."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass

# Set in the environment a run's first process gets; every descendant inherits it, even
# one that leaves the run's process group or session (os.setsid).
MARK_VARIABLE = "PIPESCOPE_RUN_MARK"
SEMAPHORE_PREFIX = "/dev/shm/sem."


@dataclass(frozen=True)
class Proc:
    """One process, identified by its pid and start time so a reused pid is not mistaken."""

    pid: int
    start: int


# The CPU weight a process started ahead of its run (a spare) boots with: the least, so
# that starting it takes almost nothing from a run that goes (pipecore.spares).
SPARE_NICE = 19


def set_session_nice(pid: int, nice: int) -> bool:
    """Set the nice value of the scheduling group of `pid`'s session (its autogroup, which
    weighs the session against the others) to `nice`; False where there is none.

    Any user may raise it, and lower it again to 0. A spare is in a session of its own,
    so this weighs the spare and what it started (its fork server, resource tracker).
    """
    try:
        with open(f"/proc/{pid}/autogroup", "w") as f:
            f.write(str(nice))
    except OSError:
        return False
    return True


def stat_fields(pid: int) -> list[bytes] | None:
    """The fields of `/proc/PID/stat` after the command name, or None when `pid` is gone:
    [0] state, [1] parent pid, [2] process group, [11] utime, [12] stime, [19] start time."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None


def stat_of(pid: int) -> tuple[str, int, int] | None:
    """State, parent pid and start time of `pid`, or None when it is gone."""
    fields = stat_fields(pid)
    return None if fields is None else (fields[0].decode(), int(fields[1]), int(fields[19]))


def _carries(pid: int, needle: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as environ:
            return needle in b"\0" + environ.read()
    except OSError:
        return False


def find(mark: str, roots: Iterable[int] = (), *, prefix: bool = False) -> set[Proc]:
    """The live processes of this user that carry `mark` (with `prefix`, a marker that
    starts with `mark`), and every descendant of `roots`."""
    needle = f"\0{MARK_VARIABLE}={mark}".encode()
    if not prefix:
        needle += b"\0"
    me, uid = os.getpid(), os.getuid()
    children: dict[int, list[Proc]] = {}
    found: set[Proc] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        pid = int(entry)
        try:
            if os.stat(f"/proc/{pid}").st_uid != uid:
                continue
        except OSError:
            continue
        stat = stat_of(pid)
        if stat is None or stat[0] == "Z":
            continue
        proc = Proc(pid, stat[2])
        children.setdefault(stat[1], []).append(proc)
        # environ ends with a NUL after the last variable, so the needle's ends always match.
        if _carries(pid, needle):
            found.add(proc)
    stack, seen = list(roots), set(roots)
    while stack:
        for child in children.get(stack.pop(), []):
            found.add(child)
            if child.pid not in seen:
                seen.add(child.pid)
                stack.append(child.pid)
    return found


def alive(procs: Iterable[Proc]) -> set[Proc]:
    """Those of `procs` still running; zombies among this process's children are reaped."""
    living: set[Proc] = set()
    for proc in procs:
        stat = stat_of(proc.pid)
        if stat is None or stat[2] != proc.start:
            continue
        if stat[0] == "Z":
            # Re-parented to this process (a child subreaper): nobody else will reap it.
            with contextlib.suppress(ChildProcessError):
                os.waitpid(proc.pid, os.WNOHANG)
            continue
        living.add(proc)
    return living


def groups(procs: Iterable[Proc]) -> set[int]:
    """The process groups of those of `procs` still running."""
    found: set[int] = set()
    for proc in procs:
        fields = stat_fields(proc.pid)
        if fields is not None and int(fields[19]) == proc.start:
            found.add(int(fields[2]))
    return found


def semaphores(pids: Iterable[int]) -> set[str]:
    """The named POSIX semaphores (multiprocessing's `sem.mp-*`) these processes have
    mapped and that still exist.

    Matched by inode: the process that created one maps it under the temporary name
    sem_open made it as, since unlinked ("/dev/shm/sem.XXXXXX (deleted)"), not under
    the name it then got."""
    inodes: set[int] = set()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/maps", encoding="utf-8", errors="replace") as maps:
                for line in maps:
                    parts = line.split(None, 5)
                    path = parts[5].strip() if len(parts) == 6 else ""
                    if path.startswith(SEMAPHORE_PREFIX) and "/" not in path[len("/dev/shm/") :]:
                        inodes.add(int(parts[4]))
        except (OSError, ValueError):
            continue
    if not inodes:
        return set()
    try:
        with os.scandir(os.path.dirname(SEMAPHORE_PREFIX)) as entries:
            return {e.path for e in entries if e.name.startswith("sem.mp-") and e.inode() in inodes}
    except OSError:
        return set()


def _cpu_ticks(pid: int) -> tuple[str, int] | None:
    """State and CPU time (user and system, in clock ticks) of `pid`."""
    fields = stat_fields(pid)
    return None if fields is None else (fields[0].decode(), int(fields[11]) + int(fields[12]))


def stalled(pids: set[int], samples: int = 3, interval: float = 0.05) -> bool:
    """Whether none of `pids` runs or uses CPU over a few samples (a deadlock confirmed).

    A process sending a frame larger than the kernel buffer, and its peer receiving
    it, both sit in one call for as long as the copy takes; that is progress, not a
    deadlock, and it shows as CPU time.
    """
    if not pids or not sys.platform.startswith("linux"):
        return True
    before = {pid: _cpu_ticks(pid) for pid in pids}
    for _ in range(samples):
        time.sleep(interval)
        for pid in pids:
            now, then = _cpu_ticks(pid), before[pid]
            if now is None or then is None:
                continue
            if now[0] == "R" or now[1] != then[1]:
                return False
    return True


__all__ = [
    "MARK_VARIABLE",
    "Proc",
    "alive",
    "find",
    "groups",
    "semaphores",
    "stalled",
    "stat_fields",
    "stat_of",
]
