"""Causal order for the merged stream: a frame is never received before it was sent.

Timestamps alone can put a receive before its send: the sender stamps its `end`
after the write returns, and the receiver may wake, read and stamp first. The
merge keeps time order except that a receiving `end` waits while its direction
has a send in flight and no completed send left to match; it then follows that
send's `end` (and the rest of the receiver's events follow it).
"""

from __future__ import annotations

import functools
import heapq
from collections import defaultdict
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


@functools.lru_cache(maxsize=4096)
def _lane(pipe: object, end: object, sending: bool) -> tuple[str, str]:
    name = str(end)
    peer = PEER.get(name, "?")
    return (str(pipe), f"{name}>{peer}" if sending else f"{peer}>{name}")


def _direction(event: Event, sending: bool) -> tuple[str, str]:
    return _lane(event.get("pipe"), event.get("end"), sending)


def _order(event: Event) -> tuple[int, int, int]:
    return (event["t"], event.get("pid", 0), event.get("pseq", 0))


def _takes_frame(event: Event) -> bool:
    if event.get("kind") != "call" or event.get("op") not in RECV_OPS:
        return False
    phase = event.get("phase")
    return phase == "end" or (phase == "error" and event.get("error_type") == "BufferTooShort")


class CausalOrder:
    """Releases time-ordered events so that every receive follows the send it took."""

    def __init__(self) -> None:
        self._sent: defaultdict[tuple[str, str], int] = defaultdict(int)
        self._received: defaultdict[tuple[str, str], int] = defaultdict(int)
        # sends begun and not ended: (pid, pipe, end) -> direction; and their count
        # per direction
        self._in_flight: dict[tuple[object, object, object], tuple[str, str]] = {}
        self._flying_count: defaultdict[tuple[str, str], int] = defaultdict(int)
        self._newest = 0  # the newest `t` offered so far

    def _account(self, event: Event) -> None:
        kind, op = event.get("kind"), event.get("op")
        if kind == "call":
            if op in SEND_OPS:
                self._account_send(event)
            elif op in RECV_OPS and _takes_frame(event):
                self._received[_direction(event, sending=False)] += 1
        elif kind == "process" and op == "exit":
            pid = event.get("pid", 0)
            for key in [k for k in self._in_flight if k[0] == pid]:
                self._flying_count[self._in_flight.pop(key)] -= 1

    def _account_send(self, event: Event) -> None:
        key = (event.get("pid", 0), event.get("pipe"), event.get("end"))
        phase = event.get("phase")
        previous = self._in_flight.pop(key, None)
        if previous is not None:
            self._flying_count[previous] -= 1
        if phase == "begin":
            direction = _direction(event, sending=True)
            self._in_flight[key] = direction
            self._flying_count[direction] += 1
        elif phase == "end":
            self._sent[_direction(event, sending=True)] += 1

    def release(self, ready: list[Event], now_ns: int) -> tuple[list[Event], list[Event]]:
        """Order `ready` (sorted by t, pid, pseq); return (released, held back).

        Held events belong to processes whose next receive waits for a send not yet
        seen; the caller offers them again, with newer events, at the next drain.
        """
        if ready:
            self._newest = max(self._newest, int(ready[-1].get("t", 0)))
        out: list[Event] = []
        deferred: dict[object, list[Event]] = {}
        waiting: dict[tuple[str, str], list[object]] = {}
        self._walk(ready, now_ns, out, deferred, waiting, None)
        while waiting and now_ns >= FINAL_NS:
            # The final drain: the send will never come; let the oldest waiting receive go.
            pid = min(
                (p for pids in waiting.values() for p in pids), key=lambda p: deferred[p][0]["t"]
            )
            for key, pids in list(waiting.items()):
                if pid in pids:
                    pids.remove(pid)
                    if not pids:
                        del waiting[key]
            self._walk(deferred.pop(pid), now_ns, out, deferred, waiting, pid)
        return out, [event for events in deferred.values() for event in events]

    def _walk(
        self,
        events: Iterable[Event],
        now_ns: int,
        out: list[Event],
        deferred: dict[object, list[Event]],
        waiting: dict[tuple[str, str], list[object]],
        forced: object,
    ) -> None:
        """Release `events` in their order, except that a process whose receive must wait
        for its send is set aside (with everything after it) until that send passes.

        Time order is mostly causal already, so this is one walk: the events set aside
        all precede the one that wakes them, and follow it at once, as a merge by time
        would have them. `_must_wait` and `_account` are inlined: it sees every event.
        """
        newest = self._newest
        final = now_ns >= FINAL_NS
        sent = self._sent
        received = self._received
        flying = self._flying_count
        in_flight = self._in_flight
        for event in events:
            pid = event.get("pid", 0)
            if deferred:
                bucket = deferred.get(pid)
                if bucket is not None:
                    bucket.append(event)
                    continue
            kind = event.get("kind")
            woken: list[object] | None = None
            if kind == "call":
                op = event.get("op")
                if op in SEND_OPS:
                    key = (pid, event.get("pipe"), event.get("end"))
                    previous = in_flight.pop(key, None)
                    if previous is not None:
                        flying[previous] -= 1
                    phase = event.get("phase")
                    direction = _lane(key[1], key[2], True)
                    if phase == "begin":
                        in_flight[key] = direction
                        flying[direction] += 1
                    elif phase == "end":
                        sent[direction] += 1
                    if waiting:
                        woken = waiting.pop(direction, None)
                elif op in RECV_OPS:
                    phase = event.get("phase")
                    if phase == "end" or (
                        phase == "error" and event.get("error_type") == "BufferTooShort"
                    ):
                        direction = _lane(event.get("pipe"), event.get("end"), False)
                        if pid == forced:
                            forced = None
                        elif (
                            received[direction] >= sent[direction]
                            and flying[direction] > 0
                            and (final or newest - int(event.get("t", 0)) <= MAX_HOLD_NS)
                        ):
                            deferred[pid] = [event]
                            waiting.setdefault(direction, []).append(pid)
                            continue
                        received[direction] += 1
            elif kind == "process" and event.get("op") == "exit":
                self._account(event)
                if waiting:
                    # Its sends in flight ended with it: every waiting receive looks again.
                    woken = [p for pids in waiting.values() for p in pids]
                    waiting.clear()
            out.append(event)
            if woken:
                lists = [deferred.pop(p) for p in woken]
                again = lists[0] if len(lists) == 1 else heapq.merge(*lists, key=_order)
                self._walk(again, now_ns, out, deferred, waiting, None)
