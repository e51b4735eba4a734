"""Runs: start a scenario in its own process group, stream its events, step, stop, tear down."""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import enum
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from typing import IO, Any

from pipecore.analysis import Analysis
from pipecore.collector import Collector
from pipecore.scenarios import ParamError, Scenario, get_scenario
from pipecore.tracing import EventError, check_batch, drain_last

Event = dict[str, Any]
Subscriber = Callable[[list[Event]], None]

logger = logging.getLogger(__name__)

START_METHODS = ("forkserver", "spawn", "fork")
# An external run's summary: the program chose its own start method, unseen by the server.
EXTERNAL_SCENARIO = "trace"
EXTERNAL_START_METHOD = "external"
MAX_NAME_CHARS = 120
RECEIVING_OPS = frozenset({"recv", "recv_bytes", "recv_bytes_into"})
# What the analysis adds to a receive once it has matched it to its send.
LATE_FIELDS = frozenset({"match", "latency_ns", "corrupt"})
MAX_UNSETTLED = 10_000
# A traced program has no time limit: this bounds what the server holds for one.
MAX_EXTERNAL_EVENTS = 1_000_000
DRAIN_INTERVAL = 0.01
TERM_GRACE = 1.0
KILL_GRACE = 3.0
_PR_SET_CHILD_SUBREAPER = 36


class RunState(enum.Enum):
    """The lifecycle of a run; every state after RUNNING is terminal."""

    STARTING = "starting"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    STOPPED = "stopped"
    TIMEOUT = "timeout"
    DEADLOCK = "deadlock"
    KILLED = "killed"

    @property
    def terminal(self) -> bool:
        """Whether the run has ended."""
        return self not in (RunState.STARTING, RunState.RUNNING)


class CapacityError(RuntimeError):
    """A cap (concurrent runs, processes per run) refused a new run."""


def _become_subreaper() -> None:
    # Workers orphaned when a run's main process dies are re-parented to the nearest
    # subreaper. Without one they go to PID 1, which in a container may never reap them,
    # and their zombies would keep the run's process group alive.
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


class NotControllable(RuntimeError):
    """A run whose processes this server does not own refuses stop and step."""


class BaseRun:
    """What every run shows: its summary, its numbered event stream and its subscribers."""

    def __init__(
        self,
        run_id: str,
        scenario: str,
        title: dict[str, str],
        params: dict[str, Any],
        start_method: str,
        *,
        step_mode: bool,
        deadlock_after_ns: int,
    ) -> None:
        self.id = run_id
        self.scenario = scenario
        self.title = title
        self.params = params
        self.start_method = start_method
        self.state = RunState.STARTING
        self.message = ""
        self.started = time.time()
        self.ended: float | None = None
        self.step_mode = step_mode
        self._lock = threading.RLock()
        self._events: list[Event] = []
        self._subscribers: dict[int, Subscriber] = {}
        self._next_subscriber = 0
        self._seq = 0
        self._done = threading.Event()
        self._analysis = Analysis(run_id, deadlock_after_ns)
        self._verdicts: list[Event] = []
        # Receives published before the analysis matched them, and those it matched later.
        self._unsettled: list[Event] = []
        self._amended: list[Event] = []

    def summary(self) -> dict[str, Any]:
        """The protocol's run summary."""
        with self._lock:
            return {
                "id": self.id,
                "scenario": self.scenario,
                "title": dict(self.title),
                "params": dict(self.params),
                "start_method": self.start_method,
                "state": self.state.value,
                "message": self.message,
                "started": self.started,
                "ended": self.ended,
                "step_mode": self.step_mode,
                "verdicts": [
                    {"verdict": v["verdict"], "message": v["message"]} for v in self._verdicts
                ],
                "events": len(self._events),
            }

    def events(self) -> list[Event]:
        """Every event so far, in `seq` order (a copy of the list)."""
        with self._lock:
            return list(self._events)

    def subscribe(self, callback: Subscriber) -> tuple[list[Event], Callable[[], None]]:
        """Atomically take the events so far and register `callback` for every later batch.

        The callback runs on the thread that publishes (a run's collector thread) with each
        batch in `seq` order; no event is both in the snapshot and in a batch, and none is
        missed. Call the returned function to unsubscribe; no batch is delivered after it
        returns.
        """
        with self._lock:
            key = self._next_subscriber
            self._next_subscriber += 1
            self._subscribers[key] = callback
            snapshot = list(self._events)

        def unsubscribe() -> None:
            with self._lock:
                self._subscribers.pop(key, None)

        return snapshot, unsubscribe

    def amended(self) -> list[Event]:
        """Events the analysis annotated (`match`, `latency_ns`, `corrupt`) after they were
        published: rare, since the stream is causal (a garbled frame matched late, a
        receive whose sender stalled over the collector's wait). A record re-saves them."""
        with self._lock:
            return list(self._amended)

    def stop(self) -> None:
        raise NotImplementedError

    def step(self) -> None:
        raise NotImplementedError

    def set_step_mode(self, on: bool) -> None:
        raise NotImplementedError

    def analysis_snapshot(self) -> dict[str, Any]:
        """Ends, statistics and verdicts as the analysis sees them now."""
        with self._lock:
            snapshot = self._analysis.snapshot()
            snapshot["verdicts"] = list(self._verdicts)
            return snapshot

    def wait(self, timeout: float | None = None) -> RunState:
        """Wait until the run has ended and been torn down (or `timeout`); return its state."""
        self._done.wait(timeout)
        return self.state

    def _run_event(self, state: RunState, message: str) -> Event:
        event: Event = {
            "run": self.id,
            "kind": "run",
            "t": time.monotonic_ns(),
            "pid": 0,
            "process": "pipescope",
            "state": state.value,
        }
        if state.terminal:
            event["message"] = message
        return event

    def _publish(self, batch: list[Event], *, numbered: bool = False) -> None:
        with self._lock:
            if not numbered:
                for event in batch:
                    self._seq += 1
                    event["seq"] = self._seq
            self._events.extend(batch)
            # Delivered under the lock: a subscriber added now sees this batch either in
            # its snapshot or as a callback, never both, never neither.
            for callback in list(self._subscribers.values()):
                try:
                    callback(batch)
                except Exception:
                    logger.exception("run %s: a subscriber failed", self.id)


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
    ) -> None:
        super().__init__(
            run_id,
            scenario.id,
            dict(scenario.title),
            params,
            start_method,
            step_mode=step_mode,
            deadlock_after_ns=deadlock_after_ns,
        )
        self.timeout = timeout
        self.run_dir = os.path.join(run_root, f"pipescope-{run_id}")
        self._stop = threading.Event()
        self._collector: Collector | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._thread: threading.Thread | None = None
        self._deadlock: str | None = None

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
            if self.step_mode:
                self._collector.set_step_mode(True)
            self._publish([self._run_event(RunState.STARTING, "")])
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
                env=_child_environment(),
            )
        except BaseException:
            self._collector.close()
            if self._stderr is not None:
                self._stderr.close()
            raise
        with self._lock:
            self.state = RunState.RUNNING
        self._publish([self._run_event(RunState.RUNNING, "")])
        self._thread = threading.Thread(
            target=self._watch, name=f"pipescope-collector-{self.id}", daemon=True
        )
        self._thread.start()

    def _watch(self) -> None:
        outcome: tuple[RunState, str] | None = None
        deadline = time.monotonic() + self.timeout
        try:
            while outcome is None:
                self._pump(final=False)
                outcome = self._decide(deadline)
                if outcome is None:
                    self._stop.wait(DRAIN_INTERVAL)
        except Exception as exc:
            logger.exception("run %s: collector failed", self.id)
            outcome = (RunState.FAILED, f"the collector failed: {type(exc).__name__}: {exc}")
        finally:
            self._finish(outcome or (RunState.FAILED, "the collector stopped"))

    def _decide(self, deadline: float) -> tuple[RunState, str] | None:
        assert self._proc is not None
        if self._deadlock is not None:
            return RunState.DEADLOCK, self._deadlock
        code = self._proc.poll()
        if code is not None:
            return self._exit_outcome(code)
        if self._stop.is_set():
            return RunState.STOPPED, "stopped on request"
        if time.monotonic() >= deadline:
            return RunState.TIMEOUT, f"the run exceeded its time limit of {self.timeout:g} s"
        return None

    def _exit_outcome(self, code: int) -> tuple[RunState, str]:
        if code == 0:
            return RunState.COMPLETED, "the scenario ran to completion"
        if code < 0:
            return RunState.KILLED, f"the main process was killed by {_signal_name(-code)}"
        reason = self._stderr_tail()
        killed = [v for v in self._verdicts if v.get("verdict") == "killed"]
        if killed:
            # A worker was killed and the program could not carry on without it.
            return RunState.KILLED, f"{killed[-1]['message']}; the main process exited with {code}"
        return RunState.FAILED, f"the main process exited with code {code}" + (
            f": {reason}" if reason else ""
        )

    def _finish(self, outcome: tuple[RunState, str]) -> None:
        state, message = outcome
        try:
            self._teardown()
            self._pump(final=True)
        except Exception:
            logger.exception("run %s: teardown failed", self.id)
        finally:
            killed = [v for v in self._verdicts if v.get("verdict") == "killed"]
            if state is RunState.COMPLETED and killed:
                # the program carried on without the worker: the outcome says so
                message += f", but a worker was killed: {killed[-1]['message']}"
            with self._lock:
                if self._collector is not None:
                    self._collector.close()
                if self._stderr is not None:
                    self._stderr.close()
                self.state = state
                self.message = message
                self.ended = time.time()
            self._publish([self._run_event(state, message)])
            self._done.set()

    def _teardown(self) -> None:
        proc = self._proc
        if proc is None:
            return
        pgid = proc.pid
        if proc.poll() is not None:
            # The main process ended on its own: give its helpers (forkserver, resource
            # tracker) a moment to exit cleanly before signalling them.
            self._wait_group(pgid, 0.5)
        for sig, grace in ((signal.SIGTERM, TERM_GRACE), (signal.SIGKILL, KILL_GRACE)):
            if not self._group_alive(pgid):
                break
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, sig)
            self._wait_group(pgid, grace)
        proc.wait(timeout=KILL_GRACE)
        self._reap(pgid)

    def _wait_group(self, pgid: int, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while self._group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(DRAIN_INTERVAL)

    def _group_alive(self, pgid: int) -> bool:
        assert self._proc is not None
        if self._proc.poll() is not None:
            self._reap(pgid)
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    @staticmethod
    def _reap(pgid: int) -> None:
        # Orphans of the run re-parented to this process (the subreaper).
        while True:
            try:
                pid, _ = os.waitpid(-pgid, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return

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


class ExternalRun(BaseRun):
    """A program traced elsewhere (`pipescope trace --server`) whose events are streamed in.

    The tracer numbers the events and runs the analysis; this run checks each batch
    (`pipecore.tracing.check_batch`), keeps it and hands it to subscribers. It ends with
    the tracer's terminal `run` event, or in `failed` when the tracer disconnects first.
    """

    def __init__(self, run_id: str, name: str, *, deadlock_after_ns: int) -> None:
        super().__init__(
            run_id,
            EXTERNAL_SCENARIO,
            {"en": name, "zh": name},
            {},
            EXTERNAL_START_METHOD,
            step_mode=False,
            deadlock_after_ns=deadlock_after_ns,
        )

    def ingest(self, batch: object) -> None:
        """Check and publish a batch from the tracer; EventError says what is wrong with it."""
        with self._lock:
            if self.state.terminal:
                raise EventError(
                    f"expected no more events after the run ended ({self.state.value}), got more"
                )
            events = check_batch(batch, self.id, self._seq + 1)
            if len(self._events) + len(events) > MAX_EXTERNAL_EVENTS:
                raise EventError(
                    f"expected at most {MAX_EXTERNAL_EVENTS} events in a traced run, "
                    f"got {len(self._events) + len(events)}"
                )
            self._seq += len(events)
            # The tracer's own analysis annotated the events; this one only keeps the ends
            # and statistics for GET /api/runs/{id}, so it works on copies.
            self._analysis.feed([dict(event) for event in events])
            for event in events:
                if event["kind"] == "verdict":
                    self._verdicts.append(event)
                elif event["kind"] == "run":
                    self.state = RunState(event["state"])
                    self.message = str(event.get("message") or "")
            if self.state.terminal:
                self.ended = time.time()
            self._publish(events, numbered=True)
            if self.state.terminal:
                self._done.set()

    def disconnect(self, message: str) -> None:
        """The tracer is gone: end the run as failed unless it had ended already."""
        with self._lock:
            if self.state.terminal:
                return
            self.state = RunState.FAILED
            self.message = message
            self.ended = time.time()
            self._publish([self._run_event(RunState.FAILED, message)])
        self._done.set()

    def stop(self) -> None:
        raise NotControllable(self._refusal("stopped"))

    def step(self) -> None:
        raise NotControllable(self._refusal("stepped"))

    def set_step_mode(self, on: bool) -> None:
        raise NotControllable(self._refusal("stepped"))

    def _refusal(self, what: str) -> str:
        return (
            f"run {self.id!r} traces a program running elsewhere: it cannot be {what} "
            "from here; stop the program where it runs (Ctrl-C reaches it through the tracer)"
        )


def _takes_frame(event: Event) -> bool:
    return (
        event.get("kind") == "call"
        and event.get("op") in RECEIVING_OPS
        and event.get("phase") in ("end", "error")
    )


def _cpu_ticks(pid: int) -> tuple[str, int] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    # Fields after the command name: state, ..., utime (12th), stime (13th).
    return fields[0].decode(), int(fields[11]) + int(fields[12])


# a drain this large means the collector is behind the run's processes
LAG_EVENTS = 5000


def _stalled(verdict: Event, samples: int = 3, interval: float = 0.05) -> bool:
    """Confirm a deadlock verdict: none of the waiting processes runs or uses CPU.

    A process sending a frame larger than the kernel buffer, and its peer receiving
    it, both sit in one call for as long as the copy takes; that is progress, not a
    deadlock, and it shows as CPU time.
    """
    pids = {int(member["pid"]) for member in verdict.get("cycle") or []}
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


def _signal_name(number: int) -> str:
    try:
        return f"signal {number} ({signal.Signals(number).name})"
    except ValueError:
        return f"signal {number}"


def _child_environment() -> dict[str, str]:
    env = dict(os.environ)
    # The main process must import pipecore the way this process does.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = root if not path else f"{root}{os.pathsep}{path}"
    env["PYTHONUNBUFFERED"] = "1"
    return env


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
    ) -> None:
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
                f"start_method must be one of {', '.join(START_METHODS)}, got {start_method!r}",
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
                f"got {timeout!r}",
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
            )
            self._forget_old()
            run.launch()
            self._runs[run_id] = run
        return run

    def open_external(self, name: object) -> ExternalRun:
        """Register a program traced elsewhere as a run; it counts against the run cap.

        Raises ParamError for a name that is not a short non-empty string, and
        CapacityError when the concurrent-run cap is reached.
        """
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME_CHARS:
            raise ParamError(
                "name", f"name must be a string of 1 to {MAX_NAME_CHARS} characters, got {name!r}"
            )
        with self._lock:
            run = ExternalRun(
                self._admit("t"), name.strip(), deadlock_after_ns=self.deadlock_after_ns
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


__all__ = [
    "START_METHODS",
    "BaseRun",
    "CapacityError",
    "ExternalRun",
    "NotControllable",
    "Run",
    "RunManager",
    "RunState",
]
