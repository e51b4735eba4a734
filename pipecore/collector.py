"""Collector: drains every process's telemetry ring of a run and orders the events."""

from __future__ import annotations

import contextlib
import mmap
import os
import shutil
import time
from bisect import bisect_right
from operator import itemgetter

from pipecore.exitwatch import ExitWatch
from pipecore.ordering import CausalOrder
from pipecore.preview import describe_pickle
from pipecore.recorddecoder import Event
from pipecore.ring import (
    HEADER_BYTES,
    POSITION,
    READ_POS_OFFSET,
    RING_HEAD,
    RING_MAGIC,
    RING_SUFFIX,
    WAITING_OFFSET,
    ensure_layout,
)
from pipecore.ringpace import RingPace
from pipecore.ringreader import RingReader
from pipecore.ringstate import Ring
from pipecore.stepping import StepControl

# Events younger than this wait for the next drain: a record is stamped under its ring's
# lock just before it is published (nanoseconds in C, microseconds in Python), so a ring
# read after the drain began cannot bring an older one unless its writer was descheduled
# in between for longer than this.
HOLD_NS = 5_000_000
RECEIVING_OPS = frozenset(("recv", "recv_bytes", "recv_bytes_into", "poll"))
# Sorted by `t` alone, and stably: a process's records are appended in pseq order, so
# its events that share a nanosecond keep that order; events of different processes
# stamped in the same nanosecond keep the order they were read in. Five times cheaper
# than a (t, pid, pseq) key, whose tuples cost more than the sort.
_ORDER_KEY = itemgetter(0)


FOREVER = 1 << 62  # `now` for the final drain: no receive waits any longer


class Collector(RingReader):
    """Drains the telemetry rings of one run directory into ordered protocol events.

    `drain()` returns the events that are new since the last call, merged across
    processes in `t` order (a process's own events in `pseq` order), except that a
    receive never precedes the send it took (`pipecore.ordering`), and numbered with
    `seq` 1, 2, 3 … . Events younger than `hold_ns` are held back until the next drain
    so that a ring read a little later cannot put an earlier event after a later one;
    `drain(final=True)` releases everything. A process whose pid is gone without an
    `exit` event gets a `process` `exit` event with `exitcode` null and `killed` true.
    """

    def __init__(
        self,
        run_dir: str,
        run_id: str,
        *,
        ring_bytes: int | None = None,
        hold_ns: int = HOLD_NS,
    ) -> None:
        super().__init__(run_id)
        self.run_dir = run_dir
        self.hold_ns = hold_ns
        ensure_layout(run_dir, ring_bytes)
        self._rings: dict[str, Ring] = {}
        self._finished: set[str] = set()  # files that are no ring of this layout
        self.seq = 0  # the last `seq` given out (a caller numbering events of its own moves it)
        self._steps: StepControl | None = None
        self._closed = False
        self._order = CausalOrder()
        self._exits = ExitWatch()
        # pid -> its exit status, told by the caller (its parent), or None until told
        self._told: dict[int, int | None] = {}
        self._pace = RingPace()  # see bound_lag
        self.behind = False  # the last drain left records unread (its budget ran out)

    # -- step mode ----------------------------------------------------------------

    def _step_control(self) -> StepControl:
        if self._steps is None:
            self._steps = StepControl(self.run_dir)
        return self._steps

    def set_step_mode(self, on: bool) -> None:
        """Turn the run's step mode on or off (see `stepping.StepControl`)."""
        self._step_control().set_step_mode(on)

    def grant(self, n: int = 1) -> None:
        """Let `n` more traced calls of the run execute while in step mode."""
        self._step_control().grant(n)

    # -- draining -----------------------------------------------------------------

    def writers_waiting(self) -> bool:
        """Whether a process of the run waits for room in its ring (the collector lags):
        such a process is busy recording, whatever its last call looks like."""
        if self._closed:
            return False
        self._discover()
        return any(
            POSITION.unpack_from(ring.mm, WAITING_OFFSET)[0] for ring in self._rings.values()
        )

    def drain(
        self, *, final: bool = False, budget: int | None = None, most: int | None = None
    ) -> list[Event]:
        """Return the new events, merged and ordered, with `seq` set. `budget` bounds the
        bytes read from each ring and `most` the events released (None: no bound);
        `behind` then tells whether more is left. A final drain reads and releases all."""
        if self._closed:
            return []
        now = time.monotonic_ns()
        self._discover()
        if final:
            budget = None
        horizon = now
        more = False  # records left unread, or events ready beyond `most`
        ended: set[int] | None = None  # polled once, when a ring brought nothing
        for name, ring in list(self._rings.items()):
            got = self._read(ring, budget)
            if ring.cut:
                # Its unread records are about as old as the last one read: nothing
                # later than that may go out before them.
                horizon = min(horizon, ring.last_t)
                more = True
            self._scan_slots(ring)
            if got:
                continue
            if ended is None:
                ended = self._exits.ended()
            if self._exits.alive(name, ring.pid, ended):
                continue
            if not final and self._told.get(ring.pid, 0) is None:  # its parent will tell
                continue
            # The process is gone: anything it wrote before dying is in the ring.
            self._read(ring)
            self._scan_slots(ring)
            if not ring.exited:
                t = max(time.monotonic_ns(), ring.last_t + 1)
                code = self._told.pop(ring.pid, None)
                exit_event: Event = {
                    "kind": "process",
                    "run": self.run_id,
                    "t": t,
                    "pid": ring.pid,
                    "process": ring.process,
                    "op": "exit",
                    "exitcode": code,
                }
                if code is None:
                    exit_event["killed"] = True  # gone without a word: a signal's doing
                self._hold(exit_event)
            ring.mm.close()
            del self._rings[name]
            self._exits.forget(name)
            self._remove(ring)
        pending = self._pending
        pending.sort(key=_ORDER_KEY)
        if final:
            ready = pending
            self._pending = []
        else:
            last = len(pending) if most is None else min(most, len(pending))
            n = bisect_right(pending, horizon - self.hold_ns, 0, last, key=_ORDER_KEY)
            more = more or n == last < len(pending)
            ready = pending[:n]
            del pending[:n]
        out, held = self._order.release([e for _, e in ready], FOREVER if final else now)
        self._pending += [(e["t"], e) for e in held]
        seq = self.seq
        for event in out:
            seq += 1
            event["seq"] = seq
        self.seq = seq
        self.behind = more
        return out

    def await_exit(self, pid: int) -> None:
        """Its parent will tell the exit status of `pid` (`exited`): until then its ring is
        read as a live process's, and then its `exit` event carries that status, where a
        process gone without recording its exit would be reported killed."""
        self._told.setdefault(pid, None)

    def exited(self, pid: int, code: int) -> None:
        """The exit status of `pid`, as its parent saw it (negative: killed by that signal)."""
        self._told[pid] = code

    def bound_lag(self, lag_ns: int) -> None:
        """Keep each ring's unread records to what the collector drains in about `lag_ns`:
        a process with more to record waits for it (back-pressure, nothing is dropped),
        so no record waits much longer than that to be read. The pace is measured by
        `pace()`; until then each ring keeps the window it started with (see
        `ensure_layout`)."""
        self._pace.lag_ns = lag_ns

    def pace(self, busy_ns: int) -> None:
        """Count `busy_ns` of work on what was read since the last call, towards sizing
        the rings' windows (`RingPace.pace`)."""
        self._pace.pace(busy_ns, list(self._rings.values()))

    @staticmethod
    def _remove(ring: Ring) -> None:
        """Remove the file of a ring read to its end whose process is gone: the run keeps
        no ring of a dead process in shared memory, and the next drain's listing stays as
        short as the processes alive. A file of the same name that is not this ring (a
        later process given the same pid) stays, to be read as a new ring."""
        with contextlib.suppress(FileNotFoundError):
            if os.stat(ring.path).st_ino == ring.inode:
                os.unlink(ring.path)

    def _discover(self) -> None:
        try:
            names = os.listdir(self.run_dir)
        except FileNotFoundError:
            return
        for name in names:
            if not name.endswith(RING_SUFFIX) or name in self._rings or name in self._finished:
                continue
            path = os.path.join(self.run_dir, name)
            try:
                fd = os.open(path, os.O_RDWR)
            except FileNotFoundError:
                continue
            try:
                stat = os.fstat(fd)
                size = stat.st_size
                if size <= HEADER_BYTES:
                    continue
                mm = mmap.mmap(fd, size)
            finally:
                os.close(fd)
            magic, _version, capacity, pid = RING_HEAD.unpack_from(mm, 0)
            if magic != RING_MAGIC or capacity + HEADER_BYTES != size:
                mm.close()
                self._finished.add(name)
                continue
            read_pos = POSITION.unpack_from(mm, READ_POS_OFFSET)[0]
            self._rings[name] = Ring(pid, path, mm, capacity, read_pos, inode=stat.st_ino)
            self._exits.watch(name, pid)

    def close(self, *, remove: bool = True) -> None:
        """Unmap every ring and remove the run directory unless told not to (drain first if
        needed)."""
        if self._closed:
            return
        self._closed = True
        if self._steps is not None:
            self._steps.close()
            self._steps = None
        for ring in self._rings.values():
            ring.mm.close()
        self._rings.clear()
        self._exits.close()
        if remove:
            shutil.rmtree(self.run_dir, ignore_errors=True)


def drain_last(collector: Collector) -> list[Event]:
    """Every event left once the program's processes are gone, in causal order.

    The final drain releases whatever is still held at once, so a receive held for a send
    still in flight would no longer wait for it. A normal drain once the collector's hold
    has passed releases all but events whose send never ended, each receive after its send.
    """
    time.sleep(collector.hold_ns / 1e9)
    return collector.drain() + collector.drain(final=True)


__all__ = ["Collector", "describe_pickle", "drain_last"]
