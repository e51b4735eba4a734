"""The traced program as a job: a process group of its own, the terminal's foreground while
it runs, and each signal sent to the tracer passed on to it once."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator, Sequence
from types import FrameType
from typing import Any

from pipecore.runprocs import stat_fields

# Signals of a terminal or of a job (Ctrl-C, Ctrl-\, a hangup, a resize, Ctrl-Z) sent to
# the tracer go to the program's whole process group, as they went to the tracer's group.
GROUP_SIGNALS = (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGWINCH, signal.SIGTSTP)
# Those meant for one process go to the program's main process.
MAIN_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)
# What stops a process of a background group that reads the terminal, or writes to it
# (with `stty tostop`) or sets its modes.
WANTS_TERMINAL = (signal.SIGTTIN, signal.SIGTTOU)


class ProgramJob:
    """`command` run in a process group of its own, so that a signal sent to the tracer's
    group reaches the program once: from the tracer, which passes it on.

    When the tracer is the terminal's foreground job, the program's group gets the
    foreground, as a shell gives it to a job: Ctrl-C, Ctrl-Z and terminal reads go to the
    program straight, and the tracer gets the terminal back when the program stops or
    ends. When the tracer's group holds others (a pipeline's commands, a script that ran
    it), that waits until the program is stopped using the terminal (SIGTTIN, SIGTTOU);
    until then Ctrl-C reaches them and the tracer, which passes it on. Raises OSError
    when the program cannot be started.
    """

    def __init__(self, command: Sequence[str], env: dict[str, str]) -> None:
        self.process = subprocess.Popen(list(command), env=env, process_group=0)
        self.pid = self.process.pid
        self._terminal = _controlling_terminal()
        self._handed_over = False
        self._shared = False  # handed over from a group of others too (a pipeline's)
        self._previous: dict[int, Any] = {}
        try:
            for signum in GROUP_SIGNALS + MAIN_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._forward)
            self._hand_over()
        except BaseException:  # not the main thread, or interrupted: nobody would wait
            self.process.kill()
            self.process.wait()
            self.close()
            raise

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    def poll(self) -> int | None:
        """The program's exit status once its main process has exited (negative: killed by
        that signal), else None. A program stopped (Ctrl-Z, a terminal read in the
        background) stops the tracer too, so that its shell sees the job stopped; when
        the tracer is continued, so is the program."""
        code = self.process.poll()
        if code is not None:
            self._take_back()
            return code
        stop = self._stop_signal()
        if stop in WANTS_TERMINAL and self._hand_over(wanted=True):
            return None  # stopped reading the terminal, which it now has: it reads on
        if stop is not None:
            self._stop_like_the_program(stop)
        return None

    def wait(self) -> int:
        return self.process.wait()

    def close(self) -> None:
        """Take the terminal back, and the tracer's own handling of signals."""
        self._take_back()
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
        if self._terminal is not None:
            os.close(self._terminal)
            self._terminal = None

    def _forward(self, signum: int, _frame: FrameType | None) -> None:
        if self.process.poll() is not None:
            return  # the program has ended: what it left running is not the tracer's
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if signum in MAIN_SIGNALS:
                os.kill(self.pid, signum)
            else:
                os.killpg(self.pid, signum)

    def _stop_signal(self) -> int | None:
        """The signal that stopped the main process since the last look, if one did."""
        try:
            stopped = os.waitid(os.P_PID, self.pid, os.WSTOPPED | os.WNOHANG)
        except ChildProcessError:
            return None
        return None if stopped is None else stopped.si_status

    def _stop_like_the_program(self, signum: int) -> None:
        # The others of the tracer's group got no Ctrl-Z while the program had the
        # terminal: they stop with the tracer, so that the shell sees its job stopped.
        everyone = self._handed_over and self._shared
        self._take_back()
        stoppable = signum != signal.SIGSTOP  # SIGSTOP's action cannot be changed
        previous = signal.signal(signum, signal.SIG_DFL) if stoppable else None
        try:  # returns once continued (fg, bg)
            if everyone:
                os.killpg(os.getpgrp(), signum)
            else:
                os.kill(os.getpid(), signum)
        finally:
            if stoppable:
                signal.signal(signum, previous)
        if not self._hand_over(wanted=signum in WANTS_TERMINAL):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGCONT)

    def _hand_over(self, *, wanted: bool = False) -> bool:
        """Give the program's group the terminal if the tracer's group has it and no other
        process there needs it, or the program `wanted` it (it was stopped using it); then
        continue the program, which may have been stopped so. Whether it has it now."""
        terminal = self._terminal
        if terminal is None or not _foreground(terminal):
            return False
        if not self._handed_over:
            shared = not _alone_in_group()
            if shared and not wanted:
                return False
            try:
                with _ttou_ignored():
                    os.tcsetpgrp(terminal, self.pid)
            except OSError:
                return False  # the program's group is gone already
            self._handed_over, self._shared = True, shared
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGCONT)
        return True

    def _take_back(self) -> None:
        if not self._handed_over or self._terminal is None:
            return
        self._handed_over = False
        with contextlib.suppress(OSError), _ttou_ignored():
            os.tcsetpgrp(self._terminal, os.getpgrp())
        if self._shared:
            # The others of the tracer's group (a pipeline's) were in the background
            # meanwhile, and using the terminal stopped them: they go on.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(os.getpgrp(), signal.SIGCONT)


def _controlling_terminal() -> int | None:
    try:
        return os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
    except OSError:
        return None  # none: a daemon, a container run without -t, a session of its own


def _foreground(terminal: int) -> bool:
    """Whether the tracer's process group is the terminal's foreground job."""
    try:
        return os.tcgetpgrp(terminal) == os.getpgrp()
    except OSError:
        return False


def _alone_in_group() -> bool:
    """Whether the tracer is alone in its process group: no other command of a pipeline,
    no script that ran it, would be left without the terminal (or its Ctrl-C)."""
    me, group = os.getpid(), os.getpgrp()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        fields = stat_fields(int(entry))
        if fields is not None and int(fields[2]) == group and fields[0] != b"Z":
            return False
    return True


@contextlib.contextmanager
def _ttou_ignored() -> Iterator[None]:
    """A process of a background group that sets the terminal's foreground is sent SIGTTOU
    (which stops it) unless it ignores the signal."""
    previous = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGTTOU, previous)


__all__ = ["GROUP_SIGNALS", "MAIN_SIGNALS", "ProgramJob"]
