"""Pure analysis of a run's event stream: FIFO matching, end states, deadlock, statistics."""

from __future__ import annotations

import math
import signal
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum
from itertools import islice
from typing import Any

Event = dict[str, Any]

RECV_OPS = frozenset({"recv", "recv_bytes", "recv_bytes_into"})
SEND_OPS = frozenset({"send", "send_bytes"})
# Errors meaning the other end is gone: the end is unusable from then on.
EOF_MEANING = {
    "EOFError": "nothing more can arrive, every copy of the other end was closed",
    "BrokenPipeError": "nobody can receive, every copy of the other end was closed",
    "ConnectionResetError": "the other end was closed with data left unread",
    "ConnectionAbortedError": "the other end aborted the connection",
}
# What pickle.loads raises on garbage: a recv that read a garbled frame.
LOAD_ERRORS = frozenset(
    {"UnpicklingError", "ValueError", "KeyError", "IndexError", "TypeError", "OverflowError"}
    | {"MemoryError", "UnicodeDecodeError"}
)
BAD_LENGTH = "bad message length"
TRUNCATED = "Ran out of input"  # pickle's EOFError, not the connection's
OVERTAKE_WINDOW = 8
PENDING_LIMIT = 1024
MAX_KILLED = 1000
MAX_VERDICTS = 1000
# Frames sent and not yet received, per direction: the kernel buffer bounds them while the
# receiver is traced; past this (an untraced receiver) the oldest are forgotten.
SENDS_LIMIT = 100_000
# Latencies: exact up to EXACT_LATENCIES values per direction, then logarithmic buckets.
EXACT_LATENCIES = 4096
EXACT_BELOW = 1024
GROWTH = 1.019


def wire_size(nbytes: int) -> int:
    """Bytes a frame with `nbytes` of payload occupies in the pipe, length header included."""
    return nbytes + (12 if nbytes > 0x7FFFFFFF else 4)


def peer(end: str) -> str:
    """The other end of a pipe: "a" <-> "b"."""
    return "b" if end == "a" else "a"


def intact(send: Event, recv: Event) -> bool:
    """Whether a received frame equals the sent one, as far as both events tell."""
    return all(k not in send or k not in recv or send[k] == recv[k] for k in ("hash", "nbytes"))


def percentiles(values: list[int]) -> dict[str, int | None]:
    """Nearest-rank p50/p90/p99 and max of `values` (None when empty)."""
    ordered = sorted(values)

    def rank(p: int) -> int | None:
        return ordered[max(0, math.ceil(p * len(ordered) / 100) - 1)] if ordered else None

    return {"p50": rank(50), "p90": rank(90), "p99": rank(99), "max": rank(100)}


class LatencyDigest:
    """Latencies in bounded memory, for nearest-rank percentiles.

    The first EXACT_LATENCIES values are kept as they are and their percentiles are exact.
    Past that, values below EXACT_BELOW ns keep a bucket each and larger ones fall into
    buckets [GROWTH**i, GROWTH**(i+1)); a percentile then reports its bucket's middle,
    within 1% of the exact nearest-rank value ((GROWTH-1)/(GROWTH+1) = 0.94%, plus 0.5 ns
    of rounding). `max` stays exact. At most a few thousand buckets exist for any run.
    """

    def __init__(self) -> None:
        self.count = 0
        self.max: int | None = None
        self._exact: list[int] | None = []
        self._buckets: dict[int, int] = {}

    def add(self, value: int) -> None:
        self.count += 1
        self.max = value if self.max is None else max(self.max, value)
        if self._exact is None:
            self._count(value)
            return
        self._exact.append(value)
        if len(self._exact) > EXACT_LATENCIES:
            for held in self._exact:
                self._count(held)
            self._exact = None

    def percentiles(self) -> dict[str, int | None]:
        """Nearest-rank p50/p90/p99 and max (None when empty)."""
        if self._exact is not None:
            return percentiles(self._exact)
        keys = sorted(self._buckets)
        out: dict[str, int | None] = {}
        for p in (50, 90, 99):
            rank, seen = max(1, math.ceil(p * self.count / 100)), 0
            for key in keys:
                seen += self._buckets[key]
                if seen >= rank:
                    out[f"p{p}"] = min(_middle(key), self.max or 0)
                    break
        out["max"] = self.max
        return out

    def _count(self, value: int) -> None:
        key = _bucket(value)
        self._buckets[key] = self._buckets.get(key, 0) + 1


def _bucket(value: int) -> int:
    if value < EXACT_BELOW:
        return max(0, value)
    i = int(math.log(value) / math.log(GROWTH))
    # Floating point may land one bucket off at a boundary.
    while GROWTH**i > value:
        i -= 1
    while GROWTH ** (i + 1) <= value:
        i += 1
    return EXACT_BELOW + i


def _middle(key: int) -> int:
    if key < EXACT_BELOW:
        return key
    i = key - EXACT_BELOW
    return round(2 * GROWTH ** (i + 1) / (GROWTH + 1))


def describe(ev: Event) -> str:
    """What an event carried: its error, or its frame's hash and size."""
    if ev.get("phase") == "error":
        return f"{ev.get('error_type', 'error')}: {ev.get('error', '')}"
    return f"hash {ev.get('hash', '?')}, {ev.get('nbytes', '?')} bytes"


class EndStatus(StrEnum):
    """What an end is doing, as `Analysis.ends()` reports it."""

    IDLE = "idle"
    BLOCKED_RECV = "blocked_recv"  # in recv, recv_bytes(_into), or poll with a timeout
    BLOCKED_SEND = "blocked_send"
    CLOSED = "closed"  # every process that held it closed it or exited
    ERRORED = "errored"  # EOF, broken pipe or a bad message length made it unusable


@dataclass(frozen=True)
class Killed:
    """A process of the run that a signal ended; `signal` is "" when only its vanishing showed."""

    process: str
    pid: int
    signal: str
    message: str


@dataclass
class Blocked:
    """A call that began and has not returned yet."""

    pid: int
    process: str
    op: str
    since: int
    seq: int
    forever: bool  # False for a poll with a finite timeout: it returns by itself


@dataclass
class EndState:
    """One end of a pipe: who holds it, who waits in it, whether it still works."""

    pipe: str
    end: str
    holders: set[int] = field(default_factory=set)
    released: set[int] = field(default_factory=set)
    blocked: dict[int, Blocked] = field(default_factory=dict)
    error: str | None = None
    kernel_queued: int | None = None

    def state(self) -> EndStatus:
        if not self.holders and self.released:
            return EndStatus.CLOSED
        if self.error is not None:
            return EndStatus.ERRORED
        ops = {b.op for b in self.blocked.values()}
        if ops & SEND_OPS:
            return EndStatus.BLOCKED_SEND
        return EndStatus.BLOCKED_RECV if ops else EndStatus.IDLE


@dataclass
class DirectionState:
    """One direction of a pipe: frames in flight, byte accounting and statistics."""

    sends: deque[Event] = field(default_factory=deque)  # sent, not yet received, FIFO
    pending: deque[Event] = field(default_factory=deque)  # received before their send showed
    sent_wire: int = 0
    received_wire: int = 0
    peak: int = 0
    capacity: int | None = None
    messages: int = 0
    nbytes: int = 0
    first_t: int | None = None
    last_t: int | None = None
    latencies: LatencyDigest = field(default_factory=LatencyDigest)
    blocked_ns: dict[str, int] = field(default_factory=dict)
    corrupt: int = 0
    raced: bool = False  # two processes were inside the same kind of call on one end at once

    @property
    def backlog(self) -> int:
        """Frame bytes sent and not yet received, as far as the events tell."""
        return max(0, self.sent_wire - self.received_wire)

    @property
    def queued(self) -> int:
        """The backlog the kernel can hold: a large frame's send ends after most of it was read."""
        return self.backlog if self.capacity is None else min(self.backlog, self.capacity)


class Analysis:
    """Incremental, pure analysis of one run's merged event stream.

    `feed` takes events in `seq` order, annotates receiving events in place with
    `match`, `latency_ns` and `corrupt`, and returns new `verdict` events (without
    `seq`: the caller appends them to the stream). `tick(now_ns)` returns the
    time-based verdicts (deadlock, frames received that nobody sent).

    Matching is FIFO per direction. A frame that differs from the head of its
    direction's queue may overtake queued frames of *other* processes (concurrent
    writers finish in any order); otherwise it is corrupt, the head is consumed
    with it, and then every queued frame whose bytes the receivers have already
    read (by byte count) is dropped, so matching resynchronises after a garbled
    stretch. A receive whose send event has not arrived yet waits for it; it is
    matched to it (annotated late, in place) or flagged after `deadlock_after_ns`.
    """

    def __init__(self, run_id: str, deadlock_after_ns: int = 1_000_000_000) -> None:
        self.run_id = run_id
        self.deadlock_after_ns = deadlock_after_ns
        self._names: dict[str, str] = {}
        self._simplex: set[str] = set()
        self._ends: dict[str, EndState] = {}
        self._dirs: dict[tuple[str, str], DirectionState] = {}
        self._last_t: dict[int, int] = {}
        self._exited: set[int] = set()
        self._verdicts: list[Event] = []
        self._new: list[Event] = []
        self._reported: set[tuple[int, str, int]] = set()  # blocked calls named in a deadlock
        self._eofs: set[tuple[str, int, str]] = set()
        # Processes a signal ended, oldest first (the newest MAX_KILLED).
        self.killed: dict[int, Killed] = {}

    @property
    def verdicts(self) -> list[Event]:
        """The verdicts so far (the first MAX_VERDICTS), in the order they were made."""
        return list(self._verdicts)

    def feed(self, events: list[Event]) -> list[Event]:
        """Analyse `events` (in stream order); return the new verdict events."""
        for ev in events:
            pid = int(ev.get("pid", 0))
            if pid:
                self._last_t[pid] = max(self._last_t.get(pid, 0), int(ev["t"]))
            kind = ev.get("kind")
            if kind == "pipe":
                self._on_pipe(ev)
            elif kind == "attach":
                self._end(str(ev["pipe"]), str(ev["end"]), ev).holders.add(pid)
            elif kind == "call":
                self._on_call(ev)
            elif kind == "process" and ev.get("op") == "exit":
                self._on_exit(ev)
        return self._take_new()

    def tick(self, now_ns: int) -> list[Event]:
        """Verdicts that only time reveals: deadlocks and frames nobody sent."""
        limit = now_ns - self.deadlock_after_ns
        for d in self._dirs.values():
            while d.pending and d.messages and int(d.pending[0]["t"]) < limit:
                self._corrupt(None, d.pending.popleft(), d, None)
        stuck = self._stuck(limit)
        waits: dict[int, set[int]] = {}
        for end, call in stuck:
            holders = self._end(end.pipe, peer(end.end)).holders - self._exited
            waits.setdefault(call.pid, set()).update(holders)
        dead = {pid for pid, on in waits.items() if on}
        while drop := {pid for pid in dead if not waits[pid] <= dead}:
            dead -= drop
        for group in _groups(dead, waits):
            self._report_deadlock([(e, c) for e, c in stuck if c.pid in group], now_ns)
        return self._take_new()

    def ends(self) -> dict[str, dict[str, Any]]:
        """State of every end, keyed "<pipe>/<end>"; queued figures are towards that end."""
        out: dict[str, dict[str, Any]] = {}
        for key, end in sorted(self._ends.items()):
            incoming = self._dirs.get((end.pipe, f"{peer(end.end)}>{end.end}"), DirectionState())
            blocked = sorted(end.blocked.values(), key=lambda b: b.since)
            out[key] = {
                "pipe": end.pipe,
                "pipe_name": self._names.get(end.pipe, end.pipe),
                "end": end.end,
                "state": end.state().value,
                "pids": sorted(end.holders),
                "since": blocked[0].since if blocked else None,
                "blocked": [
                    {"pid": b.pid, "process": b.process, "op": b.op, "since": b.since, "seq": b.seq}
                    for b in blocked
                ],
                "queued": incoming.queued,
                "kernel_queued": end.kernel_queued,
                "peak_queued": incoming.peak,
                "capacity": incoming.capacity,
                "error": end.error,
            }
        return out

    def stats(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Per pipe and direction: messages, bytes, rates, latency, time blocked, queueing."""
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for (pipe, direction), d in sorted(self._dirs.items()):
            span_s = ((d.last_t or 0) - (d.first_t or 0)) / 1e9
            out.setdefault(pipe, {})[direction] = {
                "messages": d.messages,
                "bytes": d.nbytes,
                "messages_per_s": d.messages / span_s if span_s else 0.0,
                "bytes_per_s": d.nbytes / span_s if span_s else 0.0,
                "latency_ns": d.latencies.percentiles(),
                "blocked_ns": dict(sorted(d.blocked_ns.items())),
                "queued": d.queued,
                "peak_queued": d.peak,
                "capacity": d.capacity,
                "corrupt": d.corrupt,
            }
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
        for end in ("a", "b"):
            self._end(pipe, end)
        # Pipe(duplex=False): a reads, b writes.
        for direction in ("a>b", "b>a") if ev.get("duplex", True) else ("b>a",):
            d = self._dirs.setdefault((pipe, direction), DirectionState())
            if "capacity" in ev:
                d.capacity = int(ev["capacity"])

    def _on_exit(self, ev: Event) -> None:
        pid, code = int(ev["pid"]), int(ev.get("exitcode") or 0)
        self._exited.add(pid)
        for end in self._ends.values():
            end.blocked.pop(pid, None)
            if pid in end.holders:
                end.holders.discard(pid)
                end.released.add(pid)
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
        self._emit("killed", int(ev["t"]), message, [ev.get("seq")])

    def _on_call(self, ev: Event) -> None:
        if ev.get("end") not in ("a", "b"):
            return  # the collector could not tell which end: nothing to match it with
        end = self._end(str(ev["pipe"]), str(ev["end"]), ev)
        pid, op, phase = int(ev["pid"]), str(ev["op"]), str(ev["phase"])
        if op == "close":
            end.holders.discard(pid)
            end.released.add(pid)
            end.blocked.pop(pid, None)
            return
        end.holders.add(pid)
        end.released.discard(pid)
        d = self._dir(end, op)
        if "capacity" in ev:
            d.capacity = int(ev["capacity"])
        if phase == "begin":
            self._on_begin(ev, end, d)
            return
        began = end.blocked.pop(pid, None)
        if began is not None:
            d.blocked_ns[op] = d.blocked_ns.get(op, 0) + int(ev["t"]) - began.since
        if phase == "end" and op in SEND_OPS:
            self._on_send(ev, d)
        elif phase == "end" and op in RECV_OPS:
            self._receive(ev, d, None)
        elif phase == "error":
            self._on_error(ev, end, d)

    def _on_begin(self, ev: Event, end: EndState, d: DirectionState) -> None:
        pid, op, timeout = int(ev["pid"]), str(ev["op"]), ev.get("timeout")
        if int(ev.get("queued", -1)) >= 0:  # -1: the reading failed
            end.kernel_queued = int(ev["queued"])
            d.peak = max(d.peak, end.kernel_queued)
        if timeout is not None and math.isnan(timeout):
            timeout = None  # poll(None) as the ring records it
        if op == "poll" and timeout is not None and timeout <= 0:
            return  # poll(0) only looks
        group = _op_group(op)
        if group != "poll" and any(
            p != pid and _op_group(b.op) == group for p, b in end.blocked.items()
        ):
            d.raced = True
        process, t, seq = str(ev.get("process", "")), int(ev["t"]), int(ev.get("seq", 0))
        end.blocked[pid] = Blocked(
            pid, process, op, t, seq, forever=op != "poll" or timeout is None
        )

    def _on_send(self, ev: Event, d: DirectionState) -> None:
        nbytes, t = int(ev.get("nbytes", 0)), int(ev["t"])
        d.messages += 1
        d.nbytes += nbytes
        d.first_t = t if d.first_t is None else d.first_t
        d.last_t = t
        d.sent_wire += wire_size(nbytes)
        if d.pending:
            self._pair(ev, d.pending.popleft(), d, None)
        else:
            if len(d.sends) >= SENDS_LIMIT:
                d.sends.popleft()
            d.sends.append(ev)
        d.peak = max(d.peak, d.queued)

    def _on_error(self, ev: Event, end: EndState, d: DirectionState) -> None:
        etype, text, op = str(ev.get("error_type", "")), str(ev.get("error", "")), ev["op"]
        if etype in EOF_MEANING and TRUNCATED not in text:
            end.error = f"{etype}: {text}" if text else etype
            self._eof(ev, etype)
        elif op not in RECV_OPS:
            return
        elif etype == "BufferTooShort":
            self._receive(ev, d, None)  # the frame arrived whole; only the buffer was small
        elif BAD_LENGTH in text:
            end.error = f"{etype}: {text}"
            # On a clean stream this is recv_bytes(maxlength) meeting a longer, intact frame.
            garbled = d.raced or d.corrupt > 0 or not d.sends
            self._receive(ev, d, describe(ev) if garbled else None)
        elif op == "recv" and (etype in LOAD_ERRORS or TRUNCATED in text):
            self._receive(ev, d, describe(ev))

    # -- matching -------------------------------------------------------------

    def _receive(self, ev: Event, d: DirectionState, failure: str | None) -> None:
        send = self._take(d, ev)
        if "nbytes" in ev:
            d.received_wire += wire_size(int(ev["nbytes"]))
        elif BAD_LENGTH in str(ev.get("error", "")):
            d.received_wire += 4  # only the length header was read
        elif send is not None:
            d.received_wire += wire_size(int(send.get("nbytes", 0)))
        if send is not None:
            self._pair(send, ev, d, failure)
        elif failure is not None:
            self._corrupt(None, ev, d, failure)
        elif len(d.pending) < PENDING_LIMIT:
            d.pending.append(ev)

    def _take(self, d: DirectionState, recv: Event) -> Event | None:
        if not d.sends:
            return None
        if "hash" in recv and not intact(d.sends[0], recv):
            # A frame may overtake frames of other processes, never its own process's.
            for i, send in enumerate(islice(d.sends, OVERTAKE_WINDOW)):
                before = islice(d.sends, i)
                if "hash" in send and intact(send, recv):
                    if all(b["pid"] != send["pid"] for b in before):
                        del d.sends[i]
                        return send
                    break
        return d.sends.popleft()

    def _pair(self, send: Event, recv: Event, d: DirectionState, failure: str | None) -> None:
        recv["match"] = send.get("seq")
        latency = max(0, int(recv["t"]) - int(send["t"]))  # the send's end may be stamped late
        recv["latency_ns"] = latency
        if failure is not None and "hash" in recv and intact(send, recv):
            failure = None  # the frame arrived intact; it failed for another reason
        elif failure is None and not intact(send, recv):
            failure = describe(recv)
        if failure is None:
            d.latencies.add(latency)
        else:
            self._corrupt(send, recv, d, failure)

    def _corrupt(
        self, send: Event | None, recv: Event, d: DirectionState, failure: str | None
    ) -> None:
        pipe, end = str(recv["pipe"]), str(recv["end"])
        got = f"{recv.get('process', '')} seq {recv.get('seq')} ({failure or describe(recv)})"
        where = f"corrupt frame on pipe {self._names.get(pipe, pipe)} {peer(end)}>{end}"
        if send is None:
            message = f"{where}: got {got}, but no frame was sent towards end {end}"
        else:
            expected = f"{send.get('process', '')} seq {send.get('seq')} ({describe(send)})"
            message = f"{where}: expected {expected}, got {got}"
        if d.raced:
            message += "; processes used one end at the same time, so their frames interleaved"
        recv["corrupt"] = message
        d.corrupt += 1
        seqs = [s.get("seq") for s in (send, recv) if s is not None]
        self._emit("corrupt", int(recv["t"]), message, seqs, pipe=pipe, end=end)
        # Drop the queued frames whose bytes the receivers have already consumed.
        total = sum(wire_size(int(s.get("nbytes", 0))) for s in d.sends)
        while d.sends and total > d.backlog:
            total -= wire_size(int(d.sends.popleft().get("nbytes", 0)))

    # -- verdicts -------------------------------------------------------------

    def _eof(self, ev: Event, etype: str) -> None:
        pipe, end, pid = str(ev["pipe"]), str(ev["end"]), int(ev["pid"])
        key = (f"{pipe}/{end}", pid, etype)
        if key in self._eofs:
            return
        self._eofs.add(key)
        message = (
            f"{ev.get('process', '')} got {etype} in {ev['op']} on "
            f"{self._where(pipe, end)}: {EOF_MEANING[etype]}"
        )
        self._emit("eof", int(ev["t"]), message, [ev.get("seq")], pipe=pipe, end=end)

    def _stuck(self, limit: int) -> list[tuple[EndState, Blocked]]:
        out = []
        for end in self._ends.values():
            if end.state() is EndStatus.CLOSED:
                continue
            for call in end.blocked.values():
                # The call's begin is an event of its process: silence covers the call too.
                if call.pid in self._exited or not call.forever:
                    continue
                if self._last_t.get(call.pid, 0) >= limit:
                    continue
                d = self._dir(end, call.op)
                # A blocked send is itself proof its buffer is full; a blocked receiver
                # counts only while nothing is queued for it.
                if call.op not in SEND_OPS and (d.backlog or d.sends):
                    continue
                out.append((end, call))
        return out

    def _report_deadlock(self, members: list[tuple[EndState, Blocked]], now_ns: int) -> None:
        members.sort(key=lambda m: (m[0].pipe, m[0].end, m[1].pid))
        calls = {(c.pid, f"{e.pipe}/{e.end}", c.seq) for e, c in members}
        if calls <= self._reported:
            return
        self._reported |= calls
        parts = [f"{c.process} waits in {c.op} on {self._where(e.pipe, e.end)}" for e, c in members]
        sending = {c.op in SEND_OPS for _, c in members}
        if sending == {False}:
            either = "either direction" if len(members) == 2 else "any of these directions"
            reason = f"nothing is queued in {either}"
        elif sending == {True}:
            reason = "the buffers they send into are full and nobody receives"
        else:
            reason = "nothing is queued for the receivers and the senders' buffers are full"
        cycle = [
            {"pid": c.pid, "process": c.process, "pipe": e.pipe, "end": e.end, "op": c.op}
            for e, c in members
        ]
        message = f"deadlock: {', '.join(parts)}; {reason}"
        self._emit("deadlock", now_ns, message, [c.seq for _, c in members], cycle=cycle)

    def _emit(self, verdict: str, t: int, message: str, seqs: list[Any], **extra: Any) -> None:
        ev: Event = {"run": self.run_id, "kind": "verdict", "t": t, "pid": 0, "process": ""}
        ev.update(verdict=verdict, message=message, events=[s for s in seqs if s is not None])
        ev.update(extra)
        if len(self._verdicts) < MAX_VERDICTS:
            self._verdicts.append(ev)
        self._new.append(ev)

    # -- lookups --------------------------------------------------------------

    def _take_new(self) -> list[Event]:
        new, self._new = self._new, []
        return new

    def _end(self, pipe: str, end: str, ev: Event | None = None) -> EndState:
        if ev is not None and ev.get("pipe_name"):
            self._names.setdefault(pipe, str(ev["pipe_name"]))
        return self._ends.setdefault(f"{pipe}/{end}", EndState(pipe, end))

    def _dir(self, end: EndState, op: str) -> DirectionState:
        towards = f"{end.end}>{peer(end.end)}" if op in SEND_OPS else f"{peer(end.end)}>{end.end}"
        if end.pipe in self._simplex:
            towards = "b>a"  # one buffer; a wrong-way call fails but still concerns it
        return self._dirs.setdefault((end.pipe, towards), DirectionState())

    def _where(self, pipe: str, end: str) -> str:
        return f"pipe {self._names.get(pipe, pipe)} end {end}"


def _op_group(op: str) -> str:
    return "send" if op in SEND_OPS else "recv" if op in RECV_OPS else op


def _groups(dead: set[int], waits: dict[int, set[int]]) -> list[set[int]]:
    """Split the deadlocked processes into groups that wait on each other."""
    groups: list[set[int]] = []
    seen: set[int] = set()
    for start in sorted(dead):
        if start in seen:
            continue
        group, todo = {start}, [start]
        while todo:
            pid = todo.pop()
            near = (waits[pid] | {p for p in dead if pid in waits[p]}) & dead
            todo.extend(near - group)
            group |= near
        seen |= group
        groups.append(group)
    return groups
