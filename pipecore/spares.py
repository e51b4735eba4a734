"""Spares: collector and main processes started ahead of the runs that will take them."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable

from pipecore import collectmain, runmain, runprocs

# Spare processes kept of each kind (collector, main) by default: runs started one right
# after the other each find one whose interpreter, imports and helpers are ready.
SPARES = 2
# A spare starts with the least CPU weight (runprocs.SPARE_NICE): three interpreters
# starting amid a flood on 2 CPUs at normal weight raised its send -> frame p99 from
# 73-90 to 102-147 ms. When a run takes a spare, those left, the next to be taken, get
# their normal weight back, so that back-to-back starts find the next one ready.
# A spare starts this long after a run took one (once the run's own processes run), and
# one at a time, so that starting spares does not slow the runs down.
SPARE_DELAY = 0.1
# The first spares start at once, the others this much later: a run started right after
# the server does not wait behind them.
FILL_DELAY = 1.0
# While the runs publish events faster than this, a spare waits to start, at most
# SPARE_PATIENCE seconds after it was due: a collector and a main process starting (their
# interpreters, imports and helpers) took 0.3-0.45 CPU-seconds out of a 60,000-frame flood
# of about one second on 2 CPUs, even at the least weight.
BUSY_EVENTS_PER_S = 20_000
SPARE_PATIENCE = 5.0


class Spares:
    """A RunManager's spare collector and main processes: `collectors` and `mains` of them,
    the first of each started now and the others one at a time by a timer thread.

    `lock` is the manager's: take_collector and take_main are called under it (a run
    takes its spares while the manager starts it), and the timer thread takes it too.
    `published` counts the events the live runs have published so far.
    """

    def __init__(
        self,
        lock: threading.Lock,
        published: Callable[[], int],
        *,
        collectors: int,
        mains: int,
    ) -> None:
        self._lock = lock
        self._published = published
        self._keep_collectors = collectors
        self._keep_mains = mains
        self._collectors = [collectmain.start_spare()] if collectors else []
        self._mains = [runmain.start_spare()] if mains else []
        self._closed = False
        self._timer: threading.Timer | None = None
        self._due = 0.0
        # The last look at the runs (monotonic time, events published by then), and when
        # the spare that waits for them (BUSY_EVENTS_PER_S) was first due.
        self._seen = (0.0, 0)
        self._since: float | None = None
        self._schedule(FILL_DELAY)

    def take_collector(self) -> subprocess.Popen[bytes] | None:
        """The spare collector process for a run that starts now (call under the lock);
        the next one starts a little later, not while this run's processes start."""
        spare = self._collectors.pop(0) if self._collectors else None
        for waiting in self._collectors:  # the next to be taken: its weight back (SPARE_DELAY)
            runprocs.set_session_nice(waiting.pid, 0)
        self._schedule()
        return spare

    def take_main(self) -> runmain.MainProcess | None:
        """The spare main process for a run that starts now, the one started first (call
        under the lock)."""
        # The oldest ready one; one still starting only when none is ready.
        main = next((m for m in self._mains if m.ready()), self._mains[0] if self._mains else None)
        if main is not None:
            self._mains.remove(main)
        for waiting in self._mains:  # the next to be taken: its weight back (SPARE_DELAY)
            runprocs.set_session_nice(waiting.proc.pid, 0)
        self._schedule()
        return main

    def close(self) -> None:
        """Start no more spares, and end those held (takes the lock; call without it)."""
        with self._lock:
            self._closed = True
            collectors, self._collectors = self._collectors, []
            mains, self._mains = self._mains, []
            if self._timer is not None:
                self._timer.cancel()
        for spare in collectors:
            collectmain.end(spare)
        for main in mains:
            runmain.end_spare(main)

    def _schedule(self, delay: float = SPARE_DELAY) -> None:
        """Start the next spare in `delay` seconds, or sooner if it was due sooner (call
        under the lock)."""
        if not (self._keep_collectors or self._keep_mains) or self._closed:
            return
        due = time.monotonic() + delay
        if self._timer is not None:
            if self._due <= due:
                return
            self._timer.cancel()
        self._timer = threading.Timer(delay, self._refill)
        self._timer.daemon = True
        self._due = due
        self._seen = (time.monotonic(), self._published())
        self._timer.start()

    def _busy(self) -> bool:
        """Whether the runs published more than BUSY_EVENTS_PER_S since the last look
        (call under the lock); a spare waits no longer than SPARE_PATIENCE for them."""
        now, published = time.monotonic(), self._published()
        then, before = self._seen
        self._seen = (now, published)
        if self._since is None:
            self._since = then
        if now - self._since >= SPARE_PATIENCE or now <= then:
            return False
        return (published - before) / (now - then) > BUSY_EVENTS_PER_S

    def _refill(self) -> None:
        with self._lock:
            if self._timer is threading.current_thread():
                self._timer = None
            if self._closed:
                return
            if self._busy():
                self._schedule()
                return
            self._since = None
            nice = runprocs.SPARE_NICE
            if len(self._collectors) < self._keep_collectors:
                self._collectors.append(collectmain.start_spare(nice))
            if len(self._mains) < self._keep_mains:
                self._mains.append(runmain.start_spare(nice))
            if len(self._collectors) < self._keep_collectors or len(self._mains) < self._keep_mains:
                self._schedule()
