"""What marks a run: its processes' inherited marker and the notes in its run directory."""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterable

from pipecore.runprocs import MARK_VARIABLE, Proc, alive, stat_of

# The workers a run's main process left running when its program returned: its own exit
# ends them (multiprocessing terminates daemonic workers), so their end is not a fault.
LEFT_FILE = "left-running.json"
# The server that made a run directory: its pid, start time and boot, so that a run left
# by a server that died without its teardown (SIGKILL, a crash) can be told apart.
OWNER_FILE = "owner.json"
BOOT_ID = "/proc/sys/kernel/random/boot_id"


def new_mark(run_id: str) -> str:
    """A marker unique to this run of this server."""
    return f"{run_id}.{os.getpid()}.{os.urandom(4).hex()}"


def marked_environment(env: dict[str, str], mark: str) -> dict[str, str]:
    """`env` with the run's marker added."""
    return {**env, MARK_VARIABLE: mark}


# A fork server's socket lives at TMPDIR/pymp-XXXXXXXX/listener-XXXXXXXX (30 characters
# past TMPDIR), and a Unix socket's path holds at most 107.
_SOCKET_ROOM = 107 - 30


def temp_dir(mark: str) -> str | None:
    """The temporary directory (TMPDIR) of the main process carrying `mark` and of its
    workers: multiprocessing keeps its fork server's socket there (`pymp-*`), which a
    process ended by a signal leaves behind; the run's teardown removes the whole. None
    when the system's temporary directory is too long a path for that socket."""
    path = os.path.join(tempfile.gettempdir(), temp_dir_name(mark))
    return path if len(path) <= _SOCKET_ROOM else None


def temp_dir_name(mark: str) -> str:
    """The name of `temp_dir(mark)`, which a process it was made for finds as its TMPDIR."""
    return f"pipescope-{mark.rsplit('.', 1)[-1]}"


def main_environment(mark: str) -> dict[str, str]:
    """The environment of a run's main process: this one's, marked, importing this pipecore,
    with a temporary directory of its own (`temp_dir`, made here)."""
    env = dict(os.environ)
    temp = temp_dir(mark)
    if temp is not None:
        os.makedirs(temp, mode=0o700, exist_ok=True)
        env["TMPDIR"] = temp
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


def write_owner(run_dir: str, mark: str | None = None) -> None:
    """Note, in the run directory, that this process owns the run (written atomically),
    and the run's marker when it is not `new_mark(run_id)` (a main process started ahead)."""
    stat = stat_of(os.getpid())
    owner: dict[str, object] = {
        "pid": os.getpid(),
        "start": 0 if stat is None else stat[2],
        "boot": _boot_id(),
    }
    if mark is not None:
        owner["mark"] = mark
    path = os.path.join(run_dir, OWNER_FILE)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as file:
        json.dump(owner, file)
    os.replace(tmp, path)


def read_mark(run_dir: str, owner: Proc) -> str | None:
    """The run's marker `write_owner` noted, if it is one that `owner` made; else None."""
    try:
        with open(os.path.join(run_dir, OWNER_FILE)) as file:
            mark = json.load(file).get("mark")
    except (OSError, ValueError, AttributeError):
        return None
    # Never a marker that would match another server's processes (or every run's).
    if isinstance(mark, str) and re.fullmatch(rf"[a-z0-9]+\.{owner.pid}\.[0-9a-f]+", mark):
        return mark
    return None


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


def owner_gone(run_dir: str) -> bool:
    """Whether the run's owner (its server or tracer, which drains its rings) is known to
    have exited: False while it runs, and when no owner was noted."""
    owner = read_owner(run_dir)
    return owner is not None and not alive([owner])


__all__ = [
    "LEFT_FILE",
    "OWNER_FILE",
    "main_environment",
    "marked_environment",
    "new_mark",
    "owner_gone",
    "read_left",
    "read_mark",
    "read_owner",
    "temp_dir",
    "temp_dir_name",
    "write_left",
    "write_owner",
]
