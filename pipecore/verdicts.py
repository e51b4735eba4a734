"""Verdicts: the verdict events of a run's analysis (killed, eof, deadlock), bounded."""

from __future__ import annotations

import signal
from dataclasses import dataclass
from typing import Any

from pipecore.ends import Blocked, EndState, deadlock_verdict
from pipecore.reasons import reason

Event = dict[str, Any]


# Errors meaning the other end is gone: the end is unusable from then on.
EOF_MEANING = {
    "EOFError": "nothing more can arrive, every copy of the other end was closed",
    "BrokenPipeError": "nobody can receive, every copy of the other end was closed",
    "ConnectionResetError": "the other end was closed with data left unread",
    "ConnectionAbortedError": "the other end aborted the connection",
}
MAX_KILLED = 1000
MAX_VERDICTS = 1000


@dataclass(frozen=True)
class Killed:
    """A process of the run that a signal ended; `signal` is "" when only its vanishing showed."""

    process: str
    pid: int
    signal: str
    message: str


class Verdicts:
    """The verdicts one run's analysis makes, each reported once: the first MAX_VERDICTS
    kept, every one handed out once by `take_new`."""

    def __init__(self, run_id: str, names: dict[str, str]) -> None:
        self.run_id = run_id
        # pipe id -> its name, shared with (and filled by) the analysis
        self._names = names
        self.made: list[Event] = []
        self._new: list[Event] = []
        self._reported: set[tuple[int, str, int]] = set()  # blocked calls named in a deadlock
        self._eofs: set[tuple[str, int, str]] = set()
        # Processes a signal ended, oldest first (the newest MAX_KILLED).
        self.killed: dict[int, Killed] = {}

    def emit(self, verdict: str, t: int, message: str, seqs: list[Any], **extra: Any) -> None:
        ev: Event = {"run": self.run_id, "kind": "verdict", "t": t, "pid": 0, "process": ""}
        ev.update(verdict=verdict, message=message, events=[s for s in seqs if s is not None])
        ev.update(extra)
        if len(self.made) < MAX_VERDICTS:
            self.made.append(ev)
        self._new.append(ev)

    def take_new(self) -> list[Event]:
        new, self._new = self._new, []
        return new

    def exited(self, ev: Event) -> None:
        """A process's `exit` event: a `killed` verdict when a signal ended it."""
        pid, code = int(ev["pid"]), int(ev.get("exitcode") or 0)
        if not (code < 0 or ev.get("killed") is True):
            return
        how, name = "", ""
        if code < 0:
            try:
                name = signal.Signals(-code).name
                how = f" by signal {-code} ({name})"
            except ValueError:
                name = f"signal {-code}"
                how = f" by {name}"
        process = str(ev.get("process", ""))
        message = f"{process} (pid {pid}) was killed{how}"
        self.killed.pop(pid, None)
        self.killed[pid] = Killed(process, pid, name, message)
        if len(self.killed) > MAX_KILLED:
            del self.killed[next(iter(self.killed))]
        named = name if code < 0 and not name.startswith("signal ") else ""
        why = reason("killed", process=process, pid=pid, signum=-code if code < 0 else None)
        why["args"]["signal"] = named
        self.emit("killed", int(ev["t"]), message, [ev.get("seq")], reason=why)

    def eof(self, ev: Event, etype: str) -> None:
        """An `eof` verdict, once per end, process and error type."""
        pipe, end, pid = str(ev["pipe"]), str(ev["end"]), int(ev["pid"])
        key = (f"{pipe}/{end}", pid, etype)
        if key in self._eofs:
            return
        self._eofs.add(key)
        process, op, name = str(ev.get("process", "")), str(ev["op"]), self._names.get(pipe, pipe)
        message = f"{process} got {etype} in {op} on pipe {name} end {end}: {EOF_MEANING[etype]}"
        why = reason("eof", process=process, error=etype, op=op, pipe=name, end=end)
        self.emit("eof", int(ev["t"]), message, [ev.get("seq")], pipe=pipe, end=end, reason=why)

    def deadlock(self, members: list[tuple[EndState, Blocked]], now_ns: int) -> None:
        """A `deadlock` verdict, unless every call of `members` was named in one already."""
        calls = {(c.pid, f"{e.pipe}/{e.end}", c.seq) for e, c in members}
        if calls <= self._reported:
            return
        self._reported |= calls
        message, cycle = deadlock_verdict(members, self._where)
        for wait in cycle:
            wait["pipe_name"] = self._names.get(wait["pipe"], wait["pipe"])
        self.emit("deadlock", now_ns, message, [c.seq for _, c in members], cycle=cycle)

    def _where(self, pipe: str, end: str) -> str:
        return f"pipe {self._names.get(pipe, pipe)} end {end}"
