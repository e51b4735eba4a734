"""A run of a registered scenario: its main process group, collector thread and teardown."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from typing import IO, Any

from pipecore import outcome as outcomes
from pipecore import runprocs
from pipecore.analysis import Killed
from pipecore.baserun import (
    LIVE_EVENTS,
    MAX_KEPT_VERDICTS,
    MAX_UNSETTLED,
    BaseRun,
    Event,
    logger,
)
from pipecore.collector import Collector
from pipecore.outcome import Outcome, RunState
from pipecore.scenarios import Scenario
from pipecore.tracing import drain_last

RECEIVING_OPS = frozenset({"recv", "recv_bytes", "recv_bytes_into"})
# What the analysis adds to a receive once it has matched it to its send.
LATE_FIELDS = frozenset({"match", "latency_ns", "corrupt"})
DRAIN_INTERVAL = 0.01
TERM_GRACE = 1.0
KILL_GRACE = 3.0
# a drain this large means the collector is behind the run's processes
LAG_EVENTS = 5000


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
        self._collector: Collector | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._thread: threading.Thread | None = None
        self._deadlock: str | None = None
        self._mark = runprocs.new_mark(run_id)
        # Processes still running when the main process exited: ended by the run's end.
        self._outlived: set[int] = set()

    def stop(self) -> None:
        """Ask the run to stop; teardown happens on its collector thread (see wait())."""
        self._stop.set()

    def step(self) -> None:
        """In step mode, let one more traced call execute."""
        with self._lock:
            if self._collector is not None and not self.state.terminal:
                self._collector.grant(1)

    def set_step_mode(self, on: bool) -> None:
        """Turn step mode on (each traced call waits for step()) or off."""
        with self._lock:
            self.step_mode = on
            if self._collector is not None and not self.state.terminal:
                self._collector.set_step_mode(on)

    @property
    def pgid(self) -> int | None:
        """The process group of the run (the main process's pid), once started."""
        return None if self._proc is None else self._proc.pid

    # -- lifecycle ------------------------------------------------------------

    def launch(self) -> None:
        """Create the run directory and collector, start the main process and the thread."""
        self._collector = Collector(self.run_dir, self.id)
        try:
            # Lets a later server tell this run's directory from a live one (runsweep).
            runprocs.write_owner(self.run_dir)
            if self.step_mode:
                self._collector.set_step_mode(True)
            self._publish([self._run_event(RunState.STARTING, "", None)])
            # Closed in _finish, after the run has been torn down.
            self._stderr = tempfile.TemporaryFile(prefix="pipescope-stderr-")  # noqa: SIM115
            command = [
                sys.executable,
                "-m",
                "pipecore.runmain",
                "--run-dir",
                self.run_dir,
                "--run-id",
                self.id,
                "--scenario",
                self.scenario,
                "--params",
                json.dumps(self.params),
                "--start-method",
                self.start_method,
            ]
            self._proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=self._stderr,
                start_new_session=True,
                close_fds=True,
                env=runprocs.main_environment(self._mark),
            )
        except BaseException:
            self._collector.close()
            if self._stderr is not None:
                self._stderr.close()
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
                if outcome is None:
                    self._stop.wait(DRAIN_INTERVAL)
        except Exception as exc:
            logger.exception("run %s: collector failed", self.id)
            outcome = outcomes.collector_failed(f"{type(exc).__name__}: {exc}")
        finally:
            stopped = "the collector stopped"
            self._finish(outcome or outcomes.collector_failed(stopped, stopped))

    def _decide(self, deadline: float) -> Outcome | None:
        assert self._proc is not None
        if self._deadlock is not None:
            return outcomes.deadlocked(self._deadlock)
        code = self._proc.poll()
        if code is not None:
            self._outlived = {p.pid for p in runprocs.find(self._mark)}
            self._outlived |= runprocs.read_left(self.run_dir)
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
        for killed in reversed(self._analysis.killed.values()):
            if killed.pid not in self._outlived:
                return killed
        return None

    def _finish(self, outcome: Outcome) -> None:
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
            with self._lock:
                if self._collector is not None:
                    self._collector.close()
                if self._stderr is not None:
                    self._stderr.close()
                self.state = outcome.state
                self.message = outcome.message
                self.reason = outcome.reason
                self.ended = time.time()
            self._publish([self._run_event(outcome.state, outcome.message, outcome.reason)])
            self._done.set()

    def _teardown(self) -> None:
        if self._proc is None:
            return
        strays = runprocs.end_run(
            self._proc, self._mark, term_grace=TERM_GRACE, kill_grace=KILL_GRACE
        )
        if strays:
            logger.info("run %s: ended %d processes outside its process group", self.id, strays)

    def _pump(self, *, final: bool) -> None:
        collector = self._collector
        if collector is None:
            return
        events = drain_last(collector) if final else collector.drain()
        with self._lock:
            for event in events:
                self._seq += 1
                event["seq"] = self._seq
        verdicts = self._analysis.feed(events)
        # Time-based verdicts only while the collector keeps up: when it lags, the
        # newest events are old and every process would look silent.
        lagging = len(events) >= LAG_EVENTS or collector.writers_waiting()
        if not final and not lagging:
            verdicts += self._analysis.tick(time.monotonic_ns())
        verdicts = [
            v
            for v in verdicts
            if v.get("verdict") != "deadlock" or (not collector.writers_waiting() and _stalled(v))
        ]
        self._settle(events)
        if events or verdicts:
            with self._lock:
                for verdict in verdicts:
                    self._seq += 1
                    verdict["seq"] = self._seq
                    if len(self._verdicts) < MAX_KEPT_VERDICTS:
                        self._verdicts.append(verdict)
                    if verdict.get("verdict") == "deadlock" and self._deadlock is None:
                        self._deadlock = str(verdict.get("message") or "deadlock")
            self._publish(events + verdicts, numbered=True)

    def _settle(self, events: list[Event]) -> None:
        """Note receives the analysis annotated after they were published (see amended())."""
        with self._lock:
            still: list[Event] = []
            for event in self._unsettled:
                (self._amended if LATE_FIELDS.intersection(event) else still).append(event)
            still += [e for e in events if _takes_frame(e) and not LATE_FIELDS.intersection(e)]
            # A frame from an untraced sender is never matched: keep the newest only.
            self._unsettled = still[-MAX_UNSETTLED:]

    def _stderr_tail(self) -> str:
        if self._stderr is None or self._stderr.closed:
            return ""
        self._stderr.seek(0, os.SEEK_END)
        size = self._stderr.tell()
        self._stderr.seek(max(0, size - 4096))
        lines = self._stderr.read().decode("utf-8", "replace").strip().splitlines()
        return lines[-1].strip() if lines else ""


def _takes_frame(event: Event) -> bool:
    return (
        event.get("kind") == "call"
        and event.get("op") in RECEIVING_OPS
        and event.get("phase") in ("end", "error")
    )


def _stalled(verdict: Event) -> bool:
    """Confirm a deadlock verdict: none of the waiting processes runs or uses CPU."""
    return runprocs.stalled({int(member["pid"]) for member in verdict.get("cycle") or []})
