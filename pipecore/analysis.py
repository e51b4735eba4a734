"""Pure analysis of a run's event stream: pipes, ends and processes fed in, verdicts out."""

from __future__ import annotations

import math
from typing import Any

from pipecore.ends import (
    Blocked,
    EndState,
    EndStatus,
    deadlocks,
    op_group,
    stuck_calls,
    waiting_in_every_thread,
)
from pipecore.matching import (
    BAD_LENGTH,
    RECV_OPS,
    SEND_OPS,
    DirectionState,
    FifoMatcher,
    describe,
    peer,
)
from pipecore.verdicts import EOF_MEANING, Killed, Verdicts

__all__ = ["Analysis", "EndStatus"]

Event = dict[str, Any]

# What pickle.loads raises on garbage: a recv that read a garbled frame.
LOAD_ERRORS = frozenset(
    {"UnpicklingError", "ValueError", "KeyError", "IndexError", "TypeError", "OverflowError"}
    | {"MemoryError", "UnicodeDecodeError"}
)
TRUNCATED = "Ran out of input"  # pickle's EOFError, not the connection's
# A call's end, direction (None: a close), whether it sends, whether it receives.
Route = tuple[EndState, DirectionState | None, bool, bool]


class Analysis:
    """Incremental, pure analysis of one run's merged event stream.

    `feed` takes events in `seq` order, annotates receiving events in place with
    `match`, `latency_ns` and `corrupt`, and returns new `verdict` events (without
    `seq`: the caller appends them to the stream). `tick(now_ns)` returns the
    time-based verdicts (deadlock, frames received that nobody sent).

    Matching is FIFO per direction (`pipecore.matching.FifoMatcher`). A receive whose
    send event has not arrived yet waits for it; it is matched to it (annotated late,
    in place) or flagged after `deadlock_after_ns`.
    """

    def __init__(self, run_id: str, deadlock_after_ns: int = 1_000_000_000) -> None:
        self.run_id = run_id
        self.deadlock_after_ns = deadlock_after_ns
        self._names: dict[str, str] = {}
        self._simplex: set[str] = set()
        self._ends: dict[str, EndState] = {}
        # The same ends by (pipe, end), and each call's route by (pipe, end, op).
        self._end_of: dict[tuple[str, str], EndState] = {}
        self._routes: dict[tuple[str, str, str], Route] = {}
        self._dirs: dict[tuple[str, str], DirectionState] = {}
        self._last_t: dict[int, int] = {}
        self._exited: set[int] = set()
        # pid -> its live threads but Queue feeders, as its last `thread` event said (1 when
        # none came)
        self._threads: dict[int, int] = {}
        self._verdicts = Verdicts(run_id, self._names)
        # Processes a signal ended, oldest first (the newest MAX_KILLED).
        self.killed: dict[int, Killed] = self._verdicts.killed
        self._fifo = FifoMatcher(self._names, self._verdicts.emit)

    @property
    def verdicts(self) -> list[Event]:
        """The verdicts so far (the first MAX_VERDICTS), in the order they were made."""
        return list(self._verdicts.made)

    def feed(self, events: list[Event]) -> list[Event]:
        """Analyse `events` (in stream order); return the new verdict events."""
        last_t = self._last_t
        on_call = self._on_call
        for ev in events:
            pid = ev.get("pid", 0)
            if pid:
                t = ev["t"]
                if t > last_t.get(pid, 0):
                    last_t[pid] = t
            kind = ev.get("kind")
            if kind == "call":
                on_call(ev)
            elif kind == "pipe":
                self._on_pipe(ev)
            elif kind == "attach":
                self._end(str(ev["pipe"]), str(ev["end"]), ev).holders.add(pid)
            elif kind == "process" and ev.get("op") == "exit":
                self._on_exit(ev)
            elif kind == "thread":
                # Queue feeder threads end no wait of their process (pipecore.telemetry).
                threads = int(ev.get("threads", 1)) - int(ev.get("helpers", 0))
                self._threads[pid] = max(1, threads)
        return self._verdicts.take_new()

    def tick(self, now_ns: int) -> list[Event]:
        """Verdicts that only time reveals: deadlocks and frames nobody sent."""
        limit = now_ns - self.deadlock_after_ns
        for d in self._dirs.values():
            self._fifo.expire(d, limit)
        stuck = stuck_calls(self._ends.values(), self._exited, self._last_t, limit, self._dir)
        if self._threads:
            stuck = waiting_in_every_thread(stuck, self._threads)
        for members in deadlocks(stuck, self._live_peers):
            self._verdicts.deadlock(members, now_ns)
        return self._verdicts.take_new()

    def ends(self) -> dict[str, dict[str, Any]]:
        """State of every end, keyed "<pipe>/<end>"; queued figures are towards that end."""
        out: dict[str, dict[str, Any]] = {}
        for key, end in sorted(self._ends.items()):
            incoming = self._dirs.get((end.pipe, f"{peer(end.end)}>{end.end}"), DirectionState())
            out[key] = end.summary(self._names.get(end.pipe, end.pipe), incoming)
        return out

    def stats(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Per pipe and direction: messages, bytes, rates, latency, time blocked, queueing.

        A rate needs an interval: from fewer than two messages (or two at one instant) it is
        unknown, `None`, not 0.
        """
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for (pipe, direction), d in sorted(self._dirs.items()):
            summary = d.summary()
            if d.messages < 2 or d.first_t is None or d.last_t == d.first_t:
                summary["messages_per_s"] = summary["bytes_per_s"] = None
            out.setdefault(pipe, {})[direction] = summary
        return out

    def snapshot(self) -> dict[str, Any]:
        """Ends, statistics and verdicts, ready for JSON."""
        return {"ends": self.ends(), "stats": self.stats(), "verdicts": self.verdicts}

    # -- events ---------------------------------------------------------------

    def _on_pipe(self, ev: Event) -> None:
        pipe = str(ev["pipe"])
        self._names[pipe] = str(ev.get("pipe_name") or pipe)
        if not ev.get("duplex", True):
            self._simplex.add(pipe)
            # A call seen before its pipe was taken for duplex: look its direction up again.
            self._routes.clear()
        for end in ("a", "b"):
            self._end(pipe, end)
        # Pipe(duplex=False): a reads, b writes.
        for direction in ("a>b", "b>a") if ev.get("duplex", True) else ("b>a",):
            d = self._dirs.setdefault((pipe, direction), DirectionState())
            if "capacity" in ev:
                d.capacity = int(ev["capacity"])

    def _on_exit(self, ev: Event) -> None:
        pid = int(ev["pid"])
        self._exited.add(pid)
        for end in self._ends.values():
            end.unblock(pid)
            if pid in end.holders:
                end.holders.discard(pid)
                end.released.add(pid)
        self._verdicts.exited(ev)

    def _on_call(self, ev: Event) -> None:
        side = ev.get("end")
        if side != "a" and side != "b":
            return  # the collector could not tell which end: nothing to match it with
        pipe, op = ev["pipe"], ev["op"]
        route = self._routes.get((pipe, side, op))
        if route is None or (pipe not in self._names and "pipe_name" in ev):
            route = self._route(pipe, side, op, ev)
        end, d, sending, receiving = route
        pid, phase = ev["pid"], ev["phase"]
        if d is None:  # close
            end.holders.discard(pid)
            end.released.add(pid)
            end.unblock(pid)
            return
        if pid not in end.holders:
            end.holders.add(pid)
            end.released.discard(pid)
        if "capacity" in ev:
            d.capacity = int(ev["capacity"])
        if phase == "begin":
            self._on_begin(ev, end, d, pid, op, sending)
            return
        # A process's threads may wait in an end at once, one sending and one receiving.
        began = end.blocked.pop((pid, sending), None)
        if began is not None:
            blocked_ns = d.blocked_ns
            blocked_ns[op] = blocked_ns.get(op, 0) + ev["t"] - began.since
        if phase == "end":
            if sending:
                self._fifo.send(ev, d)
            elif receiving:
                self._fifo.receive(ev, d, None)
        elif phase == "error":
            self._on_error(ev, end, d)

    def _on_begin(
        self, ev: Event, end: EndState, d: DirectionState, pid: int, op: str, sending: bool
    ) -> None:
        timeout = ev.get("timeout")
        queued = ev.get("queued", -1)
        if isinstance(queued, int) and queued >= 0:  # -1: the reading failed
            end.kernel_queued = queued
            if queued > d.peak:
                d.peak = queued
        if timeout is not None and math.isnan(timeout):
            timeout = None  # poll(None) as the ring records it
        if op == "poll" and timeout is not None and timeout <= 0:
            return  # poll(0) only looks
        blocked = end.blocked
        if blocked and op != "poll":
            group = op_group(op)
            if any(b.pid != pid and op_group(b.op) == group for b in blocked.values()):
                d.raced = True
        blocked[(pid, sending)] = Blocked(
            pid,
            ev.get("process", ""),
            op,
            ev["t"],
            ev.get("seq", 0),
            op != "poll" or timeout is None,
        )

    def _on_error(self, ev: Event, end: EndState, d: DirectionState) -> None:
        etype, text, op = str(ev.get("error_type", "")), str(ev.get("error", "")), ev["op"]
        if etype in EOF_MEANING and TRUNCATED not in text:
            end.error = f"{etype}: {text}" if text else etype
            self._verdicts.eof(ev, etype)
        elif op not in RECV_OPS:
            return
        elif etype == "BufferTooShort":
            self._fifo.receive(ev, d, None)  # the frame arrived whole; only the buffer was small
        elif BAD_LENGTH in text:
            end.error = f"{etype}: {text}"
            # On a clean stream this is recv_bytes(maxlength) meeting a longer, intact frame.
            garbled = d.raced or d.corrupt > 0 or not d.sends
            self._fifo.receive(ev, d, describe(ev) if garbled else None)
        elif op == "recv" and (etype in LOAD_ERRORS or TRUNCATED in text):
            self._fifo.receive(ev, d, describe(ev))

    # -- lookups --------------------------------------------------------------

    def _end(self, pipe: str, end: str, ev: Event | None = None) -> EndState:
        if ev is not None and pipe not in self._names and ev.get("pipe_name"):
            self._names[pipe] = str(ev["pipe_name"])
        state = self._end_of.get((pipe, end))
        if state is None:
            state = self._ends[f"{pipe}/{end}"] = self._end_of[(pipe, end)] = EndState(pipe, end)
        return state

    def _route(self, pipe: str, side: str, op: str, ev: Event) -> Route:
        """Where a call of `op` on (pipe, side) goes: its end and direction (None for a
        close), and whether it sends or receives; kept for the calls alike that follow."""
        end = self._end_of.get((pipe, side))
        if end is None or (pipe not in self._names and "pipe_name" in ev):
            end = self._end(pipe, side, ev)
        d = None if op == "close" else self._dir(end, op)
        route = self._routes[(pipe, side, op)] = (end, d, op in SEND_OPS, op in RECV_OPS)
        return route

    def _dir(self, end: EndState, op: str) -> DirectionState:
        sending = op in SEND_OPS
        if end.pipe in self._simplex:
            towards = "b>a"  # one buffer; a wrong-way call fails but still concerns it
        else:
            towards = f"{end.end}>{peer(end.end)}" if sending else f"{peer(end.end)}>{end.end}"
        key = (end.pipe, towards)
        d = self._dirs.get(key)
        if d is None:
            d = self._dirs[key] = DirectionState()
        return d

    def _live_peers(self, end: EndState) -> set[int]:
        """The processes that could end a wait on `end`: the live holders of the other end."""
        return self._end(end.pipe, peer(end.end)).holders - self._exited
