"""EventPump: a tracer's collector and analysis together, its events numbered."""

from __future__ import annotations

import time
from typing import Any

from pipecore.analysis import Analysis
from pipecore.collector import Collector, drain_last
from pipecore.matching import RECV_OPS

Event = dict[str, Any]
# How long a receive waits for the analysis to see its send before it is written anyway.
HOLD_UNMATCHED_NS = 500_000_000
# After a drain this large the next one starts without waiting.
BUSY_EVENTS = 1000


def drain_again(collector: Collector, drained: int) -> bool:
    """Whether to drain again at once after a drain that released `drained` events: it
    left records unread, or was large, or a process waits for room in its ring. A
    collector that waited its interval regardless fell behind a fast program for good:
    a pinned 100 B ping-pong, traced, ran at 1.40 times its raw time instead of 1.05."""
    return collector.behind or drained >= BUSY_EVENTS or collector.writers_waiting()


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
        self.busy = False  # the last drain left work: drain again at once

    def pump(self, *, final: bool = False) -> list[Event]:
        """Drain the rings once; return the new events and any verdicts, numbered.

        A receive whose send the analysis has not seen yet (threads of one process: the
        receive can be stamped before the send's end) gets its `match` when that send
        comes; it is held back, with everything after it, until then or for at most
        HOLD_UNMATCHED_NS, so that what is written out carries it."""
        events = drain_last(self.collector) if final else self.collector.drain()
        self.busy = not final and drain_again(self.collector, len(events))
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
