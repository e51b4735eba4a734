"""ExitWatch: which processes of a run have ended, told by pidfds (or /proc without them)."""

from __future__ import annotations

import os
import select


def _pid_alive(pid: int) -> bool:
    """Whether `pid` runs, from /proc: for a process without a pidfd (see `ExitWatch`)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    # The state follows the parenthesised command name; a zombie has finished.
    state = stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3]
    return state not in (b"Z", b"X")


class ExitWatch:
    """Which ring processes have ended, told by their pidfds: one poll for all rings
    costs about 0.4 µs, where reading `/proc/PID/stat` costs about 15 µs a process. A
    process gets no pidfd where the kernel has none (Linux before 5.3) or when it is
    already gone; `_pid_alive` answers for it then."""

    __slots__ = ("_fds", "_poll")

    def __init__(self) -> None:
        self._poll = select.poll()
        self._fds: dict[str, int] = {}  # ring name -> its process's pidfd

    def watch(self, name: str, pid: int) -> None:
        try:
            fd = os.pidfd_open(pid)
        except (AttributeError, OSError):
            return
        self._fds[name] = fd
        self._poll.register(fd, select.POLLIN)

    def ended(self) -> set[int]:
        """The pidfds of the watched processes that have ended (zombies included)."""
        return {fd for fd, _ in self._poll.poll(0)} if self._fds else set()

    def alive(self, name: str, pid: int, ended: set[int]) -> bool:
        fd = self._fds.get(name)
        return _pid_alive(pid) if fd is None else fd not in ended

    def forget(self, name: str) -> None:
        fd = self._fds.pop(name, None)
        if fd is not None:
            self._poll.unregister(fd)
            os.close(fd)

    def close(self) -> None:
        for name in list(self._fds):
            self.forget(name)
