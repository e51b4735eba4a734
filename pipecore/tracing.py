"""Tracing a user's unmodified program: every multiprocessing.Pipe it makes is recorded."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pipecore.analysis import Analysis
from pipecore.collector import Collector

Event = dict[str, Any]
BOOT_DIR = Path(__file__).resolve().parent / "autotrace"
PACKAGE_ROOT = Path(__file__).resolve().parent.parent
DRAIN_SECONDS = 0.01


class EventPump:
    """A run's collector and analysis together: numbered events with verdicts added."""

    def __init__(self, run_dir: str, run_id: str, deadlock_after_ns: int = 1_000_000_000):
        self.run_id = run_id
        self.collector = Collector(run_dir, run_id)
        self.analysis = Analysis(run_id, deadlock_after_ns)
        self._seq = 0

    def pump(self, *, final: bool = False) -> list[Event]:
        """Drain the rings once; return the new events and any verdicts, numbered."""
        events = self.collector.drain(final=final)
        self._number(events)  # before the analysis, whose `match` names these numbers
        verdicts = self.analysis.feed(events)
        if not final:
            verdicts += self.analysis.tick(time.monotonic_ns())
        self._number(verdicts)
        return events + verdicts

    def _number(self, events: list[Event]) -> None:
        for event in events:
            self._seq += 1
            event["seq"] = self._seq

    def run_event(self, state: str, message: str | None = None) -> Event:
        """A numbered `run` event announcing a state."""
        self._seq += 1
        event: Event = {"run": self.run_id, "seq": self._seq, "kind": "run",
                        "t": time.monotonic_ns(), "pid": 0, "process": "pipescope",
                        "state": state}  # fmt: skip
        if message is not None:
            event["message"] = message
        return event

    def close(self) -> None:
        self.collector.close()


def trace_environment(run_dir: str, run_id: str) -> dict[str, str]:
    """The environment that makes a Python program, and its children, trace their pipes."""
    env = dict(os.environ)
    path = [str(BOOT_DIR), str(PACKAGE_ROOT)]
    if env.get("PYTHONPATH"):
        path.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(path)
    env["PIPESCOPE_TRACE_DIR"] = run_dir
    env["PIPESCOPE_TRACE_RUN"] = run_id
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
    unchanged; returns its exit status (negative: killed by that signal). SIGINT and
    SIGTERM reach the program; the run directory is removed afterwards.
    """
    run_id = run_id or new_run_id()
    run_dir = f"/dev/shm/pipescope-{run_id}"
    os.makedirs(run_dir, exist_ok=False)
    pump = EventPump(run_dir, run_id)
    label = name or " ".join(Path(part).name for part in command[:2])
    try:
        first = pump.run_event("running", None)
        first["message"] = f"tracing {label}"
        sink([first])
        child = subprocess.Popen(list(command), env=trace_environment(run_dir, run_id))
        forward = _forward_signals(child)
        try:
            while child.poll() is None:
                batch = pump.pump()
                if batch:
                    sink(batch)
                time.sleep(DRAIN_SECONDS)
        finally:
            _restore_signals(forward)
        code = child.returncode
        batch = pump.pump(final=True)
        state = "completed" if code == 0 else ("killed" if code < 0 else "failed")
        batch.append(pump.run_event(state, f"{label} exited with status {code}"))
        sink(batch)
        return code
    finally:
        pump.close()
        shutil.rmtree(run_dir, ignore_errors=True)


Handlers = dict[int, Any]


def _forward_signals(child: subprocess.Popen[bytes]) -> Handlers:
    def forward(signum: int, _frame: object) -> None:
        if child.poll() is None:
            child.send_signal(signum)

    previous: Handlers = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.signal(signum, forward)
    return previous


def _restore_signals(previous: Handlers) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)
