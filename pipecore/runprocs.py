"""A run's processes wherever they went: found through /proc by an inherited marker, ended."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # a run's main process imports this module: keep its start light
    import subprocess

# Set in the environment a run's first process gets; every descendant inherits it, even
# one that leaves the run's process group or session (os.setsid).
MARK_VARIABLE = "PIPESCOPE_RUN_MARK"
POLL_SECONDS = 0.01
# The workers a run's main process left running when its program returned: its own exit
# ends them (multiprocessing terminates daemonic workers), so their end is not a fault.
LEFT_FILE = "left-running.json"
# A process that forks while it is being ended may leave a child: look again, a few times.
ROUNDS = 3
# The server that made a run directory: its pid, start time and boot, so that a run left
# by a server that died without its teardown (SIGKILL, a crash) can be told apart.
OWNER_FILE = "owner.json"
BOOT_ID = "/proc/sys/kernel/random/boot_id"


@dataclass(frozen=True)
class Proc:
    """One process, identified by its pid and start time so a reused pid is not mistaken."""

    pid: int
    start: int


def new_mark(run_id: str) -> str:
    """A marker unique to this run of this server."""
    return f"{run_id}.{os.getpid()}.{os.urandom(4).hex()}"


def marked_environment(env: dict[str, str], mark: str) -> dict[str, str]:
    """`env` with the run's marker added."""
    return {**env, MARK_VARIABLE: mark}


def main_environment(mark: str) -> dict[str, str]:
    """The environment of a run's main process: this one's, marked, importing this pipecore."""
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = root if not path else f"{root}{os.pathsep}{path}"
    env["PYTHONUNBUFFERED"] = "1"
    return marked_environment(env, mark)


def write_left(run_dir: str, pids: Iterable[int]) -> None:
    """Note, in the run directory, the workers the main process leaves running."""
    path = os.path.join(run_dir, LEFT_FILE)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as file:
        json.dump(sorted(pids), file)
    os.replace(tmp, path)


def read_left(run_dir: str) -> set[int]:
    """The pids `write_left` noted; none when the main process did not get that far."""
    try:
        with open(os.path.join(run_dir, LEFT_FILE)) as file:
            pids = json.load(file)
    except (OSError, ValueError):
        return set()
    return {pid for pid in pids if isinstance(pid, int)} if isinstance(pids, list) else set()


def _boot_id() -> str:
    try:
        with open(BOOT_ID) as file:
            return file.read().strip()
    except OSError:
        return ""


def write_owner(run_dir: str) -> None:
    """Note, in the run directory, that this process owns the run (written atomically)."""
    stat = stat_of(os.getpid())
    owner = {"pid": os.getpid(), "start": 0 if stat is None else stat[2], "boot": _boot_id()}
    path = os.path.join(run_dir, OWNER_FILE)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as file:
        json.dump(owner, file)
    os.replace(tmp, path)


def read_owner(run_dir: str) -> Proc | None:
    """The process `write_owner` noted; None when there is no (readable) owner file.

    An owner noted during another boot is returned with start -1, which no process has.
    """
    try:
        with open(os.path.join(run_dir, OWNER_FILE)) as file:
            owner = json.load(file)
    except (OSError, ValueError):
        return None
    if not isinstance(owner, dict):
        return None
    pid, start, boot = owner.get("pid"), owner.get("start"), owner.get("boot")
    if not isinstance(pid, int) or not isinstance(start, int) or not isinstance(boot, str):
        return None
    return Proc(pid, start if boot == _boot_id() else -1)


def stat_of(pid: int) -> tuple[str, int, int] | None:
    """State, parent pid and start time of `pid`, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # After the command name: state (3rd field), ppid (4th), ..., starttime (22nd).
    return fields[0].decode(), int(fields[1]), int(fields[19])


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


SEMAPHORE_PREFIX = "/dev/shm/sem."


def semaphores(pids: Iterable[int]) -> set[str]:
    """The named POSIX semaphores (multiprocessing's `sem.mp-*`) these processes have
    mapped and that still exist."""
    found: set[str] = set()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/maps", encoding="utf-8", errors="replace") as maps:
                for line in maps:
                    parts = line.split(None, 5)
                    path = parts[5].strip() if len(parts) == 6 else ""
                    if path.endswith(" (deleted)"):
                        continue  # unlinked already (as under fork, at once)
                    if path.startswith(SEMAPHORE_PREFIX) and "/" not in path[len("/dev/shm/") :]:
                        found.add(path)
        except OSError:
            continue
    return found


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
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)
        _wait_group(proc, grace)
    proc.wait(timeout=kill_grace)
    _reap_group(pgid)
    # Whatever left the group (os.setsid, setpgid) is ended by its marker.
    outside = end(mark, below, term_grace=term_grace, kill_grace=kill_grace)
    remove_semaphores(named)
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


def groups(procs: Iterable[Proc]) -> set[int]:
    """The process groups of those of `procs` still running."""
    found: set[int] = set()
    for proc in procs:
        try:
            with open(f"/proc/{proc.pid}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # After the command name: state, ppid, pgrp (5th field), ..., starttime (22nd).
        if int(fields[19]) == proc.start:
            found.add(int(fields[2]))
    return found


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


def _cpu_ticks(pid: int) -> tuple[str, int] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    # Fields after the command name: state, ..., utime (12th), stime (13th).
    return fields[0].decode(), int(fields[11]) + int(fields[12])


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
    "LEFT_FILE",
    "MARK_VARIABLE",
    "OWNER_FILE",
    "Proc",
    "alive",
    "end",
    "end_run",
    "find",
    "groups",
    "main_environment",
    "marked_environment",
    "new_mark",
    "read_left",
    "read_owner",
    "reap_groups",
    "stalled",
    "stat_of",
    "write_left",
    "write_owner",
]
