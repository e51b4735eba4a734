"""How a run ends: its lifecycle states, and each outcome's English message and reason."""

from __future__ import annotations

import enum
import signal
from dataclasses import dataclass, field

from pipecore.reasons import Reason, reason
from pipecore.verdicts import Killed


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


@dataclass(frozen=True)
class Outcome:
    """How a run ended: its terminal state, the English message and the structured reason."""

    state: RunState
    message: str
    reason: Reason = field(default_factory=lambda: reason("completed"))


def completed() -> Outcome:
    """The main process exited with 0."""
    return Outcome(RunState.COMPLETED, "the scenario ran to completion")


def stopped() -> Outcome:
    """Stopped on request."""
    return Outcome(RunState.STOPPED, "stopped on request", reason("stopped"))


def timed_out(limit: float) -> Outcome:
    """The run exceeded its time limit of `limit` seconds."""
    return Outcome(
        RunState.TIMEOUT,
        f"the run exceeded its time limit of {limit:g} s",
        reason("timeout", limit=limit),
    )


def deadlocked(message: str) -> Outcome:
    """A deadlock verdict (its message) ended the run."""
    return Outcome(RunState.DEADLOCK, message, reason("deadlock"))


def collector_failed(error: str, message: str | None = None) -> Outcome:
    """The collector failed with `error`."""
    return Outcome(
        RunState.FAILED,
        message or f"the collector failed: {error}",
        reason("collector_failed", error=error),
    )


def main_killed(signum: int) -> Outcome:
    """The main process was killed by signal `signum`."""
    try:
        name = signal.Signals(signum).name
        described = f"signal {signum} ({name})"
    except ValueError:
        name = described = f"signal {signum}"
    return Outcome(
        RunState.KILLED,
        f"the main process was killed by {described}",
        reason("main_killed", signal=name),
    )


def exit_failed(code: int, stderr: str) -> Outcome:
    """The main process exited with `code`; `stderr` is the last line it printed there."""
    return Outcome(
        RunState.FAILED,
        f"the main process exited with code {code}" + (f": {stderr}" if stderr else ""),
        reason("exit_code", code=code, stderr=stderr),
    )


def worker_killed(killed: Killed, code: int) -> Outcome:
    """A worker was killed while the main process ran; the main process exited with `code`."""
    if code == 0:
        message = f"{killed.message}; the main process carried on and exited with 0"
    else:
        message = f"{killed.message}; the main process exited with {code}"
    why = reason(
        "worker_killed", process=killed.process, pid=killed.pid, signal=killed.signal, code=code
    )
    return Outcome(RunState.KILLED, message, why)
