"""Tracing a user's unmodified program: every multiprocessing.Pipe it makes is recorded."""

from __future__ import annotations

import os
import secrets
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pipecore import runmarks, runprocs, teardown
from pipecore.analysis import Analysis
from pipecore.autotrace.command import program_name as program_name
from pipecore.autotrace.job import ProgramJob
from pipecore.collector import Collector, drain_last
from pipecore.matching import RECV_OPS
from pipecore.runsweep import sweep

Event = dict[str, Any]
PACKAGE_ROOT = Path(__file__).resolve().parent.parent
RUN_ROOT = "/dev/shm"
DRAIN_SECONDS = 0.01
TERM_GRACE = 1.0
# How long what the program leaves running is given to end by itself, and be recorded,
# before the record is finished without it.
LEFT_GRACE = 0.5


# What an ingested event must look like (docs/protocol.md); anything else is refused.
EVENT_KINDS = frozenset({"call", "pipe", "attach", "output", "process", "thread", "verdict", "run"})
CALL_OPS = frozenset(
    {"send", "recv", "send_bytes", "recv_bytes", "recv_bytes_into", "poll", "close"}
)
CALL_PHASES = frozenset({"begin", "end", "error"})
RUN_STATES = frozenset(
    {"starting", "running", "completed", "failed", "stopped", "timeout", "deadlock", "killed"}
)
TERMINAL_STATES = RUN_STATES - {"starting", "running"}
MAX_BATCH_EVENTS = 10_000
MAX_REASON_KEY = 40
MAX_REASON_ARGS = 16


class ProgramStartError(Exception):
    """The program could not be started; `status` is what a shell exits with for it:
    127 when it is not found, 126 when it is found but cannot be run."""

    def __init__(self, program: str, error: OSError) -> None:
        super().__init__(f"cannot run {program!r}: {error.strerror or error}")
        self.status = 127 if isinstance(error, FileNotFoundError) else 126


class EventError(ValueError):
    """An ingested event does not follow the protocol; the message names field and value."""


def _require(event: Event, where: str, field: str, kind: type | tuple[type, ...]) -> Any:
    value = event.get(field)
    if not isinstance(value, kind) or isinstance(value, bool):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise EventError(f"{where}: expected {field!r} to be {names}, got {value!r}")
    return value


def _choice(event: Event, where: str, field: str, allowed: frozenset[str]) -> None:
    value = event.get(field)
    if value not in allowed:
        raise EventError(
            f"{where}: expected {field!r} to be one of {', '.join(sorted(allowed))}, got {value!r}"
        )


def _check_reason(reason: object, where: str) -> None:
    """A run outcome's reason: {"key": str, "args": {str: str | int | float}}."""
    if not isinstance(reason, dict) or set(reason) != {"key", "args"}:
        raise EventError(
            f"{where}: expected 'reason' to be an object with 'key' and 'args', got {reason!r}"
        )
    key, args = reason["key"], reason["args"]
    if not isinstance(key, str) or not 0 < len(key) <= MAX_REASON_KEY:
        raise EventError(
            f"{where}: expected 'reason.key' to be a string of 1 to {MAX_REASON_KEY} "
            f"characters, got {key!r}"
        )
    if not isinstance(args, dict) or len(args) > MAX_REASON_ARGS:
        raise EventError(
            f"{where}: expected 'reason.args' to be an object of at most {MAX_REASON_ARGS} "
            f"fields, got {args!r}"
        )
    for name, value in args.items():
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise EventError(
                f"{where}: expected 'reason.args.{name}' to be a string or a number, got {value!r}"
            )


def check_batch(batch: object, run_id: str, first_seq: int) -> list[Event]:
    """Check a batch of events streamed in for run `run_id`; return it, or raise EventError.

    Every event carries the protocol's common fields, belongs to this run, and numbers on
    from `first_seq` without a gap; nothing may follow a terminal `run` event.
    """
    if not isinstance(batch, list):
        raise EventError(f"expected 'events' to be a list, got {type(batch).__name__}")
    if len(batch) > MAX_BATCH_EVENTS:
        raise EventError(f"expected at most {MAX_BATCH_EVENTS} events a frame, got {len(batch)}")
    events: list[Event] = []
    for index, event in enumerate(batch):
        seq = first_seq + index
        where = f"event {index} (seq {seq})"
        if not isinstance(event, dict):
            raise EventError(f"{where}: expected a JSON object, got {type(event).__name__}")
        if events and events[-1]["kind"] == "run" and events[-1]["state"] in TERMINAL_STATES:
            raise EventError(f"{where}: expected nothing after the run's terminal state")
        if event.get("run") != run_id:
            raise EventError(f"{where}: expected 'run' to be {run_id!r}, got {event.get('run')!r}")
        if _require(event, where, "seq", int) != seq:
            raise EventError(f"{where}: expected 'seq' {seq}, got {event['seq']!r}")
        _choice(event, where, "kind", EVENT_KINDS)
        _require(event, where, "t", int)
        if _require(event, where, "pid", int) < 0:
            raise EventError(f"{where}: expected 'pid' to be 0 or more, got {event['pid']}")
        _require(event, where, "process", str)
        kind = event["kind"]
        if kind == "call":
            _require(event, where, "pipe", str)
            _choice(event, where, "end", frozenset({"a", "b"}))
            _choice(event, where, "op", CALL_OPS)
            _choice(event, where, "phase", CALL_PHASES)
        elif kind == "run":
            _choice(event, where, "state", RUN_STATES)
            if "reason" in event:
                _check_reason(event["reason"], where)
        elif kind == "output":
            _choice(event, where, "stream", frozenset({"stdout", "stderr"}))
            _require(event, where, "text", str)
        elif kind == "verdict":
            _require(event, where, "verdict", str)
            _require(event, where, "message", str)
        events.append(event)
    return events


# Set for a traced program: the tracer's pid (see pipecore.autotrace.boot).
TRACER_PID = "PIPESCOPE_TRACER_PID"
# How long a receive waits for the analysis to see its send before it is written anyway.
HOLD_UNMATCHED_NS = 500_000_000


def _unmatched(event: Event) -> bool:
    """A received frame the analysis has neither matched nor found corrupt (yet)."""
    return (
        event["kind"] == "call"
        and event.get("phase") == "end"
        and event.get("op") in RECV_OPS
        and "match" not in event
        and "corrupt" not in event
    )


class EventPump:
    """A run's collector and analysis together: numbered events with verdicts added."""

    def __init__(self, run_dir: str, run_id: str, deadlock_after_ns: int = 1_000_000_000):
        self.run_id = run_id
        self.collector = Collector(run_dir, run_id)
        self.analysis = Analysis(run_id, deadlock_after_ns)
        self._seq = 0
        self._held: list[Event] = []  # from the first receive still waiting for its send
        self._since: dict[int, int] = {}  # seq of such a receive -> when it was first held

    def pump(self, *, final: bool = False) -> list[Event]:
        """Drain the rings once; return the new events and any verdicts, numbered.

        A receive whose send the analysis has not seen yet (threads of one process: the
        receive can be stamped before the send's end) gets its `match` when that send
        comes; it is held back, with everything after it, until then or for at most
        HOLD_UNMATCHED_NS, so that what is written out carries it."""
        events = drain_last(self.collector) if final else self.collector.drain()
        self._number(events)  # before the analysis, whose `match` names these numbers
        verdicts = self.analysis.feed(events)
        if not final:
            verdicts += self.analysis.tick(time.monotonic_ns())
        self._number(verdicts)
        out, self._held = self._held + events + verdicts, []
        if not final:
            now = time.monotonic_ns()
            for i, event in enumerate(out):
                if _unmatched(event) and now - self._since.setdefault(event["seq"], now) < (
                    HOLD_UNMATCHED_NS
                ):
                    out, self._held = out[:i], out[i:]
                    break
        for event in out:
            self._since.pop(event["seq"], None)
        return out

    def _number(self, events: list[Event]) -> None:
        for event in events:
            self._seq += 1
            event["seq"] = self._seq

    def run_event(
        self, state: str, message: str | None = None, reason: dict[str, Any] | None = None
    ) -> Event:
        """A numbered `run` event announcing a state (with its reason, if terminal)."""
        self._seq += 1
        event: Event = {"run": self.run_id, "seq": self._seq, "kind": "run",
                        "t": time.monotonic_ns(), "pid": 0, "process": "pipescope",
                        "state": state}  # fmt: skip
        if message is not None:
            event["message"] = message
        if reason is not None:
            event["reason"] = reason
        return event

    def close(self) -> None:
        self.collector.close()


# Put first on a traced program's path: its processes start tracing, then run the program's
# own sitecustomize, if any.
SITECUSTOMIZE = PACKAGE_ROOT / "pipecore" / "autotrace" / "sitecustomize.py"


def import_dir(run_dir: str) -> str:
    """A directory holding only `sitecustomize` and `pipecore` (a link to this package), to
    put first on a traced program's path: nothing else of this installation (its `app`,
    `tests`, …) can shadow the program's own modules."""
    path = os.path.join(run_dir, "import")
    os.makedirs(path, exist_ok=True)
    link = os.path.join(path, "pipecore")
    if not os.path.lexists(link):
        os.symlink(PACKAGE_ROOT / "pipecore", link)
    shutil.copyfile(SITECUSTOMIZE, os.path.join(path, "sitecustomize.py"))
    return path


def trace_environment(run_dir: str, run_id: str) -> dict[str, str]:
    """The environment that makes a Python program, and its children, trace their pipes."""
    env = dict(os.environ)
    path = [import_dir(run_dir)]
    if env.get("PYTHONPATH"):
        path.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(path)
    env["PIPESCOPE_TRACE_DIR"] = run_dir
    env["PIPESCOPE_TRACE_RUN"] = run_id
    env[TRACER_PID] = str(os.getpid())  # the program's parent tells its exit status
    env.pop("PIPESCOPE_TRACE_MAIN_PID", None)
    return env


def new_run_id() -> str:
    return "t" + secrets.token_hex(4)


def trace_program(
    command: Sequence[str],
    sink: Callable[[list[Event]], None],
    *,
    run_id: str | None = None,
    name: str | None = None,
) -> int:
    """Run `command` with every Pipe traced; hand each batch of events to `sink`.

    The program's standard streams are its own (inherited), so its output passes through
    unchanged; returns its exit status (negative: killed by that signal). It runs as a job
    of its own (`ProgramJob`): a signal sent to the tracer, or to the tracer's process
    group, reaches it once. What it leaves running when its main process exits goes on,
    untraced; the run directory is removed afterwards. Raises ProgramStartError when the
    program cannot be started.
    """
    # What a tracer or server killed before its teardown left behind goes first.
    sweep(RUN_ROOT)
    run_id = run_id or new_run_id()
    run_dir = os.path.join(RUN_ROOT, f"pipescope-{run_id}")
    os.makedirs(run_dir, exist_ok=False)
    # Once this process is gone (even by SIGKILL), a later sweep removes the directory.
    runmarks.write_owner(run_dir)
    label = name or program_name(command)
    mark = runmarks.new_mark(run_id)
    job: ProgramJob | None = None
    pump: EventPump | None = None
    try:
        pump = EventPump(run_dir, run_id)
        first = pump.run_event("running", None)
        first["message"] = f"tracing {label}"
        sink([first])
        env = runmarks.marked_environment(trace_environment(run_dir, run_id), mark)
        try:
            job = ProgramJob(command, env)
        except OSError as exc:
            raise ProgramStartError(command[0], exc) from None
        # Its exit status is told from here (what it passed to exit, or the signal that
        # ended it), which the program's own process could not always record.
        pump.collector.await_exit(job.pid)
        while (code := job.poll()) is None:
            _pass_on(pump, sink)
            time.sleep(DRAIN_SECONDS)
        pump.collector.exited(job.pid, code)
        # What the program leaves running goes on, as it would from a shell: a moment for
        # what is ending anyway (its workers, its fork server) to end and be recorded.
        deadline = time.monotonic() + LEFT_GRACE
        while runprocs.find(mark) and time.monotonic() < deadline:
            _pass_on(pump, sink)
            time.sleep(DRAIN_SECONDS)
        batch = pump.pump(final=True)
        state = "completed" if code == 0 else ("killed" if code < 0 else "failed")
        why = {"key": "program_exit", "args": {"program": label, "code": code}}
        batch.append(pump.run_event(state, f"{label} exited with status {code}", why))
        sink(batch)
        return code
    finally:
        if job is not None and job.returncode is None:
            # Left early (the sink or the pump raised): a program still running would
            # recreate the run directory once it is removed, and nobody would read it.
            teardown.end(mark, term_grace=TERM_GRACE)
            job.wait()
        if job is not None:
            job.close()
        if pump is not None:
            pump.close()
        _remove_run_dir(run_dir)


def _pass_on(pump: EventPump, sink: Callable[[list[Event]], None]) -> None:
    batch = pump.pump()
    if batch:
        sink(batch)


def _remove_run_dir(run_dir: str) -> None:
    """Remove the run directory. A process the program left running keeps the rings it
    maps (their memory is freed when it exits) and makes no new one once the directory is
    gone (pipecore.autotrace.boot); one making a ring just now may need another try."""
    for _ in range(3):
        shutil.rmtree(run_dir, ignore_errors=True)
        if not os.path.lexists(run_dir):
            return
