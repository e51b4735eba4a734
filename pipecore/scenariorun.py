"""A run of a registered scenario: its main process group, collector process and teardown."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from typing import IO, Any

from pipecore import collectmain, runmain, runmarks, runprocs, teardown
from pipecore import outcome as outcomes
from pipecore.baserun import LIVE_EVENTS, MAX_KEPT_VERDICTS, BaseRun, logger
from pipecore.collectorfeed import CollectorFeed
from pipecore.collectwire import Message
from pipecore.outcome import Outcome, RunState
from pipecore.ring import FIRST_WINDOW, ensure_layout
from pipecore.runsweep import COLLECTOR_FILE
from pipecore.scenarios import Scenario
from pipecore.stepping import StepControl
from pipecore.verdicts import Killed

TERM_GRACE = 1.0
KILL_GRACE = 3.0


class Run(BaseRun):
    """One execution of a scenario: its processes, its event stream and its state."""

    def __init__(
        self,
        run_id: str,
        scenario: Scenario,
        params: dict[str, Any],
        start_method: str,
        *,
        step_mode: bool,
        timeout: float,
        run_root: str,
        deadlock_after_ns: int,
        live_events: int = LIVE_EVENTS,
        spares: Callable[[], subprocess.Popen[bytes] | None] | None = None,
        mains: Callable[[], runmain.MainProcess | None] | None = None,
    ) -> None:
        super().__init__(
            run_id,
            scenario.id,
            dict(scenario.title),
            params,
            start_method,
            step_mode=step_mode,
            deadlock_after_ns=deadlock_after_ns,
            live_events=live_events,
        )
        self.timeout = timeout
        self.run_dir = os.path.join(run_root, f"pipescope-{run_id}")
        self._stop = threading.Event()
        self._steps: StepControl | None = None
        # The run's collector process (pipecore.collectmain) and what it has sent.
        self._feed: CollectorFeed | None = None
        # Where a collector process started ahead of time comes from (RunManager), if any.
        self._spares = spares
        # Where a main process started ahead of time comes from (RunManager), if any.
        self._mains = mains
        self._killed: dict[int, Killed] = {}
        snapshot = self._analysis.snapshot()
        self._analysis_view: dict[str, Any] = {"ends": snapshot["ends"], "stats": snapshot["stats"]}
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._thread: threading.Thread | None = None
        self._deadlock: str | None = None
        self._mark = runmarks.new_mark(run_id)
        # Processes still running when the main process exited: ended by the run's end.
        self._outlived: set[int] = set()

    def stop(self) -> None:
        """Ask the run to stop; teardown happens on its collector thread (see wait())."""
        self._stop.set()

    def step(self) -> None:
        """In step mode, let one more traced call execute."""
        with self._lock:
            if self._steps is not None and not self.state.terminal:
                self._steps.grant(1)

    def set_step_mode(self, on: bool) -> None:
        """Turn step mode on (each traced call waits for step()) or off."""
        with self._lock:
            self.step_mode = on
            if self._steps is not None and not self.state.terminal:
                self._steps.set_step_mode(on)

    @property
    def pgid(self) -> int | None:
        """The process group of the run (the main process's pid), once started."""
        return None if self._proc is None else self._proc.pid

    # -- lifecycle ------------------------------------------------------------

    def launch(self) -> None:
        """Create the run directory, start the collector process, the main process and the
        thread that watches them."""
        # The collector process bounds the lag (collectmain): the rings start bounded.
        ensure_layout(self.run_dir, window=FIRST_WINDOW)
        spare = self._mains() if self._mains is not None else None
        try:
            if spare is not None:
                self._mark = spare.mark  # it carries its marker from its start
            # Lets a later server tell this run's directory from a live one (runsweep).
            runmarks.write_owner(self.run_dir, self._mark)
            self._steps = StepControl(self.run_dir)
            if self.step_mode:
                self._steps.set_step_mode(True)
            self._publish([self._run_event(RunState.STARTING, "", None)])
            # The collector process numbers the run's events after `starting` and `running`.
            self._feed = CollectorFeed(
                collectmain.start(
                    self.run_dir,
                    self.id,
                    self._seq + 2,
                    self._analysis.deadlock_after_ns,
                    self._spares() if self._spares is not None else None,
                )
            )
            with open(os.path.join(self.run_dir, COLLECTOR_FILE), "w") as file:
                file.write(str(self._feed.pid))
            args = runmain.command_args(
                self.run_dir, self.id, self.scenario, self.params, self.start_method
            )
            main, spare = runmain.start(args, self._mark, spare), None
            self._proc, self._stderr = main.proc, main.stderr
        except BaseException:
            if spare is not None:
                runmain.end_spare(spare)
            self._end_feed()
            self._close_files()
            raise
        with self._lock:
            self.state = RunState.RUNNING
        self._publish([self._run_event(RunState.RUNNING, "", None)])
        self._thread = threading.Thread(
            target=self._watch, name=f"pipescope-collector-{self.id}", daemon=True
        )
        self._thread.start()

    def _watch(self) -> None:
        outcome: Outcome | None = None
        deadline = time.monotonic() + self.timeout
        try:
            while outcome is None:
                self._pump(final=False)
                outcome = self._decide(deadline)
        except Exception as exc:
            logger.exception("run %s: collector failed", self.id)
            outcome = outcomes.collector_failed(f"{type(exc).__name__}: {exc}")
        finally:
            stopped = "the collector stopped"
            self._finish(outcome or outcomes.collector_failed(stopped, stopped))

    def _decide(self, deadline: float) -> Outcome | None:
        assert self._proc is not None
        failed = None if self._feed is None else self._feed.failed()
        if failed is not None:
            return outcomes.collector_failed(f"the collector process exited with status {failed}")
        if self._deadlock is not None:
            return outcomes.deadlocked(self._deadlock)
        code = self._proc.poll()
        if code is not None:
            self._outlived = {p.pid for p in runprocs.find(self._mark)}
            self._outlived |= runmarks.read_left(self.run_dir)
            return self._exit_outcome(code)
        if self._stop.is_set():
            return outcomes.stopped()
        if time.monotonic() >= deadline:
            return outcomes.timed_out(self.timeout)
        return None

    def _exit_outcome(self, code: int) -> Outcome:
        if code == 0:
            # A worker killed on the way shows once the last events are in (_finish).
            return outcomes.completed()
        if code < 0:
            return outcomes.main_killed(-code)
        killed = self._killed_worker()
        if killed is not None:
            # A worker was killed and the program could not carry on without it.
            return outcomes.worker_killed(killed, code)
        return outcomes.exit_failed(code, self._stderr_tail())

    def _killed_worker(self) -> Killed | None:
        """The last worker killed while the main process ran (not ended by its exit)."""
        for killed in reversed(self._killed.values()):
            if killed.pid not in self._outlived:
                return killed
        return None

    def _finish(self, outcome: Outcome) -> None:
        # Exits from now on are the teardown's doing (a stop, a time-out, a deadlock).
        teardown_t = time.monotonic_ns()
        try:
            self._teardown()
            self._pump(final=True)
        except Exception:
            logger.exception("run %s: teardown failed", self.id)
        finally:
            killed = self._killed_worker()
            if outcome.state is RunState.COMPLETED and killed is not None:
                # The program carried on without a killed worker: the run was still killed.
                outcome = outcomes.worker_killed(killed, 0)
            self._end_feed()
            with self._lock:
                self._close_files()
                self.state = outcome.state
                self.message = outcome.message
                self.reason = outcome.reason
                self.ended = time.time()
            ended = self._run_event(outcome.state, outcome.message, outcome.reason)
            ended["teardown_t"] = teardown_t
            self._publish([ended])
            self._done.set()

    def _teardown(self) -> None:
        if self._proc is None:
            return
        strays = teardown.end_run(
            self._proc, self._mark, term_grace=TERM_GRACE, kill_grace=KILL_GRACE
        )
        if strays:
            logger.info("run %s: ended %d processes outside its process group", self.id, strays)

    def analysis_snapshot(self) -> dict[str, Any]:
        """Ends and statistics as the collector process last sent them, and the verdicts."""
        with self._lock:
            return {**self._analysis_view, "verdicts": list(self._verdicts)}

    def _pump(self, *, final: bool) -> None:
        if self._feed is not None:
            self._feed.read(self._take, final=final)

    def _take(self, message: Message) -> None:
        with self._lock:
            for event in message.kept:
                if event.get("kind") != "verdict":
                    continue
                if len(self._verdicts) < MAX_KEPT_VERDICTS:
                    self._verdicts.append(event)
                if event.get("verdict") == "deadlock" and self._deadlock is None:
                    self._deadlock = str(event.get("message") or "deadlock")
            for pid, process, signal, text in message.killed:
                self._killed[pid] = Killed(process, pid, signal, text)
            if message.analysis is not None:
                self._analysis_view = message.analysis
            if message.amended:
                self.amend(message.amended)
            self._seq = max(self._seq, message.seq)
            if message.parts:
                self._publish_parts(message.parts, message.kept)

    def _end_feed(self) -> None:
        """Make sure the collector process is gone and its pipes closed."""
        if self._feed is not None:
            self._feed.end(TERM_GRACE)

    def _close_files(self) -> None:
        if self._steps is not None:
            self._steps.close()
            self._steps = None
        if self._stderr is not None:
            self._stderr.close()
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def _stderr_tail(self) -> str:
        if self._stderr is None or self._stderr.closed:
            return ""
        self._stderr.seek(0, os.SEEK_END)
        size = self._stderr.tell()
        self._stderr.seek(max(0, size - 4096))
        lines = self._stderr.read().decode("utf-8", "replace").strip().splitlines()
        return lines[-1].strip() if lines else ""
