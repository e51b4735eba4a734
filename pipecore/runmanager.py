"""RunManager: starts runs within caps, finds them by id, tears them all down on shutdown."""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import secrets
import sys
import threading
from collections.abc import Mapping

from pipecore.baserun import LIVE_EVENTS, BaseRun, CapacityError, check_live_events
from pipecore.externalrun import ExternalRun
from pipecore.runsweep import Swept, sweep
from pipecore.scenariorun import Run
from pipecore.scenarios import ParamError, get_scenario
from pipecore.scenarios.catalogue import shown
from pipecore.spares import SPARES, Spares

START_METHODS = ("forkserver", "spawn", "fork")
MAX_NAME_CHARS = 120
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
        # Collector and main processes started ahead of the next runs: a run starts without
        # waiting for its collector's interpreter, nor for its main process's imports and
        # (for forkserver) fork server.
        self._spares = Spares(
            self._lock,
            self._published,
            collectors=spares if spare_collector else 0,
            mains=spares if spare_main else 0,
        )
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
                spares=self._spares.take_collector,
                mains=self._spares.take_main,
            )
            self._forget_old()
            run.launch()
            self._runs[run_id] = run
        return run

    def _published(self) -> int:
        """The events the live runs published so far (call under the lock)."""
        return sum(run.published for run in self._runs.values() if not run.state.terminal)

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
        self._spares.close()
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
