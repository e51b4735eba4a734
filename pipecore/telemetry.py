"""Per-process telemetry: activation, the process's recorder, lifetime and output events."""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from typing import Any

from pipecore.recorder import RECORDER as RECORDER
from pipecore.recorder import WRITER as WRITER
from pipecore.recorder import Recorder
from pipecore.recorder import TracedEnd as TracedEnd
from pipecore.ring import HASH_FULL_LIMIT as HASH_FULL_LIMIT
from pipecore.ring import HEAD_STORE as HEAD_STORE
from pipecore.ring import ensure_layout
from pipecore.ring import frame_hash as frame_hash
from pipecore.stepping import StepControl as StepControl
from pipecore.tee import flush_tees, install_tees, remove_tees, reset_tees_after_fork

# The name multiprocessing.Queue gives the thread that feeds its pipe (multiprocessing.queues).
QUEUE_FEEDER = "QueueFeederThread"

_recorder: Recorder | None = None
_activate_lock = threading.Lock()


def recorder() -> Recorder | None:
    """This process's recorder, or None outside a run."""
    return _recorder


def activate(run_dir: str, run_id: str, *, parent: int | None = None) -> None:
    """Record this process's traced calls, output and lifetime into `run_dir`.

    Creates the process's ring `<run_dir>/<pid>.ring`, records a `process` `start`
    event and tees `sys.stdout`/`sys.stderr` into `output` events. Activating the
    same run again is a no-op; activating another run deactivates the current one.
    `parent` is the pid that started this process (default: `os.getppid()`).
    """
    global _recorder
    with _activate_lock:
        current = _recorder
        if current is not None:
            if current.run_dir == run_dir and current.pid == os.getpid():
                return
            _deactivate_locked()
        ensure_layout(run_dir)
        rec = RECORDER(run_dir, run_id, multiprocessing.current_process().name)
        _install_hooks()
        _recorder = rec
        parent_pid = os.getppid() if parent is None else parent
        rec.event({"kind": "process", "op": "start", "parent": parent_pid})
        install_tees(_emit_output)


def deactivate() -> None:
    """Stop recording in this process; the ring file stays for the collector."""
    with _activate_lock:
        _deactivate_locked()


def _deactivate_locked() -> None:
    global _recorder
    rec = _recorder
    if rec is None:
        return
    flush_tees()
    _recorder = None
    remove_tees()
    rec.close()


def active_run_dir() -> str | None:
    """The run directory this process records into, or None."""
    rec = _recorder
    return None if rec is None else rec.run_dir


def active_run_id() -> str | None:
    """The run id this process records into, or None."""
    rec = _recorder
    return None if rec is None else rec.run_id


def record_exit(exitcode: int) -> None:
    """Record this process's `process` `exit` event (a run's main process calls this)."""
    rec = _recorder
    if rec is not None:
        flush_tees()
        rec.event({"kind": "process", "op": "exit", "exitcode": exitcode})


def record_event(fields: dict[str, Any]) -> None:
    """Record an event with the given protocol fields (`kind` included), if active."""
    rec = _recorder
    if rec is not None:
        rec.event(fields)


def _emit_output(stream: str, line: str) -> bool:
    rec = _recorder
    if rec is None:
        return False
    rec.event({"kind": "output", "stream": stream, "text": line})
    return True


# -- process lifetime ------------------------------------------------------------

_hooks_installed = False


def _install_hooks() -> None:
    global _hooks_installed
    if _hooks_installed:
        return
    _hooks_installed = True
    os.register_at_fork(after_in_child=_after_fork_in_child)
    # A multiprocessing child runs BaseProcess._bootstrap and exits with what it returns.
    original: Callable[..., int] = getattr(BaseProcess, "_bootstrap")  # noqa: B009

    def _bootstrap(self: BaseProcess, parent_sentinel: int | None = None) -> int:
        rec = _recorder
        if rec is not None and rec.process_name != self.name:
            rec.set_process_name(self.name)
        code = original(self, parent_sentinel)
        record_exit(code)
        return code

    setattr(BaseProcess, "_bootstrap", _bootstrap)  # noqa: B010

    # A thread that starts or ends changes who may still call: the analysis calls a wait
    # a deadlock only if no other thread of the process is left to end it.
    inner: Callable[[threading.Thread], None] = getattr(threading.Thread, "_bootstrap_inner")  # noqa: B009

    def _bootstrap_inner(self: threading.Thread) -> None:
        _record_threads("start")
        try:
            inner(self)
        finally:
            _record_threads("end")  # the thread has left threading's count by now

    setattr(threading.Thread, "_bootstrap_inner", _bootstrap_inner)  # noqa: B010


def _record_threads(op: str) -> None:
    rec = _recorder
    if rec is not None and rec.pid == os.getpid():
        # A multiprocessing.Queue's feeder thread only moves what this process's own
        # threads put into the queue's pipe: it can end no wait when they all wait.
        helpers = sum(1 for t in threading.enumerate() if t.name == QUEUE_FEEDER)
        rec.event({"kind": "thread", "op": op, "threads": threading.active_count(),
                   "helpers": helpers})  # fmt: skip


def _forking_process_name() -> str:
    # Under fork, multiprocessing names the child only after the fork; its Popen
    # holds the Process object being launched.
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "_launch":
            obj = frame.f_locals.get("process_obj")
            if isinstance(obj, BaseProcess):
                return obj.name
        frame = frame.f_back  # type: ignore[assignment]
    return multiprocessing.current_process().name


def _after_fork_in_child() -> None:
    global _recorder, _activate_lock
    _activate_lock = threading.Lock()
    parent = _recorder
    if parent is None:
        return
    parent.abandon()
    _recorder = None
    reset_tees_after_fork()
    try:
        rec = RECORDER(parent.run_dir, parent.run_id, _forking_process_name())
    except OSError:
        return  # the run directory is gone: record nothing
    _recorder = rec
    rec.event({"kind": "process", "op": "start", "parent": os.getppid()})
