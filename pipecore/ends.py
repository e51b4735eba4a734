"""Pipe ends: who holds each, who waits in it, and the deadlocks those waits form."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pipecore.matching import RECV_OPS, SEND_OPS, DirectionState


class EndStatus(StrEnum):
    """What an end is doing, as `Analysis.ends()` reports it."""

    IDLE = "idle"
    BLOCKED_RECV = "blocked_recv"  # in recv, recv_bytes(_into), or poll with a timeout
    BLOCKED_SEND = "blocked_send"
    CLOSED = "closed"  # every process that held it closed it or exited
    ERRORED = "errored"  # EOF, broken pipe or a bad message length made it unusable


@dataclass(slots=True)
class Blocked:
    """A call that began and has not returned yet."""

    pid: int
    process: str
    op: str
    since: int
    seq: int
    forever: bool  # False for a poll with a finite timeout: it returns by itself


@dataclass(slots=True)
class EndState:
    """One end of a pipe: who holds it, who waits in it, whether it still works."""

    pipe: str
    end: str
    holders: set[int] = field(default_factory=set)
    released: set[int] = field(default_factory=set)
    # (pid, whether the call sends) -> the call: a process's threads may wait in one end
    # at once, one sending and one receiving
    blocked: dict[tuple[int, bool], Blocked] = field(default_factory=dict)
    error: str | None = None
    kernel_queued: int | None = None

    def unblock(self, pid: int) -> None:
        """Forget the calls of `pid` waiting in this end (it closed the end, or exited)."""
        for key in [key for key in self.blocked if key[0] == pid]:
            del self.blocked[key]

    def state(self) -> EndStatus:
        if not self.holders and self.released:
            return EndStatus.CLOSED
        if self.error is not None:
            return EndStatus.ERRORED
        ops = {b.op for b in self.blocked.values()}
        if ops & SEND_OPS:
            return EndStatus.BLOCKED_SEND
        return EndStatus.BLOCKED_RECV if ops else EndStatus.IDLE

    def summary(self, pipe_name: str, incoming: DirectionState) -> dict[str, Any]:
        """The end as `Analysis.ends()` reports it; `incoming`: the direction towards it."""
        blocked = sorted(self.blocked.values(), key=lambda b: b.since)
        return {
            "pipe": self.pipe,
            "pipe_name": pipe_name,
            "end": self.end,
            "state": self.state().value,
            "pids": sorted(self.holders),
            "since": blocked[0].since if blocked else None,
            "blocked": [
                {"pid": b.pid, "process": b.process, "op": b.op, "since": b.since, "seq": b.seq}
                for b in blocked
            ],
            "queued": incoming.queued,
            "kernel_queued": self.kernel_queued,
            "peak_queued": incoming.peak,
            "capacity": incoming.capacity,
            "error": self.error,
        }


Stuck = tuple[EndState, Blocked]


def op_group(op: str) -> str:
    """The kind of call: "send", "recv", or the op itself (poll, close)."""
    return "send" if op in SEND_OPS else "recv" if op in RECV_OPS else op


def stuck_calls(
    ends: Iterable[EndState],
    exited: set[int],
    last_t: dict[int, int],
    limit: int,
    direction: Callable[[EndState, str], DirectionState],
) -> list[Stuck]:
    """The calls blocked for good: their process silent since `limit`, nothing coming.

    `direction(end, op)` is the direction the call sends into or receives from.
    """
    out = []
    for end in ends:
        if end.state() is EndStatus.CLOSED:
            continue
        for call in end.blocked.values():
            # The call's begin is an event of its process: silence covers the call too.
            if call.pid in exited or not call.forever:
                continue
            if last_t.get(call.pid, 0) >= limit:
                continue
            d = direction(end, call.op)
            # A blocked send is itself proof its buffer is full; a blocked receiver
            # counts only while nothing is queued for it.
            if call.op not in SEND_OPS and (d.backlog or d.sends):
                continue
            out.append((end, call))
    return out


def waiting_in_every_thread(stuck: list[Stuck], threads: dict[int, int]) -> list[Stuck]:
    """The stuck calls of processes whose every thread waits in one: a process with a
    thread that is not waiting in a pipe call (a timer, a worker) may still end the wait."""
    waits: dict[int, int] = {}
    for _, call in stuck:
        waits[call.pid] = waits.get(call.pid, 0) + 1
    return [(e, c) for e, c in stuck if waits[c.pid] >= threads.get(c.pid, 1)]


def deadlocks(stuck: list[Stuck], peers: Callable[[EndState], set[int]]) -> list[list[Stuck]]:
    """The stuck calls in groups of processes that wait only on each other, each sorted.

    `peers(end)` is the processes that could unblock a call on `end` (the live holders of
    the other end).
    """
    waits: dict[int, set[int]] = {}
    for end, call in stuck:
        waits.setdefault(call.pid, set()).update(peers(end))
    dead = {pid for pid, on in waits.items() if on}
    while drop := {pid for pid in dead if not waits[pid] <= dead}:
        dead -= drop
    return [
        sorted(
            [(e, c) for e, c in stuck if c.pid in group],
            key=lambda m: (m[0].pipe, m[0].end, m[1].pid),
        )
        for group in _groups(dead, waits)
    ]


def deadlock_verdict(
    members: list[Stuck], where: Callable[[str, str], str]
) -> tuple[str, list[dict[str, Any]]]:
    """A deadlock's message and its cycle: the calls of `members`, in their order."""
    parts = [f"{c.process} waits in {c.op} on {where(e.pipe, e.end)}" for e, c in members]
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
    return f"{', '.join(parts)}; {reason}", cycle


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
