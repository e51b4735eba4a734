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
from pipecore.autotrace.command import program_name as program_name
from pipecore.autotrace.job import ProgramJob
from pipecore.eventpump import EventPump
from pipecore.runsweep import sweep

Event = dict[str, Any]
PACKAGE_ROOT = Path(__file__).resolve().parent.parent
RUN_ROOT = "/dev/shm"
DRAIN_SECONDS = 0.01
TERM_GRACE = 1.0
# How long what the program leaves running is given to end by itself, and be recorded,
# before the record is finished without it.
LEFT_GRACE = 0.5
# Set for a traced program: the tracer's pid (see pipecore.autotrace.boot).
TRACER_PID = "PIPESCOPE_TRACER_PID"
# Put first on a traced program's path: its processes start tracing, then run the program's
# own sitecustomize, if any.
SITECUSTOMIZE = PACKAGE_ROOT / "pipecore" / "autotrace" / "sitecustomize.py"


class ProgramStartError(Exception):
    """The program could not be started; `status` is what a shell exits with for it:
    127 when it is not found, 126 when it is found but cannot be run."""

    def __init__(self, program: str, error: OSError) -> None:
        super().__init__(f"cannot run {program!r}: {error.strerror or error}")
        self.status = 127 if isinstance(error, FileNotFoundError) else 126


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
        pump.collector.exited(job.pid, code)
        # What the program leaves running goes on, as it would from a shell: a moment for
        # what is ending anyway (its workers, its fork server) to end and be recorded.
        deadline = time.monotonic() + LEFT_GRACE
        while runprocs.find(mark) and time.monotonic() < deadline:
            _pass_on(pump, sink)
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
    """Drain once and pass the events on; then wait DRAIN_SECONDS, unless the drain left
    work (`pump.busy`)."""
    batch = pump.pump()
    if batch:
        sink(batch)
    if not pump.busy:
        time.sleep(DRAIN_SECONDS)


def _remove_run_dir(run_dir: str) -> None:
    """Remove the run directory. A process the program left running keeps the rings it
    maps (their memory is freed when it exits) and makes no new one once the directory is
    gone (pipecore.autotrace.boot); one making a ring just now may need another try."""
    for _ in range(3):
        shutil.rmtree(run_dir, ignore_errors=True)
        if not os.path.lexists(run_dir):
            return
