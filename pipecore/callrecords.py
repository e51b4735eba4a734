"""CallRecords: the begin and end records of traced calls in a process's ring."""

from __future__ import annotations

import math
import sys
import time
from types import FrameType
from typing import Protocol

from pipecore.callsites import CallSites
from pipecore.ring import (
    BEGIN,
    CALL,
    HEAD_STORE,
    POSITION,
    REC_BEGIN,
    REC_DEFINE,
    REC_END,
    REC_EVENT,
    RECEIVING,
    SLOT,
    SLOT_BASE,
    SLOT_SIZE,
    SLOTS,
    STEP_FLAG_OFFSET,
    WRITE_POS_OFFSET,
    record_hash,
)
from pipecore.stepping import wait_for_grant

NO_TIMEOUT = math.nan
# FIONREAD costs an ioctl: a receive measures it when the end's last measurement is
# older than this, so a tight loop pays for it about once a millisecond.
QUEUED_INTERVAL_NS = 1_000_000

_CALL_SIZE = CALL.size
_pack_call = CALL.pack_into
_pack_slot = SLOT.pack_into
_pack_position = POSITION.pack_into
_monotonic_ns = time.monotonic_ns
_getframe = sys._getframe


class TracedEnd(Protocol):
    """What the recorder needs from a traced connection end."""

    _pipe_id: str
    _pipe_name: str
    _end: str
    _tl_rec: object
    _tl_eid: int
    _tl_slot: int
    _tl_origin: int
    _tl_send_code: object
    _tl_send_lasti: int
    _tl_send_site: int
    _tl_recv_code: object
    _tl_recv_lasti: int
    _tl_recv_site: int
    _queued_at: int

    def _queued(self, now: int) -> int: ...


class CallRecords(CallSites):
    """The records of a traced end's calls: its definition, the `begin` of a call (in
    the end's slot) and its `end`; the step gate before each call."""

    def __init__(self, run_dir: str) -> None:
        super().__init__(run_dir)
        self.ends = 0
        self.steps_fd = -1

    def define_end(self, conn: TracedEnd) -> None:
        """Give `conn` its end id (and slots) in this ring, recording it once."""
        with self.lock:
            if conn._tl_rec is self:
                return
            self.ends += 1
            eid = self.ends
            payload = {
                "eid": eid,
                "pipe": conn._pipe_id,
                "pipe_name": conn._pipe_name,
                "end": conn._end,
            }
            self._write_json(REC_DEFINE, payload, False, 0)
            if conn._tl_origin != self.pid:
                # Inherited through fork, not unpickled: it arrives here on first use.
                conn._tl_origin = self.pid
                fields = {"kind": "attach", **payload}
                del fields["eid"]
                self._write_json(REC_EVENT, fields, True, self.next_pseq())
            conn._tl_eid = eid
            # site ids are this ring's: forget the ends' remembered call sites
            conn._tl_send_code = conn._tl_recv_code = None
            conn._tl_slot = SLOT_BASE + 2 * eid * SLOT_SIZE if 2 * eid + 1 < SLOTS else 0
            conn._tl_rec = self

    def begin(
        self,
        conn: TracedEnd,
        op: int,
        frame: FrameType,
        queued: int = -1,
        timeout: float = NO_TIMEOUT,
    ) -> tuple[int, int, int]:
        """Record the `begin` of a call that can block: (pseq, t, site) for `end`."""
        if self.control[STEP_FLAG_OFFSET]:
            self.wait_step()
        if conn._tl_rec is not self:
            self.define_end(conn)
        site = self.sites.get((id(frame.f_code), frame.f_lasti), -1)
        if site < 0:
            site = self.site(frame)
        pseq = self.next_pseq()
        t = _monotonic_ns()
        self.begin_at(conn, op, pseq, t, site, queued, timeout)
        return pseq, t, site

    def begin_call(self, conn: TracedEnd, op: int) -> tuple[int, int, int, int]:
        """Record the `begin` of send, recv, send_bytes or recv_bytes, called from the
        traced method itself: (pseq, t, site, queued) for `end`. A receive measures
        the bytes waiting (`queued`, -1: not measured)."""
        if self.control[STEP_FLAG_OFFSET]:
            self.wait_step()
        if conn._tl_rec is not self:
            self.define_end(conn)
        f = _getframe(2)  # the traced method's caller
        side = RECEIVING[op]
        # The end remembers the last call site of each direction: a loop calling from
        # one line skips the site lookup.
        if side:
            if f.f_lasti == conn._tl_recv_lasti and f.f_code is conn._tl_recv_code:
                site = conn._tl_recv_site
            else:
                site = self.sites.get((id(f.f_code), f.f_lasti), -1)
                if site < 0:
                    site = self.site(f)
                else:
                    conn._tl_recv_lasti = f.f_lasti
                    conn._tl_recv_code = f.f_code
                    conn._tl_recv_site = site
        elif f.f_lasti == conn._tl_send_lasti and f.f_code is conn._tl_send_code:
            site = conn._tl_send_site
        else:
            site = self.sites.get((id(f.f_code), f.f_lasti), -1)
            if site < 0:
                site = self.site(f)
            else:
                conn._tl_send_lasti = f.f_lasti
                conn._tl_send_code = f.f_code
                conn._tl_send_site = site
        pseq = self.next_pseq()
        t = _monotonic_ns()
        queued = -1
        if side and t - conn._queued_at >= QUEUED_INTERVAL_NS:
            queued = conn._queued(t)
        slot = conn._tl_slot
        if slot:
            _pack_slot(self.mm, slot + side, pseq, t, site, op, 0, queued, NO_TIMEOUT, pseq)
        else:
            self.begin_at(conn, op, pseq, t, site, queued, NO_TIMEOUT)
        return pseq, t, site, queued

    def begin_at(
        self,
        conn: TracedEnd,
        op: int,
        pseq: int,
        t: int,
        site: int,
        queued: int,
        timeout: float,
    ) -> None:
        """Write a `begin` taken at `t` as `pseq`: into the end's slot, else as a record."""
        slot = conn._tl_slot
        if slot:
            # Sending and receiving have a slot each: one thread may block in recv
            # while another sends on the same duplex end.
            _pack_slot(
                self.mm,
                slot + RECEIVING[op],
                pseq,
                t,
                site,
                op,
                0,
                queued,
                timeout,
                pseq,
            )
            return
        with self.lock:
            off = self._reserve(BEGIN.size)
            BEGIN.pack_into(
                self.mm, off, BEGIN.size, REC_BEGIN, op, 0, t, pseq, conn._tl_eid,
                site, queued, timeout,
            )  # fmt: skip
            self._publish(self.write_pos + BEGIN.size)

    def gate(self, conn: TracedEnd, frame: FrameType) -> int:
        """Before a call without a `begin`: wait for a step grant if needed; the site."""
        if self.control[STEP_FLAG_OFFSET]:
            self.wait_step()
        if conn._tl_rec is not self:
            self.define_end(conn)
        return self.site(frame)

    def end(
        self,
        conn: TracedEnd,
        op: int,
        pseq0: int,
        t0: int,
        site: int,
        frame: memoryview | bytes | None = None,
        queued: int = -1,
    ) -> None:
        """Record a call that returned (begun as `pseq0` at `t0`), with its frame if any."""
        if frame is None:
            nbytes = -1
            hlen = h = flags = 0
        else:
            nbytes = len(frame)
            if nbytes <= HEAD_STORE:
                # The collector hashes the stored head: it is the whole frame.
                hlen = nbytes
                h = flags = 0
            else:
                hlen = HEAD_STORE
                h, flags = record_hash(frame)
                frame = frame[:HEAD_STORE]
        need = (_CALL_SIZE + hlen + 7) & ~7
        mm = self.mm
        lock = self.lock
        lock.acquire()
        try:
            w = self.write_pos
            if w + need <= self.fast_limit:
                off = w - self.fast_base
            else:
                off = self._reserve(need)
                w = self.write_pos
            _pack_call(
                mm, off, need, REC_END, op, hlen, t0, pseq0, _monotonic_ns(), self.next_pseq(),
                queued, conn._tl_eid, site, nbytes, h, flags, op,
            )  # fmt: skip
            if hlen:
                mm[off + _CALL_SIZE : off + _CALL_SIZE + hlen] = frame  # type: ignore[assignment]
            w += need
            self.write_pos = w
            _pack_position(mm, WRITE_POS_OFFSET, w)
        finally:
            lock.release()

    def wait_step(self) -> None:
        """Wait for a step grant (step mode is on)."""
        self.steps_fd = wait_for_grant(self.run_dir, self.control, self.steps_fd)
