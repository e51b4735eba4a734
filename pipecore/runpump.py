"""RunPump: a run's collector and analysis, one message per drain (see `pipecore.collectmain`)."""

from __future__ import annotations

import time
from bisect import bisect_left, bisect_right
from typing import Any

from pipecore import collectwire, runprocs
from pipecore.analysis import Analysis
from pipecore.baserun import MAX_UNSETTLED
from pipecore.collector import Collector, drain_last
from pipecore.eventpump import BUSY_EVENTS
from pipecore.parts import PART_EVENTS, array_check, deflated, encode_events, is_kept

Event = dict[str, Any]
# a drain this large means the collector is behind the run's processes
LAG_EVENTS = 5000
# A drain reads at most this much of each ring, so that the first of its events is sent
# before long, and the writer gets its space back a piece at a time.
DRAIN_BYTES = 32 * 1024
DRAIN_EVENTS = 1500
# What a ring may hold unread: about what the collector drains in this time.
LAG_BOUND_NS = 10_000_000
# The analysis' ends and statistics travel at most this often while events flow.
ANALYSIS_EVERY_NS = 100_000_000
# Receives that take a frame. The analysis annotates each with `match`, `latency_ns` or
# `corrupt` once it has matched it (tested key by key: cheaper than intersecting sets).
RECEIVING_OPS = frozenset({"recv", "recv_bytes", "recv_bytes_into"})


class RunPump:
    """A run's collector and analysis: each pump() drains once and makes one message."""

    def __init__(self, run_dir: str, run_id: str, first_seq: int, deadlock_after_ns: int):
        self.collector = Collector(run_dir, run_id)
        self.analysis = Analysis(run_id, deadlock_after_ns)
        # The collector numbers the events it drains, the pump the verdicts after them.
        self.collector.seq = self._seq = first_seq - 1
        # Receives sent before the analysis matched them, to send again once it has.
        self._unsettled: list[Event] = []
        self._killed_sent: set[int] = set()
        self._analysis_at = 0
        self._analysis_changed = False
        self.collector.bound_lag(LAG_BOUND_NS)
        self.busy = False  # the last drain left work: drain again at once

    def pump(self, *, final: bool) -> list[bytes] | None:
        """The next message, or None when nothing happened since the last one."""
        start = time.monotonic_ns()
        try:
            return self._pump(final)
        finally:
            self.collector.pace(time.monotonic_ns() - start)

    def _pump(self, final: bool) -> list[bytes] | None:
        collector = self.collector
        events = (
            drain_last(collector)
            if final
            else collector.drain(budget=DRAIN_BYTES, most=DRAIN_EVENTS)
        )
        # numbered by the collector before the analysis, whose `match` names these numbers
        self._seq = collector.seq
        verdicts = self.analysis.feed(events)
        # Time-based verdicts only while the collector keeps up: when it lags, the
        # newest events are old and every process would look silent.
        waiting = collector.writers_waiting()
        self.busy = collector.behind or waiting or len(events) >= BUSY_EVENTS
        lagging = collector.behind or waiting or len(events) >= LAG_EVENTS
        if not final and not lagging:
            verdicts += self.analysis.tick(time.monotonic_ns())
        verdicts = [
            v for v in verdicts if v.get("verdict") != "deadlock" or (not waiting and _stalled(v))
        ]
        self._number(verdicts)
        collector.seq = self._seq
        batch = events + verdicts
        amended, kept = self._settle(events)
        kept += [v for v in verdicts if is_kept(v)]
        new = [k for k in self.analysis.killed.values() if k.pid not in self._killed_sent]
        self._killed_sent.update(k.pid for k in new)
        killed = [[k.pid, k.process, k.signal, k.message] for k in new]
        header: dict[str, Any] = {"seq": self._seq}
        self._analysis_changed = self._analysis_changed or bool(batch or amended)
        now = time.monotonic_ns()
        if self._analysis_changed and (final or now - self._analysis_at >= ANALYSIS_EVERY_NS):
            snapshot = self.analysis.snapshot()
            header["analysis"] = {"ends": snapshot["ends"], "stats": snapshot["stats"]}
            self._analysis_at, self._analysis_changed = now, False
        if not (batch or amended or killed or final or "analysis" in header):
            return None
        pieces: list[bytes] = []
        parts: list[list[int]] = []
        kept_seqs = [e["seq"] for e in kept]
        for start in range(0, len(batch), PART_EVENTS):
            chunk = batch[start : start + PART_EVENTS]
            text = encode_events(chunk)
            # Compressed here, once: the server stores and sends the piece as it comes.
            piece = deflated(text)
            pieces.append(piece)
            first, last = chunk[0]["seq"], chunk[-1]["seq"]
            others = len(chunk) - bisect_right(kept_seqs, last) + bisect_left(kept_seqs, first)
            parts.append(
                [first, last, len(chunk), others, len(piece), len(text), array_check(text)]
            )
        header["parts"] = parts
        header["kept"] = kept
        if amended:
            header["amended"] = amended
        if killed:
            header["killed"] = killed
        if final:
            header["final"] = True
        return collectwire.encode(header, pieces)

    def _number(self, events: list[Event]) -> None:
        seq = self._seq
        for event in events:
            seq += 1
            event["seq"] = seq
        self._seq = seq

    def _settle(self, events: list[Event]) -> tuple[list[Event], list[Event]]:
        """The receives sent earlier that the analysis has annotated since, and the events
        of `events` a run keeps (`is_kept`; calls never are)."""
        amended: list[Event] = []
        still: list[Event] = []
        for event in self._unsettled:
            late = "match" in event or "latency_ns" in event or "corrupt" in event
            (amended if late else still).append(event)
        kept: list[Event] = []
        for e in events:
            if e.get("kind") != "call":
                if is_kept(e):
                    kept.append(e)
            # A receive that took a frame, not annotated yet.
            elif (
                "match" not in e
                and e.get("op") in RECEIVING_OPS
                and e.get("phase") in ("end", "error")
                and "latency_ns" not in e
                and "corrupt" not in e
            ):
                still.append(e)
        # A frame from an untraced sender is never matched: keep the newest only.
        self._unsettled = still[-MAX_UNSETTLED:]
        return amended, kept

    def close(self, *, remove: bool) -> None:
        self.collector.close(remove=remove)


def _stalled(verdict: Event) -> bool:
    """Confirm a deadlock verdict: none of the waiting processes runs or uses CPU."""
    return runprocs.stalled({int(member["pid"]) for member in verdict.get("cycle") or []})
