"""Causal order for the merged stream: a frame is never received before it was sent.

Timestamps alone can put a receive before its send: the sender stamps its `end`
after the write returns, and the receiver may wake, read and stamp first. The
merge keeps time order except that a receiving `end` waits while its direction
has a send of another process in flight and no completed send left to match; it then
follows that send's `end` (and the rest of the receiver's events follow it). A
process's own events keep their order: a thread may receive what another thread of
its process is still sending, and that receive does not wait.

A wait never reorders one lane's sends, nor its receives: when another process sends
into a lane that the waiting process's set-aside events also send into (or receives
from one they also receive from), those go out first, the receive before the send it
waited for. Otherwise a send stamped late by a busy thread
(the GIL) could put one worker's frame behind another's on a shared result pipe, and
FIFO matching would pair frames wrongly; a receive ahead of its send is matched when
the send comes (pipecore.matching).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from typing import Any

Event = dict[str, Any]

SEND_OPS = frozenset({"send", "send_bytes"})
RECV_OPS = frozenset({"recv", "recv_bytes", "recv_bytes_into"})
PEER = {"a": "b", "b": "a"}
# a receive waits no more once the stream has moved this far past it (a sender stuck
# between its write and its record)
MAX_HOLD_NS = 1_000_000_000
# `now` of the final drain: nothing more will arrive, so the batch is ordered causally
# as far as it can be and nothing is held back
FINAL_NS = 1 << 62


def _direction(pipe: object, end: object, sending: bool) -> tuple[str, str]:
    name = str(end)
    peer = PEER.get(name, "?")
    return (str(pipe), f"{name}>{peer}" if sending else f"{peer}>{name}")


def _order(event: Event) -> tuple[int, int, int]:
    return (event["t"], event.get("pid", 0), event.get("pseq", 0))


class _Lane:
    """One direction of a pipe: its frames sent, received, and sends in flight."""

    __slots__ = ("received", "senders", "sent")

    def __init__(self) -> None:
        self.sent = 0
        self.received = 0
        self.senders: dict[object, int] = {}  # pid -> its sends in flight (none: absent)

    def fly(self, pid: object) -> None:
        """A send of `pid` has begun."""
        self.senders[pid] = self.senders.get(pid, 0) + 1

    def land(self, pid: object) -> None:
        """One send of `pid` in flight has ended (or its process has)."""
        left = self.senders.get(pid, 0) - 1
        if left > 0:
            self.senders[pid] = left
        else:
            self.senders.pop(pid, None)

    def flying_besides(self, pid: object) -> bool:
        """Whether a send of a process other than `pid` is in flight."""
        return len(self.senders) > (pid in self.senders)


class CausalOrder:
    """Releases time-ordered events so that every receive follows the send it took."""

    def __init__(self) -> None:
        self._lanes: dict[tuple[str, str], _Lane] = {}
        # The lane a call sends into or receives from, by its event's (pipe, end).
        self._sending: dict[tuple[object, object], _Lane] = {}
        self._receiving: dict[tuple[object, object], _Lane] = {}
        # sends begun and not ended: (pid, pipe, end) -> their lane
        self._in_flight: dict[tuple[object, object, object], _Lane] = {}
        self._newest = 0  # the newest `t` offered so far
        # (lane, sending) -> the processes whose set-aside events send into (or receive
        # from) that lane, within one release
        self._held: dict[tuple[_Lane, bool], set[object]] = {}

    def _lane(self, pipe: object, end: object, sending: bool) -> _Lane:
        direction = _direction(pipe, end, sending)
        lane = self._lanes.get(direction)
        if lane is None:
            lane = self._lanes[direction] = _Lane()
        (self._sending if sending else self._receiving)[(pipe, end)] = lane
        return lane

    def _use_of(self, event: Event) -> tuple[_Lane, bool] | None:
        """The lane a call sends into or receives from, and whether it sends; None for
        other events."""
        op = event.get("op")
        sending = op in SEND_OPS
        if not sending and op not in RECV_OPS:
            return None
        key = (event.get("pipe"), event.get("end"))
        lane = (self._sending if sending else self._receiving).get(key)
        return (lane or self._lane(key[0], key[1], sending)), sending

    def _set_aside(
        self,
        deferred: dict[object, list[Event]],
        pid: object,
        event: Event,
        use: tuple[_Lane, bool] | None,
    ) -> None:
        """Set `event` aside for `pid`; `use`: the lane it sends into or receives from
        (`_use_of`), which its process now holds."""
        deferred.setdefault(pid, []).append(event)
        if use is not None:
            self._held.setdefault(use, set()).add(pid)

    def _take_back(self, deferred: dict[object, list[Event]], pid: object) -> list[Event]:
        """The events set aside for `pid`, no longer held on their lanes."""
        for use, pids in list(self._held.items()):
            pids.discard(pid)
            if not pids:
                del self._held[use]
        return deferred.pop(pid)

    def release(self, ready: list[Event], now_ns: int) -> tuple[list[Event], list[Event]]:
        """Order `ready` (sorted by t, pid, pseq); return (released, held back).

        Held events belong to processes whose next receive waits for a send not yet
        seen; the caller offers them again, with newer events, at the next drain.
        """
        if ready:
            self._newest = max(self._newest, int(ready[-1].get("t", 0)))
        out: list[Event] = []
        deferred: dict[object, list[Event]] = {}
        self._held = {}
        waiting: dict[_Lane, list[object]] = {}
        self._walk(ready, now_ns, out, deferred, waiting, None)
        while waiting and now_ns >= FINAL_NS:
            # The final drain: the send will never come; let the oldest waiting receive go.
            pid = min(
                (p for pids in waiting.values() for p in pids), key=lambda p: deferred[p][0]["t"]
            )
            _unwait(waiting, pid)
            self._walk(self._take_back(deferred, pid), now_ns, out, deferred, waiting, pid)
        return out, [event for events in deferred.values() for event in events]

    def _walk(
        self,
        events: Iterable[Event],
        now_ns: int,
        out: list[Event],
        deferred: dict[object, list[Event]],
        waiting: dict[_Lane, list[object]],
        forced: object,
    ) -> None:
        """Release `events` in their order, except that a process whose receive must wait
        for its send is set aside (with everything after it) until that send passes.

        Time order is mostly causal already, so this is one walk: the events set aside
        all precede the one that wakes them, and follow it at once, as a merge by time
        would have them. It sees every event, so it keeps the lanes' counts inline.
        """
        newest = self._newest
        final = now_ns >= FINAL_NS
        in_flight = self._in_flight
        sending = self._sending
        receiving = self._receiving
        for event in events:
            pid = event.get("pid", 0)
            if deferred:
                # Worked out once for both: about a third of a pinned ping-pong's events
                # come while a receive waits.
                use = self._use_of(event) if event.get("kind") == "call" else None
                if use is not None and self._held:
                    self._let_others_go(use, pid, now_ns, out, deferred, waiting)
                if pid in deferred:
                    self._set_aside(deferred, pid, event, use)
                    continue
            kind = event.get("kind")
            woken: list[object] | None = None
            if kind == "call":
                op = event.get("op")
                if op in SEND_OPS:
                    pipe, end = event.get("pipe"), event.get("end")
                    key = (pid, pipe, end)
                    # A send in flight of this process and end is in this same lane.
                    lane = in_flight.pop(key, None)
                    if lane is not None:
                        lane.land(pid)
                    else:
                        lane = sending.get((pipe, end)) or self._lane(pipe, end, True)
                    phase = event.get("phase")
                    if phase == "begin":
                        in_flight[key] = lane
                        lane.fly(pid)
                    elif phase == "end":
                        lane.sent += 1
                    if waiting:
                        woken = waiting.pop(lane, None)
                elif op in RECV_OPS:
                    phase = event.get("phase")
                    if phase == "end" or (
                        phase == "error" and event.get("error_type") == "BufferTooShort"
                    ):
                        pipe, end = event.get("pipe"), event.get("end")
                        lane = receiving.get((pipe, end)) or self._lane(pipe, end, False)
                        if pid == forced:
                            forced = None
                        elif (
                            lane.received >= lane.sent
                            # this process's own events keep their order
                            and lane.flying_besides(pid)
                            and (final or newest - int(event.get("t", 0)) <= MAX_HOLD_NS)
                        ):
                            self._set_aside(deferred, pid, event, (lane, False))
                            waiting.setdefault(lane, []).append(pid)
                            continue
                        lane.received += 1
            elif kind == "process" and event.get("op") == "exit":
                for key in [k for k in in_flight if k[0] == pid]:
                    in_flight.pop(key).land(pid)
                if waiting:
                    # Its sends in flight ended with it: every waiting receive looks again.
                    woken = [p for pids in waiting.values() for p in pids]
                    waiting.clear()
            out.append(event)
            if woken:
                lists = [self._take_back(deferred, p) for p in woken]
                again = lists[0] if len(lists) == 1 else heapq.merge(*lists, key=_order)
                self._walk(again, now_ns, out, deferred, waiting, None)

    def _let_others_go(
        self,
        use: tuple[_Lane, bool],
        pid: object,
        now_ns: int,
        out: list[Event],
        deferred: dict[object, list[Event]],
        waiting: dict[_Lane, list[object]],
    ) -> None:
        """Release, before a call of `pid` that uses a lane as `use` says, the set-aside
        events of other processes that use it the same way: their waiting receive goes
        ahead of its send, and the lane's sends (or receives) keep their time order."""
        holders = self._held.get(use)
        if not holders or (len(holders) == 1 and pid in holders):
            return
        for other in sorted((p for p in holders if p != pid), key=lambda p: deferred[p][0]["t"]):
            if other not in deferred:
                continue  # released meanwhile, with another's events
            _unwait(waiting, other)
            self._walk(self._take_back(deferred, other), now_ns, out, deferred, waiting, other)


def _unwait(waiting: dict[_Lane, list[object]], pid: object) -> None:
    """`pid` waits for no lane any more."""
    for lane, pids in list(waiting.items()):
        if pid in pids:
            pids.remove(pid)
            if not pids:
                del waiting[lane]
