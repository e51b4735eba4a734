"""Recorder: the writer of one process's telemetry ring (see `pipecore.ring`)."""

from __future__ import annotations

import itertools
import json
import math
import mmap
import multiprocessing
import os
import threading
import time
import zlib
from types import FrameType
from typing import Any, Protocol

from pipecore.ring import (
    BEGIN,
    CALL,
    ERROR,
    EVENT,
    FLAG_HASHED,
    FLAG_RESULT,
    FLAG_SAMPLED,
    HASH_FULL_LIMIT,
    HEAD_STORE,
    HEADER_BYTES,
    MIN_RING_BYTES,
    OP_POLL,
    POLL,
    POSITION,
    READ_POS_OFFSET,
    REC_BEGIN,
    REC_DEFINE,
    REC_END,
    REC_ERROR,
    REC_EVENT,
    REC_PAD,
    REC_POLL,
    RECEIVING,
    RECORD_HEAD,
    RING_HEAD,
    RING_MAGIC,
    RING_SIZE_OFFSET,
    RING_SUFFIX,
    RING_VERSION,
    SLOT,
    SLOT_BASE,
    SLOT_SIZE,
    SLOTS,
    STEP_FLAG_OFFSET,
    WAITING_OFFSET,
    WRITE_POS_OFFSET,
    frame_sample,
    map_control,
)
from pipecore.stepping import wait_for_grant

WAIT_SLEEP = 0.0005
NO_TIMEOUT = math.nan

_CALL_SIZE = CALL.size
_pack_call = CALL.pack_into
_pack_slot = SLOT.pack_into
_pack_position = POSITION.pack_into
_monotonic_ns = time.monotonic_ns
_crc32 = zlib.crc32

_HERE = os.path.dirname(os.path.abspath(__file__))
_OWN_FILES = frozenset(os.path.join(_HERE, n) for n in ("recorder.py", "telemetry.py", "traced.py"))
_MP_DIR = os.path.dirname(os.path.abspath(multiprocessing.__file__)) + os.sep


def _library_file(filename: str) -> bool:
    # The tracing's own frames and multiprocessing's internals are not the user's site.
    return filename in _OWN_FILES or filename.startswith(_MP_DIR)


class TracedEnd(Protocol):
    """What the recorder needs from a traced connection end."""

    _pipe_id: str
    _pipe_name: str
    _end: str
    _tl_rec: object
    _tl_eid: int
    _tl_slot: int
    _tl_origin: int


class Recorder:
    """The writer of one process's ring; every method is thread-safe (a traced end is
    used by one thread at a time, as for the standard connection).

    The traced connection writes a call's `begin` into its end's slot itself (see
    `pipecore.traced`) and calls `end` when the call returns.
    """

    def __init__(self, run_dir: str, run_id: str, process_name: str) -> None:
        self.run_dir = run_dir
        self.run_id = run_id
        self.pid = os.getpid()
        self.lock = threading.Lock()
        self.counter = itertools.count(1)  # pseq; next() is atomic under the GIL
        self.next_pseq = self.counter.__next__
        self.control = map_control(run_dir)
        size: int = POSITION.unpack_from(self.control, RING_SIZE_OFFSET)[0]
        self.capacity = max(MIN_RING_BYTES, size) & ~7
        path = os.path.join(run_dir, f"{self.pid}{RING_SUFFIX}")
        tmp = f"{path}.tmp"
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.ftruncate(fd, HEADER_BYTES + self.capacity)
            self.mm = mmap.mmap(fd, HEADER_BYTES + self.capacity)
        finally:
            os.close(fd)
        RING_HEAD.pack_into(self.mm, 0, RING_MAGIC, RING_VERSION, self.capacity, self.pid)
        # Publish only a fully initialised ring: the collector never sees a half header.
        os.rename(tmp, path)
        self.path = path
        self.write_pos = 0
        self.read_pos = 0  # last read position seen; refreshed only when space runs out
        self.fast_base = -HEADER_BYTES
        self.fast_limit = self.capacity
        # (id(code), lasti) -> site id; -1: a library frame, walk further up.
        self.sites: dict[tuple[int, int], int] = {}
        self.site_codes: list[object] = []  # keeps ids in `sites` from being reused
        self.ends = 0
        self.steps_fd = -1
        self.broken = False
        self.process_name = process_name
        self.set_process_name(process_name)

    # -- writing ----------------------------------------------------------------

    def _reserve(self, need: int) -> int:
        """Reserve `need` bytes (8-aligned) and return their offset in the map; the
        caller holds the lock and then publishes the new write position."""
        cap = self.capacity
        w = self.write_pos
        pos = w % cap
        tail = cap - pos
        total = need if need <= tail else tail + need
        if w + total - self.read_pos > cap:
            self._wait_space(w + total - cap)
        if need > tail:
            RECORD_HEAD.pack_into(self.mm, HEADER_BYTES + pos, tail, REC_PAD, 0)
            self.write_pos = w = w + tail
            pos = 0
        # Until fast_limit a record neither wraps nor overruns the reader: `end` then
        # skips this method.
        lap_start = w - pos
        self.fast_base = lap_start - HEADER_BYTES
        self.fast_limit = min(lap_start + cap, self.read_pos + cap)
        return HEADER_BYTES + pos

    def _wait_space(self, read_needed: int) -> None:
        # Back-pressure: never drop a record; wait for the collector to drain. The flag
        # tells the collector this process is busy, not stuck in a pipe call.
        waited = 0.0
        POSITION.pack_into(self.mm, WAITING_OFFSET, 1)
        while True:
            self.read_pos = POSITION.unpack_from(self.mm, READ_POS_OFFSET)[0]
            if self.read_pos >= read_needed or self.broken:
                POSITION.pack_into(self.mm, WAITING_OFFSET, 0)
                return
            time.sleep(WAIT_SLEEP)
            waited += WAIT_SLEEP
            if waited > 1.0:
                waited = 0.0
                if not os.path.exists(self.path):
                    # The run is over and its directory removed: nobody will read.
                    self.broken = True

    def _publish(self, end: int) -> None:
        self.write_pos = end
        _pack_position(self.mm, WRITE_POS_OFFSET, end)

    def _write_json(self, rtype: int, payload: dict[str, Any], timed: bool, pseq: int) -> None:
        data = json.dumps(payload, separators=(",", ":")).encode()
        need = (EVENT.size + len(data) + 7) & ~7
        off = self._reserve(need)
        # Timed after the reservation, which may wait: t stays close to the write.
        t = time.monotonic_ns() if timed else 0
        EVENT.pack_into(self.mm, off, need, rtype, 0, t, pseq, len(data))
        self.mm[off + EVENT.size : off + EVENT.size + len(data)] = data
        self._publish(self.write_pos + need)

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
                self._write_json(REC_EVENT, fields, True, next(self.counter))
            conn._tl_eid = eid
            conn._tl_slot = SLOT_BASE + 2 * eid * SLOT_SIZE if 2 * eid + 1 < SLOTS else 0
            conn._tl_rec = self

    def site(self, frame: FrameType | None) -> int:
        """The site id of the user's frame at or above `frame`, defining it if new."""
        sites = self.sites
        while frame is not None:
            key = (id(frame.f_code), frame.f_lasti)
            sid = sites.get(key)
            if sid is None:
                sid = self._define_site(key, frame)
            if sid >= 0:
                return sid
            frame = frame.f_back
        return 0

    def _define_site(self, key: tuple[int, int], frame: FrameType) -> int:
        filename = frame.f_code.co_filename
        with self.lock:
            if _library_file(filename):
                sid = -1
            else:
                sid = len(self.site_codes) + 1
                text = f"{filename}:{frame.f_lineno}"
                self._write_json(REC_DEFINE, {"site_id": sid, "site": text}, False, 0)
            self.site_codes.append(frame.f_code)
            self.sites[key] = sid
        return sid

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
        pseq = next(self.counter)
        t = _monotonic_ns()
        self.begin_at(conn, op, pseq, t, site, queued, timeout)
        return pseq, t, site

    def begin_at(
        self, conn: TracedEnd, op: int, pseq: int, t: int, site: int, queued: int, timeout: float
    ) -> None:
        """Write a `begin` taken at `t` as `pseq`: into the end's slot, else as a record."""
        slot = conn._tl_slot
        if slot:
            # Sending and receiving have a slot each: one thread may block in recv
            # while another sends on the same duplex end.
            _pack_slot(self.mm, slot + RECEIVING[op], pseq, t, site, op, 0, queued, timeout, pseq)
            return
        with self.lock:
            off = self._reserve(BEGIN.size)
            BEGIN.pack_into(
                self.mm, off, BEGIN.size, REC_BEGIN, op, t, pseq, conn._tl_eid,
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
                mm, off, need, REC_END, op, t0, pseq0, _monotonic_ns(), next(self.counter),
                conn._tl_eid, site, nbytes, queued, h, hlen, flags,
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
                self.mm, off, POLL.size, REC_POLL, OP_POLL, t0, pseq0, time.monotonic_ns(),
                next(self.counter), conn._tl_eid, site, timeout, -1, 0, 0,
                FLAG_RESULT if result else 0,
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
                self.mm, off, need, REC_ERROR, op, t0, pseq0, time.monotonic_ns(),
                next(self.counter), conn._tl_eid, site, nbytes, queued, h, hlen, flags,
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
            self._write_json(REC_EVENT, fields, True, next(self.counter))

    def attach(self, conn: TracedEnd) -> None:
        """Record that `conn` arrived in this process."""
        if conn._tl_rec is not self:
            self.define_end(conn)
        self.event(
            {"kind": "attach", "pipe": conn._pipe_id, "pipe_name": conn._pipe_name,
             "end": conn._end}
        )  # fmt: skip

    def site_of(self, frame: FrameType | None) -> str | None:
        """The user's `file:line` for `frame`, walking past library frames."""
        while frame is not None:
            filename = frame.f_code.co_filename
            if not _library_file(filename):
                return f"{filename}:{frame.f_lineno}"
            frame = frame.f_back
        return None

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
