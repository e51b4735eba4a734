"""Step mode: the controller's grants and a traced call's wait for one."""

from __future__ import annotations

import contextlib
import mmap
import os
import select
import time

from pipecore import runmarks
from pipecore.ring import STEP_FLAG_OFFSET, STEPS_NAME, ensure_layout, map_control

STEP_POLL_MS = 10


class StepControl:
    """The controller's side of step mode for one run directory.

    `set_step_mode(True)` makes every traced call of the run wait before it executes;
    each `grant()` lets exactly one waiting call proceed. `set_step_mode(False)` releases
    every waiting call; grants not consumed are discarded when step mode changes.
    """

    def __init__(self, run_dir: str) -> None:
        ensure_layout(run_dir)
        self._control = map_control(run_dir)
        # O_RDWR keeps a writer open, so waiting workers see "no grant yet", not EOF,
        # and lets the controller discard stale grants by reading them back.
        self._fifo = os.open(os.path.join(run_dir, STEPS_NAME), os.O_RDWR | os.O_NONBLOCK)

    @property
    def step_mode(self) -> bool:
        """Whether step mode is on."""
        return self._control[STEP_FLAG_OFFSET] != 0

    def set_step_mode(self, on: bool) -> None:
        """Turn step mode on or off."""
        if on:
            self._discard_grants()
            self._control[STEP_FLAG_OFFSET] = 1
        else:
            self._control[STEP_FLAG_OFFSET] = 0
            self._discard_grants()

    def grant(self, n: int = 1) -> None:
        """Let `n` more traced calls execute."""
        if n < 0:
            raise ValueError(f"Expected a grant count >= 0, but got {n}")
        # A full FIFO already holds more grants than any run can use.
        with contextlib.suppress(BlockingIOError):
            os.write(self._fifo, b"\x01" * n)

    def _discard_grants(self) -> None:
        try:
            while os.read(self._fifo, 65536):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        """Release the control page and the FIFO."""
        if self._fifo >= 0:
            os.close(self._fifo)
            self._fifo = -1
            self._control.close()


def wait_for_grant(run_dir: str, control: mmap.mmap, steps_fd: int) -> int:
    """Block a traced call until a grant arrives or step mode ends; the FIFO's fd
    (opened here when `steps_fd` < 0, -1 when the run directory is gone)."""
    if steps_fd < 0:
        try:
            steps_fd = os.open(os.path.join(run_dir, STEPS_NAME), os.O_RDONLY | os.O_NONBLOCK)
        except OSError:
            return -1  # no run directory any more: nothing to wait for
    poller = select.poll()
    poller.register(steps_fd, select.POLLIN)
    while control[STEP_FLAG_OFFSET]:
        try:
            if os.read(steps_fd, 1):
                break
            # EOF: no controller has the FIFO open yet (or any more).
            time.sleep(STEP_POLL_MS / 1000)
            if not os.path.exists(run_dir) or runmarks.owner_gone(run_dir):
                # The run is over, or its server is gone: stop stepping.
                control[STEP_FLAG_OFFSET] = 0
                break
        except BlockingIOError:
            poller.poll(STEP_POLL_MS)
    return steps_fd
