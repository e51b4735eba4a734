"""RunManager: starts runs within caps, finds them by id, tears them all down on shutdown."""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Mapping

from pipecore import collectmain, runmain, runprocs
from pipecore.baserun import LIVE_EVENTS, BaseRun, CapacityError, check_live_events
from pipecore.externalrun import ExternalRun
from pipecore.runsweep import Swept, sweep
from pipecore.scenariorun import Run
from pipecore.scenarios import ParamError, get_scenario
from pipecore.scenarios.catalogue import shown

START_METHODS = ("forkserver", "spawn", "fork")
MAX_NAME_CHARS = 120
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
# The server's first spares start at once, the others this much later: a run started
# right after the server does not wait behind them.
FILL_DELAY = 1.0
# While the runs publish events faster than this, a spare waits to start, at most
# SPARE_PATIENCE seconds after it was due: a collector and a main process starting (their
# interpreters, imports and helpers) took 0.3-0.45 CPU-seconds out of a 60,000-frame flood
# of about one second on 2 CPUs, even at the least weight.
BUSY_EVENTS_PER_S = 20_000
SPARE_PATIENCE = 5.0
_PR_SET_CHILD_SUBREAPER = 36


def _become_subreaper() -> None:
    # Workers orphaned when a run's main process dies are re-parented to the nearest
    # subreaper. Without one they go to PID 1, which in a container may never reap them,
    # and their zombies would keep the run's process group alive.
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


class RunManager:
    """Starts runs within caps, finds them by id, and tears them all down on shutdown."""

    def __init__(
        self,
        *,
        max_runs: int = 4,
        max_processes: int = 16,
        max_run_seconds: float = 60.0,
        keep_finished: int = 50,
        run_root: str = "/dev/shm",
        deadlock_after_ns: int = 1_000_000_000,
        live_events: int = LIVE_EVENTS,
        spare_collector: bool = False,
        spare_main: bool = False,
        spares: int = SPARES,
    ) -> None:
        if isinstance(spares, bool) or not isinstance(spares, int) or spares < 0:
            raise ValueError(f"spares must be an integer of at least 0, got {spares!r}")
        self.spares = spares
        self.live_events = check_live_events(live_events)
        self.max_runs = max_runs
        self.max_processes = max_processes
        self.max_run_seconds = max_run_seconds
        self.keep_finished = keep_finished
        self.run_root = run_root
        self.deadlock_after_ns = deadlock_after_ns
        self._lock = threading.Lock()
        self._runs: dict[str, BaseRun] = {}
        self._closed = False
        _become_subreaper()
        # A server killed (SIGKILL, a crash) never tore its runs down: end their processes
        # and remove their directories (shared memory under /dev/shm) now.
        self.swept: Swept = sweep(run_root)
        # Collector processes started ahead of the next runs (`spares` of them, the first now,
        # the others one by one): a run starts without waiting for the collector's interpreter.
        self._keep_spares = spares if spare_collector else 0
        self._spares = [collectmain.start_spare()] if self._keep_spares else []
        # A run's main process started ahead the same way, its imports and (for forkserver)
        # its fork server ready: the run starts without waiting for either.
        self._keep_mains = spares if spare_main else 0
        self._mains = [runmain.start_spare()] if self._keep_mains else []
        self._refill_timer: threading.Timer | None = None
        self._refill_due = 0.0
        # The last look at the runs (monotonic time, events published by then), and when
        # the spare that waits for them (BUSY_EVENTS_PER_S) was first due.
        self._refill_seen = (0.0, 0)
        self._refill_since: float | None = None
        self._schedule_refill(FILL_DELAY)
        # Daemon collector threads die with the interpreter; tear the runs down first.
        atexit.register(self.shutdown)

    def start(
        self,
        scenario: str,
        params: Mapping[str, object] | None = None,
        *,
        start_method: str = "forkserver",
        step_mode: bool = False,
        timeout: float | None = None,
    ) -> Run:
        """Validate and start a run of a registered scenario.

        Raises ParamError (naming the field) for an unknown scenario, a bad parameter,
        start method or timeout, and CapacityError when a cap refuses the run.
        """
        found = get_scenario(scenario)
        if start_method not in START_METHODS:
            raise ParamError(
                "start_method",
                f"start_method must be one of {', '.join(START_METHODS)}, "
                f"got {shown(start_method)}",
            )
        values = found.validate(params or {})
        limit = self.max_run_seconds
        if timeout is None:
            timeout = limit
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not 0 < timeout <= limit
        ):
            raise ParamError(
                "timeout",
                f"timeout must be a number of seconds above 0 and at most {limit:g}, "
                f"got {shown(timeout)}",
            )
        needed = found.processes(values) + 1
        if needed > self.max_processes:
            raise CapacityError(
                f"processes per run: at most {self.max_processes}, this run needs {needed} "
                f"({needed - 1} workers and the main process)"
            )
        with self._lock:
            run_id = self._admit("r")
            run = Run(
                run_id,
                found,
                values,
                start_method,
                step_mode=step_mode,
                timeout=float(timeout),
                run_root=self.run_root,
                deadlock_after_ns=self.deadlock_after_ns,
                live_events=self.live_events,
                spares=self._take_spare,
                mains=self._take_main,
            )
            self._forget_old()
            run.launch()
            self._runs[run_id] = run
        return run

    def _take_spare(self) -> subprocess.Popen[bytes] | None:
        """The spare collector process for a run that starts now (call under the lock);
        the next one starts a little later, not while this run's processes start."""
        spare = self._spares.pop(0) if self._spares else None
        for waiting in self._spares:  # the next to be taken: see SPARE_NICE
            runprocs.set_session_nice(waiting.pid, 0)
        self._schedule_refill()
        return spare

    def _take_main(self) -> runmain.MainProcess | None:
        """The spare main process for a run that starts now, the one started first (call
        under the lock)."""
        # The oldest ready one; one still starting only when none is ready.
        main = next((m for m in self._mains if m.ready()), self._mains[0] if self._mains else None)
        if main is not None:
            self._mains.remove(main)
        for waiting in self._mains:  # the next to be taken: see SPARE_NICE
            runprocs.set_session_nice(waiting.proc.pid, 0)
        self._schedule_refill()
        return main

    def _schedule_refill(self, delay: float = SPARE_DELAY) -> None:
        """Start the next spare in `delay` seconds, or sooner if it was due sooner (call
        under the lock)."""
        if not (self._keep_spares or self._keep_mains) or self._closed:
            return
        due = time.monotonic() + delay
        if self._refill_timer is not None:
            if self._refill_due <= due:
                return
            self._refill_timer.cancel()
        self._refill_timer = threading.Timer(delay, self._refill)
        self._refill_timer.daemon = True
        self._refill_due = due
        self._refill_seen = (time.monotonic(), self._published())
        self._refill_timer.start()

    def _published(self) -> int:
        return sum(run.published for run in self._runs.values() if not run.state.terminal)

    def _busy(self) -> bool:
        """Whether the runs published more than BUSY_EVENTS_PER_S since the last look
        (call under the lock); a spare waits no longer than SPARE_PATIENCE for them."""
        now, published = time.monotonic(), self._published()
        then, before = self._refill_seen
        self._refill_seen = (now, published)
        if self._refill_since is None:
            self._refill_since = then
        if now - self._refill_since >= SPARE_PATIENCE or now <= then:
            return False
        return (published - before) / (now - then) > BUSY_EVENTS_PER_S

    def _refill(self) -> None:
        with self._lock:
            if self._refill_timer is threading.current_thread():
                self._refill_timer = None
            if self._closed:
                return
            if self._busy():
                self._schedule_refill()
                return
            self._refill_since = None
            nice = runprocs.SPARE_NICE
            if len(self._spares) < self._keep_spares:
                self._spares.append(collectmain.start_spare(nice))
            if len(self._mains) < self._keep_mains:
                self._mains.append(runmain.start_spare(nice))
            if len(self._spares) < self._keep_spares or len(self._mains) < self._keep_mains:
                self._schedule_refill()

    def open_external(self, name: object) -> ExternalRun:
        """Register a program traced elsewhere as a run; it counts against the run cap.

        Raises ParamError for a name that is not a short non-empty string, and
        CapacityError when the concurrent-run cap is reached.
        """
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME_CHARS:
            raise ParamError(
                "name",
                f"name must be a string of 1 to {MAX_NAME_CHARS} characters, got {shown(name)}",
            )
        with self._lock:
            run = ExternalRun(
                self._admit("t"),
                name.strip(),
                deadlock_after_ns=self.deadlock_after_ns,
                live_events=self.live_events,
            )
            self._forget_old()
            self._runs[run.id] = run
        return run

    def _admit(self, prefix: str) -> str:
        """A fresh run id, if the caps allow one more run (call under the lock)."""
        if self._closed:
            raise CapacityError("the run manager is shut down: no new runs")
        active = [run for run in self._runs.values() if not run.state.terminal]
        if len(active) >= self.max_runs:
            raise CapacityError(
                f"concurrent runs: at most {self.max_runs} may run at once, "
                f"{len(active)} are running"
            )
        run_id = prefix + secrets.token_hex(3)
        while run_id in self._runs:
            run_id = prefix + secrets.token_hex(3)
        return run_id

    def get(self, run_id: str) -> BaseRun:
        """The run with this id; KeyError if there is none."""
        with self._lock:
            return self._runs[run_id]

    def list(self) -> list[BaseRun]:
        """Every known run, oldest first."""
        with self._lock:
            return list(self._runs.values())

    def shutdown(self, timeout: float = 10.0) -> None:
        """Refuse new runs, stop every run and wait until each is torn down."""
        with self._lock:
            self._closed = True
            runs = list(self._runs.values())
            spares, self._spares = self._spares, []
            mains, self._mains = self._mains, []
            if self._refill_timer is not None:
                self._refill_timer.cancel()
        for spare in spares:
            collectmain.end(spare)
        for main in mains:
            runmain.end_spare(main)
        for run in runs:
            if isinstance(run, ExternalRun):
                run.disconnect("the server shut down while the program was being traced")
            else:
                run.stop()
        for run in runs:
            run.wait(timeout)

    def _forget_old(self) -> None:
        finished = [run for run in self._runs.values() if run.state.terminal]
        for run in finished[: max(0, len(finished) - self.keep_finished)]:
            del self._runs[run.id]
