"""Recorder: the writer of one process's telemetry ring (see `pipecore.ring`)."""

from __future__ import annotations

import importlib
import json
import math
import os
import sys
import time
import zlib
from types import FrameType, ModuleType
from typing import Any, Protocol

from pipecore.callsites import CallSites
from pipecore.ring import (
    BEGIN,
    CALL,
    ERROR,
    FLAG_HASHED,
    FLAG_RESULT,
    FLAG_SAMPLED,
    HASH_FULL_LIMIT,
    HEAD_STORE,
    HEADER_BYTES,
    OP_POLL,
    POLL,
    POSITION,
    REC_BEGIN,
    REC_DEFINE,
    REC_END,
    REC_ERROR,
    REC_EVENT,
    REC_POLL,
    RECEIVING,
    SLOT,
    SLOT_BASE,
    SLOT_LAST,
    SLOT_SIZE,
    SLOTS,
    STEP_FLAG_OFFSET,
    WRITE_POS_OFFSET,
    frame_sample,
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
_crc32 = zlib.crc32
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


class Recorder(CallSites):
    """The writer of one process's ring; every method is thread-safe (a traced end is
    used by one thread at a time, as for the standard connection).

    The traced connection writes a call's `begin` into its end's slot itself (see
    `pipecore.traced`) and calls `end` when the call returns.
    """

    def __init__(self, run_dir: str, run_id: str, process_name: str) -> None:
        super().__init__(run_dir)
        self.run_id = run_id
        self.ends = 0
        self.steps_fd = -1
        self.process_name = process_name
        self.set_process_name(process_name)

    def set_process_name(self, name: str) -> None:
        with self.lock:
            self.process_name = name
            self._write_json(REC_DEFINE, {"process": name}, False, 0)

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
                if nbytes <= HASH_FULL_LIMIT:
                    h = _crc32(frame)
                    flags = FLAG_HASHED
                else:
                    h = frame_sample(frame)
                    flags = FLAG_SAMPLED
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

    def end_poll(
        self,
        conn: TracedEnd,
        begin: tuple[int, int, int],
        timeout: float,
        result: bool,
    ) -> None:
        """Record a `poll` that returned."""
        pseq0, t0, site = begin
        with self.lock:
            off = self._reserve(POLL.size)
            POLL.pack_into(
                self.mm, off, POLL.size, REC_POLL, OP_POLL, 0, t0, pseq0, time.monotonic_ns(),
                self.next_pseq(), -1, conn._tl_eid, site, timeout, 0,
                FLAG_RESULT if result else 0, OP_POLL,
            )  # fmt: skip
            self._publish(self.write_pos + POLL.size)

    def error(
        self,
        conn: TracedEnd,
        op: int,
        begin: tuple[int, int, int],
        exc: BaseException,
        frame: memoryview | bytes | None = None,
        queued: int = -1,
        timeout: float = NO_TIMEOUT,
    ) -> None:
        """Record a call that raised; `frame` is a frame it consumed anyway."""
        if conn._tl_rec is not self:
            self.define_end(conn)
        text = str(exc)
        if len(text) > 200:
            text = text[:199] + "…"
        info: dict[str, Any] = {"error_type": type(exc).__name__, "error": text}
        if op == OP_POLL:
            info["timeout"] = None if math.isnan(timeout) else timeout
        data = json.dumps(info).encode()
        nbytes = -1 if frame is None else len(frame)
        hlen = 0 if frame is None else min(nbytes, HEAD_STORE)
        flags = h = 0
        if frame is not None and nbytes > HEAD_STORE:
            if nbytes <= HASH_FULL_LIMIT:
                h = _crc32(frame)
                flags = FLAG_HASHED
            else:
                h = frame_sample(frame)
                flags = FLAG_SAMPLED
        pseq0, t0, site = begin
        need = (ERROR.size + hlen + len(data) + 7) & ~7
        with self.lock:
            off = self._reserve(need)
            ERROR.pack_into(
                self.mm, off, need, REC_ERROR, op, hlen, t0, pseq0, time.monotonic_ns(),
                self.next_pseq(), queued, conn._tl_eid, site, nbytes, h, flags, op,
                len(data), 0,
            )  # fmt: skip
            start = off + ERROR.size
            if hlen and frame is not None:
                self.mm[start : start + hlen] = frame[:hlen]
            self.mm[start + hlen : start + hlen + len(data)] = data
            self._publish(self.write_pos + need)

    def event(self, fields: dict[str, Any]) -> None:
        """Record a rare event (`pipe`, `attach`, `output`, `process`) as JSON fields."""
        with self.lock:
            self._write_json(REC_EVENT, fields, True, self.next_pseq())

    def attach(self, conn: TracedEnd) -> None:
        """Record that `conn` arrived in this process."""
        if conn._tl_rec is not self:
            self.define_end(conn)
        self.event(
            {"kind": "attach", "pipe": conn._pipe_id, "pipe_name": conn._pipe_name,
             "end": conn._end}
        )  # fmt: skip

    # -- step mode --------------------------------------------------------------

    def wait_step(self) -> None:
        """Wait for a step grant (step mode is on)."""
        self.steps_fd = wait_for_grant(self.run_dir, self.control, self.steps_fd)

    def close(self) -> None:
        """Unmap the ring and the control page; the file stays for the collector."""
        with self.lock:
            self.broken = True
            self.mm.close()
            self.control.close()
            if self.steps_fd >= 0:
                os.close(self.steps_fd)
                self.steps_fd = -1

    def abandon(self) -> None:
        """Drop this recorder's mappings in a forked child without touching its lock."""
        self.broken = True
        self.mm.close()
        self.control.close()
        if self.steps_fd >= 0:
            os.close(self.steps_fd)


def _load_fastring() -> ModuleType | None:
    """The C writer, when it was built for this ring layout and is not refused."""
    if os.environ.get("PIPESCOPE_PURE_PYTHON", "") not in ("", "0"):
        return None
    try:
        module = importlib.import_module("pipecore._fastring")
    except ImportError:
        return None
    layout = {
        "HEADER_BYTES": HEADER_BYTES,
        "WRITE_POS_OFFSET": WRITE_POS_OFFSET,
        "STEP_FLAG_OFFSET": STEP_FLAG_OFFSET,
        "SLOT_SIZE": SLOT_SIZE,
        "SLOT_LAST": SLOT_LAST,
        "REC_END": REC_END,
        "CALL_SIZE": _CALL_SIZE,
        "HEAD_STORE": HEAD_STORE,
        "HASH_FULL_LIMIT": HASH_FULL_LIMIT,
        "QUEUED_INTERVAL_NS": QUEUED_INTERVAL_NS,
    }
    if any(getattr(module, name, None) != value for name, value in layout.items()):
        return None  # built from another version of the layout
    return module


_fastring = _load_fastring()
RECORDER: type[Recorder] = Recorder
WRITER = "python"

if _fastring is not None:

    class FastRecorder(_fastring.Calls, Recorder):  # type: ignore[misc,name-defined]
        """The recorder whose `begin_call` and `end` are written in C; its records are
        byte for byte those of `Recorder`, which stays the reference."""

        def __init__(self, run_dir: str, run_id: str, process_name: str) -> None:
            super().__init__(run_dir, run_id, process_name)
            # The C writer takes pseqs from its own counter, and so must the Python
            # writes of this ring; setting up the recorder takes none.
            self.next_pseq = self.take_pseq
            # A lock the C writer takes without a Python call; nothing holds the
            # first one yet (the recorder is not published before __init__ returns).
            self.lock = _fastring.Lock()  # type: ignore[union-attr]
            self.bind(self.mm, self.control, self.lock)

        def close(self) -> None:
            with self.lock:
                self.unbind()
            super().close()

        def abandon(self) -> None:
            self.unbind()
            super().abandon()

    RECORDER = FastRecorder
    WRITER = "c"
