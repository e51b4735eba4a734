"""FIFO matching of receives to sends, per pipe direction, and the corrupt frames it finds."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, Protocol

from pipecore.digest import LatencyDigest
from pipecore.reasons import reason

Event = dict[str, Any]

RECV_OPS = frozenset({"recv", "recv_bytes", "recv_bytes_into"})
SEND_OPS = frozenset({"send", "send_bytes"})
BAD_LENGTH = "bad message length"
OVERTAKE_WINDOW = 8
PENDING_LIMIT = 1024
# Frames sent and not yet received, per direction: the kernel buffer bounds them while the
# receiver is traced; past this (an untraced receiver) the oldest are forgotten.
SENDS_LIMIT = 100_000


def wire_size(nbytes: int) -> int:
    """Bytes a frame with `nbytes` of payload occupies in the pipe, length header included."""
    return nbytes + (12 if nbytes > 0x7FFFFFFF else 4)


def peer(end: str) -> str:
    """The other end of a pipe: "a" <-> "b"."""
    return "b" if end == "a" else "a"


def intact(send: Event, recv: Event) -> bool:
    """Whether a received frame equals the sent one, as far as both events tell."""
    sent, got = send.get("hash", _NONE), recv.get("hash", _NONE)
    if sent is not _NONE and got is not _NONE and sent != got:
        return False
    sent, got = send.get("nbytes", _NONE), recv.get("nbytes", _NONE)
    return sent is _NONE or got is _NONE or sent == got


_NONE = object()  # a field the event does not have


def _frame_args(side: str, ev: Event, failure: str | None) -> dict[str, Any]:
    """A frame of a corrupt verdict's `reason`: whose (`{side}_process`, `{side}_seq`) and
    what it carried: `{side}_error` (an error, or why the frame is bad), or its
    `{side}_hash` and `{side}_nbytes`."""
    args: dict[str, Any] = {f"{side}_process": ev.get("process", ""), f"{side}_seq": ev.get("seq")}
    if ev.get("phase") == "error" or failure not in (None, describe(ev)):
        args[f"{side}_error"] = failure or describe(ev)
    else:
        args[f"{side}_hash"] = ev.get("hash", "?")
        args[f"{side}_nbytes"] = ev.get("nbytes", "?")
    return args


def describe(ev: Event) -> str:
    """What an event carried: its error, or its frame's hash and size."""
    if ev.get("phase") == "error":
        return f"{ev.get('error_type', 'error')}: {ev.get('error', '')}"
    return f"hash {ev.get('hash', '?')}, {ev.get('nbytes', '?')} bytes"


@dataclass(slots=True)
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

    def summary(self) -> dict[str, Any]:
        """Messages, bytes, rates, latency, time blocked and queueing, as `Analysis.stats()`."""
        span_s = ((self.last_t or 0) - (self.first_t or 0)) / 1e9
        return {
            "messages": self.messages,
            "bytes": self.nbytes,
            "messages_per_s": self.messages / span_s if span_s else 0.0,
            "bytes_per_s": self.nbytes / span_s if span_s else 0.0,
            "latency_ns": self.latencies.percentiles(),
            "blocked_ns": dict(sorted(self.blocked_ns.items())),
            "queued": self.queued,
            "peak_queued": self.peak,
            "capacity": self.capacity,
            "corrupt": self.corrupt,
        }


class Emit(Protocol):
    """Where a verdict goes: `Analysis` keeps it and hands it to its caller."""

    def __call__(
        self, verdict: str, t: int, message: str, seqs: list[Any], **extra: Any
    ) -> None: ...


class FifoMatcher:
    """Pairs each receive with a send of its direction and reports the corrupt frames.

    Matching is FIFO per direction. A frame that differs from the head of its
    direction's queue may overtake queued frames of *other* processes (concurrent
    writers finish in any order); otherwise it is corrupt, the head is consumed
    with it, and then every queued frame whose bytes the receivers have already
    read (by byte count) is dropped, so matching resynchronises after a garbled
    stretch. A receive whose send event has not arrived yet waits for it; it is
    matched to it (annotated late, in place) or flagged by `expire`.
    """

    def __init__(self, names: dict[str, str], emit: Emit) -> None:
        # pipe id -> its name, shared with (and filled by) the analysis
        self._names = names
        self._emit = emit

    def send(self, ev: Event, d: DirectionState) -> None:
        nbytes, t = int(ev.get("nbytes", 0)), int(ev["t"])
        d.messages += 1
        d.nbytes += nbytes
        if d.first_t is None:
            d.first_t = t
        d.last_t = t
        d.sent_wire += nbytes + (12 if nbytes > 0x7FFFFFFF else 4)  # wire_size, inlined
        if d.pending:
            self._pair(ev, d.pending.popleft(), d, None, False)
        else:
            if len(d.sends) >= SENDS_LIMIT:
                d.sends.popleft()
            d.sends.append(ev)
        # d.queued, inlined: this runs for every frame
        queued = d.sent_wire - d.received_wire
        capacity = d.capacity
        if capacity is not None and capacity < queued:
            queued = capacity
        if queued > d.peak:
            d.peak = queued

    def expire(self, d: DirectionState, limit: int) -> None:
        """Flag the receives that waited since before `limit` for a send that never showed."""
        while d.pending and d.messages and int(d.pending[0]["t"]) < limit:
            self._corrupt(None, d.pending.popleft(), d, None)

    def receive(self, ev: Event, d: DirectionState, failure: str | None) -> None:
        sends = d.sends
        whole = False  # the frame is known to equal the send taken
        if not sends:
            send = None
        elif "hash" in ev:
            if intact(sends[0], ev):
                send = sends.popleft()
                whole = True
            else:
                send = self._overtaking(sends, ev)
        else:
            send = sends.popleft()
        if "nbytes" in ev:
            nbytes = int(ev["nbytes"])
            d.received_wire += nbytes + (12 if nbytes > 0x7FFFFFFF else 4)  # wire_size
        elif BAD_LENGTH in str(ev.get("error", "")):
            d.received_wire += 4  # only the length header was read
        elif send is not None:
            d.received_wire += wire_size(int(send.get("nbytes", 0)))
        if send is None:
            if failure is not None:
                self._corrupt(None, ev, d, failure)
            elif len(d.pending) < PENDING_LIMIT:
                d.pending.append(ev)
        elif whole and failure is None:
            # _pair's commonest case, inlined: an intact frame, received without error
            ev["match"] = send.get("seq")
            latency = int(ev["t"]) - int(send["t"])
            if latency < 0:
                latency = 0  # the send's end may be stamped late
            ev["latency_ns"] = latency
            d.latencies.add(latency)
        else:
            self._pair(send, ev, d, failure, whole)

    @staticmethod
    def _overtaking(sends: deque[Event], recv: Event) -> Event:
        """The send a frame unlike the head of the queue took: one of another process's
        frames may overtake it, never its own process's; else the head, corrupt."""
        for i, send in enumerate(islice(sends, OVERTAKE_WINDOW)):
            before = islice(sends, i)
            if "hash" in send and intact(send, recv):
                if all(b["pid"] != send["pid"] for b in before):
                    del sends[i]
                    return send
                break
        return sends.popleft()

    def _pair(
        self, send: Event, recv: Event, d: DirectionState, failure: str | None, whole: bool
    ) -> None:
        """Annotate `recv` with its send; `whole`: already known to be `intact`."""
        recv["match"] = send.get("seq")
        # the send's end may be stamped late
        latency = int(recv["t"]) - int(send["t"])
        if latency < 0:
            latency = 0
        recv["latency_ns"] = latency
        if failure is not None and "hash" in recv and (whole or intact(send, recv)):
            failure = None  # the frame arrived intact; it failed for another reason
        elif failure is None and not whole and not intact(send, recv):
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
        args: dict[str, Any] = {"pipe": self._names.get(pipe, pipe), "dir": f"{peer(end)}>{end}"}
        args |= _frame_args("got", recv, failure) | {"raced": d.raced}
        if send is not None:
            args |= _frame_args("sent", send, None)
        why = reason("corrupt" if send is not None else "corrupt.unsent", **args)
        self._emit("corrupt", int(recv["t"]), message, seqs, pipe=pipe, end=end, reason=why)
        # Drop the queued frames whose bytes the receivers have already consumed.
        total = sum(wire_size(int(s.get("nbytes", 0))) for s in d.sends)
        while d.sends and total > d.backlog:
            total -= wire_size(int(d.sends.popleft().get("nbytes", 0)))
