"""A run's event stream built by hand in the collector's shape, for the analysis tests."""

from __future__ import annotations

from typing import Any

from pipecore.analysis import Analysis

Event = dict[str, Any]
NAMES = {10: "MainProcess", 11: "Process-1", 12: "Process-2", 13: "Process-3"}
SECOND = 1_000_000_000


class Stream:
    """Builds a run's event stream in the collector's shape; `seq` counts up."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.fed = 0

    def add(self, t: int, pid: int, kind: str, **fields: Any) -> Event:
        ev: Event = {"run": "r1", "seq": len(self.events) + 1, "kind": kind, "t": t, "pid": pid}
        ev.update(process=NAMES.get(pid, ""), **fields)
        self.events.append(ev)
        return ev

    def pipe(self, t: int = 0, pipe: str = "p1", capacity: int = 1000, duplex: bool = True) -> None:
        self.add(t, 10, "pipe", pipe=pipe, pipe_name=pipe, duplex=duplex, capacity=capacity)

    def call(self, t: int, pid: int, end: str, op: str, phase: str, **fields: Any) -> Event:
        fields.setdefault("pipe", "p1")
        return self.add(t, pid, "call", end=end, op=op, phase=phase, **fields)

    def send(self, t: int, pid: int, end: str, h: str, n: int, **fields: Any) -> Event:
        self.call(t, pid, end, "send", "begin", **fields)
        return self.call(t, pid, end, "send", "end", hash=h, nbytes=n, **fields)

    def recv(self, t: int, pid: int, end: str, h: str, n: int, **fields: Any) -> Event:
        self.call(t, pid, end, "recv", "begin", **fields)
        return self.call(t, pid, end, "recv", "end", hash=h, nbytes=n, **fields)

    def feed(self, analysis: Analysis) -> list[Event]:
        """Feed the events added since the last feed; return the new verdicts."""
        new, self.fed = self.events[self.fed :], len(self.events)
        return analysis.feed(new)


def kinds(verdicts: list[Event]) -> list[str]:
    return [v["verdict"] for v in verdicts]
