"""Swap multiprocessing's Pipe for the traced one and record into the tracer's run."""

from __future__ import annotations

import atexit
import multiprocessing.connection
import os
import sys
from multiprocessing import reduction
from types import TracebackType
from typing import Any, NoReturn

from pipecore import telemetry
from pipecore.traced import Pipe as traced_pipe
from pipecore.traced import _reduce_traced
from pipecore.tracedconnection import TracedConnection

MAIN_PID = "PIPESCOPE_TRACE_MAIN_PID"
_exit_code = [0]


def _pipe(duplex: bool = True) -> Any:
    if telemetry.active_run_dir() is None:
        # a child that creates its own pipe before receiving a traced end
        run_dir = _run_dir()
        if run_dir is not None:
            telemetry.activate(run_dir, _run_id())
    return traced_pipe(duplex)


def _run_dir() -> str | None:
    """The trace's run directory while the trace goes on. A process the program left
    running outlives its tracer, which removed the directory as it exited: it records
    nothing more, and neither it nor its children make the directory again."""
    run_dir = os.environ.get("PIPESCOPE_TRACE_DIR")
    return run_dir if run_dir and os.path.isdir(run_dir) else None


def _reduce_end(conn: TracedConnection) -> tuple[Any, tuple[Any, ...]]:
    if _run_dir() is not None:
        return _reduce_traced(conn)
    # After the trace, an end passed to a new process goes as multiprocessing's own: that
    # process records nothing, and may not find pipecore (its path was the run's).
    reduce: Any = multiprocessing.connection.reduce_connection  # type: ignore[attr-defined]
    return reduce(conn)  # type: ignore[no-any-return]


def _run_id() -> str:
    return os.environ.get("PIPESCOPE_TRACE_RUN", "trace")


def _remember_exit(code: str | int | None = None) -> NoReturn:
    if isinstance(code, bool) or not isinstance(code, int):
        _exit_code[0] = int(code) if isinstance(code, bool) else (0 if code is None else 1)
    else:
        _exit_code[0] = code
    _original_exit(code)


def _remember_crash(
    kind: type[BaseException], value: BaseException, tb: TracebackType | None
) -> None:
    _exit_code[0] = 1
    _original_excepthook(kind, value, tb)


_original_exit = sys.exit
_original_excepthook = sys.excepthook


def _record_exit() -> None:
    telemetry.record_exit(_exit_code[0])


def install() -> None:
    """Trace every Pipe this process creates (through any context) from now on.

    Children started with spawn or forkserver run this again at their start-up
    (they inherit PYTHONPATH); forked children inherit the patch and telemetry.
    """
    # BaseContext.Pipe imports connection.Pipe at call time, so every context sees this
    multiprocessing.connection.Pipe = _pipe
    reduction.ForkingPickler.register(TracedConnection, _reduce_end)
    if os.environ.get(MAIN_PID):
        # a child (spawn, forkserver, or a helper such as the forkserver itself): it
        # starts recording when it receives a traced end or creates a pipe, by which
        # time multiprocessing has given it its real process name
        return
    os.environ[MAIN_PID] = str(os.getpid())
    telemetry.activate(os.environ["PIPESCOPE_TRACE_DIR"], _run_id())
    if os.environ.get("PIPESCOPE_TRACER_PID") == str(os.getppid()):
        # the tracer started this process and records its exit status as it sees it
        # (raise SystemExit(4), os._exit, a signal: nothing here could tell them all)
        return
    # the program's main process under a wrapper (a shell): its exit is recorded here as
    # well as it can be, a child's by telemetry
    sys.exit = _remember_exit
    sys.excepthook = _remember_crash
    atexit.register(_record_exit)
