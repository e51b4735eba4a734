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

    def _flying(self, direction: tuple[str, str]) -> bool:
        return self._flying_count[direction] > 0

    def _must_wait(self, event: Event, now_ns: int) -> tuple[str, str] | None:
        if not _takes_frame(event):
            return None
        if now_ns < FINAL_NS and self._newest - int(event.get("t", 0)) > MAX_HOLD_NS:
            # stream time, not the clock: a lagging collector must not release early
            return None
        direction = _direction(event, sending=False)
        if self._received[direction] < self._sent[direction] or not self._flying(direction):
            return None
        return direction

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
        # Mostly time order is already causal: walk it, and merge only from the first
        # receive that must wait. The walk is `_must_wait` and `_account` inlined: it
        # sees every event of the run.
        newest = self._newest
        final = now_ns >= FINAL_NS
        sent = self._sent
        received = self._received
        flying = self._flying_count
        in_flight = self._in_flight
        for n, event in enumerate(ready):
            kind = event.get("kind")
            if kind == "call":
                op = event.get("op")
                if op in SEND_OPS:
                    key = (event.get("pid", 0), event.get("pipe"), event.get("end"))
                    previous = in_flight.pop(key, None)
                    if previous is not None:
                        flying[previous] -= 1
                    phase = event.get("phase")
                    if phase == "begin":
                        direction = _lane(key[1], key[2], True)
                        in_flight[key] = direction
                        flying[direction] += 1
                    elif phase == "end":
                        sent[_lane(key[1], key[2], True)] += 1
                elif op in RECV_OPS:
                    phase = event.get("phase")
                    if phase != "end" and not (
                        phase == "error" and event.get("error_type") == "BufferTooShort"
                    ):
                        continue
                    direction = _lane(event.get("pipe"), event.get("end"), False)
                    if (
                        received[direction] >= sent[direction]
                        and flying[direction] > 0
                        and (final or newest - int(event.get("t", 0)) <= MAX_HOLD_NS)
                    ):
                        out, held = self._merge(ready[n:], now_ns)
                        return ready[:n] + out, held
                    received[direction] += 1
            elif kind == "process" and event.get("op") == "exit":
                self._account(event)
        return ready, []

    def _merge(self, ready: list[Event], now_ns: int) -> tuple[list[Event], list[Event]]:
        queues: dict[int, list[Event]] = defaultdict(list)
        for event in ready:
            queues[int(event.get("pid", 0))].append(event)
        position = dict.fromkeys(queues, 0)
        heap = [(q[0]["t"], pid, q[0].get("pseq", 0)) for pid, q in queues.items()]
        heapq.heapify(heap)
        waiting: dict[tuple[str, str], list[int]] = defaultdict(list)
        out: list[Event] = []
        forced: set[int] = set()
        while heap or (now_ns >= FINAL_NS and waiting):
            if not heap:
                # final drain: the send will never come; let the oldest waiting receive go
                pid = min(
                    (p for pids in waiting.values() for p in pids),
                    key=lambda p: queues[p][position[p]]["t"],
                )
                for key, pids in list(waiting.items()):
                    if pid in pids:
                        pids.remove(pid)
                        if not pids:
                            del waiting[key]
                forced.add(pid)
                head = queues[pid][position[pid]]
                heapq.heappush(heap, (head["t"], pid, head.get("pseq", 0)))
            _, pid, _ = heapq.heappop(heap)
            event = queues[pid][position[pid]]
            direction = None if pid in forced else self._must_wait(event, now_ns)
            forced.discard(pid)
            if direction is not None:
                waiting[direction].append(pid)
                continue
            out.append(event)
            self._account(event)
            if event.get("kind") == "call" and event.get("op") in SEND_OPS:
                woken = waiting.pop(_direction(event, sending=True), [])
            elif event.get("kind") == "process" and event.get("op") == "exit":
                woken = [pid for pids in waiting.values() for pid in pids]  # its sends ended
                waiting.clear()
            else:
                woken = []
            for other in woken:
                head = queues[other][position[other]]
                heapq.heappush(heap, (head["t"], other, head.get("pseq", 0)))
            position[pid] += 1
            if position[pid] < len(queues[pid]):
                head = queues[pid][position[pid]]
                heapq.heappush(heap, (head["t"], pid, head.get("pseq", 0)))
        held = [
            e for pids in waiting.values() for pid in pids for e in queues[pid][position[pid] :]
        ]
        return out, held
