"""Per-process telemetry: a shared-memory ring of call records, output tee and step gate."""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import mmap
import multiprocessing
import os
import select
import struct
import sys
import threading
import time
import zlib
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any, Protocol, TextIO, cast

# Ring file: a header, one in-flight slot per traced end, then the data area that
# variable-length records wrap around in.
RING_MAGIC = 0x47525350  # "PSRG"
RING_VERSION = 2
WRITE_POS_OFFSET = 64  # own cache line: written by the process
READ_POS_OFFSET = 128  # own cache line: written by the collector
RING_HEAD = struct.Struct("<IIQQ")  # magic, version, data bytes, pid
POSITION = struct.Struct("<Q")
SLOT_BASE = 256
SLOT_SIZE = 64
SLOTS = 256  # ends 1..127 get two slots (sending, receiving); later ends write BEGIN records
HEADER_BYTES = SLOT_BASE + SLOTS * SLOT_SIZE
DEFAULT_RING_BYTES = 2 * 1024 * 1024
MIN_RING_BYTES = 64 * 1024

# Control page: written by the controller, read by every traced call.
CONTROL_BYTES = 4096
CONTROL_MAGIC = 0x43525350  # "PSRC"
STEP_FLAG_OFFSET = 8
RING_SIZE_OFFSET = 16
CONTROL_HEAD = struct.Struct("<I")
CONTROL_NAME = "control"
STEPS_NAME = "steps"
RING_SUFFIX = ".ring"

# The in-flight slot of an end: the `begin` of its current call, written in place
# (no reservation, no lock). pseq is written first and again last, so the collector
# reading it in the opposite order knows a consistent slot when both copies agree.
# pseq, t, site id, op, unused, queued (-1: unknown), poll timeout (NaN: None), pseq
SLOT = struct.Struct("<QqIHHqdQ")
SLOT_BODY = struct.Struct("<qIHHqd")  # at slot + 8
SLOT_SEQ = struct.Struct("<Q")  # at slot + 0 and slot + 40
SLOT_LAST = 40

# Record layout. Every record starts with (length, type, op) and is 8-byte aligned;
# `length` covers the whole record including alignment padding.
REC_PAD = 0
REC_BEGIN = 1
REC_END = 2
REC_ERROR = 3
REC_EVENT = 4
REC_DEFINE = 5
REC_POLL = 6
RECORD_HEAD = struct.Struct("<IHH")
# A call that returned, with its begin: length, type, op, begin t, begin pseq (0: no
# begin), end t, end pseq, end id, site id, nbytes (-1: no frame), queued, hash, head
# length, flags; then the head bytes.
CALL = struct.Struct("<IHHqQqQIIqqIHH")
# The same for poll, with its timeout (NaN: None) in place of nbytes.
POLL = struct.Struct("<IHHqQqQIIdqIHH")
# The same for a call that raised, then the JSON length; then head bytes and JSON.
ERROR = struct.Struct("<IHHqQqQIIqqIHHII")
# A `begin` of an end without a slot: length, type, op, t, pseq, end id, site id,
# queued, poll timeout
BEGIN = struct.Struct("<IHHqQIIqd")
# length, type, op, t, pseq, json length
EVENT = struct.Struct("<IHHqQI")
FLAG_RESULT = 1
FLAG_HASHED = 2

# Slot offset added for each op: receiving ops use the end's second slot.
RECEIVING = (0, 64, 0, 64, 64, 64, 0)
OPS = ("send", "recv", "send_bytes", "recv_bytes", "recv_bytes_into", "poll", "close")
OP_SEND, OP_RECV, OP_SEND_BYTES, OP_RECV_BYTES, OP_RECV_BYTES_INTO, OP_POLL, OP_CLOSE = range(7)

# How much of each frame a record keeps: the collector derives head, preview, type
# (and, for frames no longer than this, the hash) from these bytes.
HEAD_STORE = 192
# Frames up to this size are hashed whole; larger ones by length and three samples.
HASH_FULL_LIMIT = 1024
HASH_SAMPLE = 256
TEXT_LIMIT = 8192
WAIT_SLEEP = 0.0005
STEP_POLL_MS = 10


def frame_hash(frame: memoryview | bytes | bytearray) -> int:
    """CRC-32 of the whole frame up to HASH_FULL_LIMIT bytes; beyond it, CRC-32 of the
    8-byte little-endian length, then the first, middle and last HASH_SAMPLE bytes."""
    n = len(frame)
    if n <= HASH_FULL_LIMIT:
        return zlib.crc32(frame)
    h = zlib.crc32(n.to_bytes(8, "little"))
    h = zlib.crc32(frame[:HASH_SAMPLE], h)
    mid = (n - HASH_SAMPLE) // 2
    h = zlib.crc32(frame[mid : mid + HASH_SAMPLE], h)
    return zlib.crc32(frame[n - HASH_SAMPLE :], h)


class TracedEnd(Protocol):
    """What the recorder needs from a traced connection end."""

    _pipe_id: str
    _pipe_name: str
    _end: str
    _tl_rec: object
    _tl_eid: int
    _tl_slot: int
    _tl_origin: int


def ensure_layout(run_dir: str, ring_bytes: int | None = None) -> None:
    """Create the run directory, its control page and its steps FIFO if missing."""
    os.makedirs(run_dir, exist_ok=True)
    path = os.path.join(run_dir, CONTROL_NAME)
    if not os.path.exists(path):
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            page = bytearray(CONTROL_BYTES)
            CONTROL_HEAD.pack_into(page, 0, CONTROL_MAGIC)
            POSITION.pack_into(page, RING_SIZE_OFFSET, ring_bytes or DEFAULT_RING_BYTES)
            f.write(page)
        os.replace(tmp, path)
    fifo = os.path.join(run_dir, STEPS_NAME)
    with contextlib.suppress(FileExistsError):
        os.mkfifo(fifo, 0o600)


def _map_control(run_dir: str) -> mmap.mmap:
    fd = os.open(os.path.join(run_dir, CONTROL_NAME), os.O_RDWR)
    try:
        return mmap.mmap(fd, CONTROL_BYTES)
    finally:
        os.close(fd)


class StepControl:
    """The controller's side of step mode for one run directory.

    `set_step_mode(True)` makes every traced call of the run wait before it executes;
    each `grant()` lets exactly one waiting call proceed. `set_step_mode(False)` releases
    every waiting call; grants not consumed are discarded when step mode changes.
    """

    def __init__(self, run_dir: str) -> None:
        ensure_layout(run_dir)
        self._control = _map_control(run_dir)
        # O_RDWR keeps a writer open, so waiting workers see "no grant yet", not EOF,
        # and lets the controller discard stale grants by reading them back.
        self._fifo = os.open(os.path.join(run_dir, STEPS_NAME), os.O_RDWR | os.O_NONBLOCK)

    @property
    def step_mode(self) -> bool:
        """Whether step mode is on."""
        return self._control[STEP_FLAG_OFFSET] != 0

    def set_step_mode(self, on: bool) -> None:
        """Turn step mode on or off."""
        if on:
            self._discard_grants()
            self._control[STEP_FLAG_OFFSET] = 1
        else:
            self._control[STEP_FLAG_OFFSET] = 0
            self._discard_grants()

    def grant(self, n: int = 1) -> None:
        """Let `n` more traced calls execute."""
        if n < 0:
            raise ValueError(f"Expected a grant count >= 0, but got {n}")
        # A full FIFO already holds more grants than any run can use.
        with contextlib.suppress(BlockingIOError):
            os.write(self._fifo, b"\x01" * n)

    def _discard_grants(self) -> None:
        try:
            while os.read(self._fifo, 65536):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        """Release the control page and the FIFO."""
        if self._fifo >= 0:
            os.close(self._fifo)
            self._fifo = -1
            self._control.close()


class Recorder:
    """The writer of one process's ring; every method is thread-safe (a traced end is
    used by one thread at a time, as for the standard connection)."""

    def __init__(self, run_dir: str, run_id: str, process_name: str) -> None:
        self.run_dir = run_dir
        self.run_id = run_id
        self.pid = os.getpid()
        self.lock = threading.Lock()
        self.counter = itertools.count(1)  # pseq; next() is atomic under the GIL
        self.control = _map_control(run_dir)
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
        caller holds the lock and then calls `_publish`."""
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
        # Back-pressure: never drop a record; wait for the collector to drain.
        waited = 0.0
        while True:
            self.read_pos = POSITION.unpack_from(self.mm, READ_POS_OFFSET)[0]
            if self.read_pos >= read_needed or self.broken:
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
        POSITION.pack_into(self.mm, WRITE_POS_OFFSET, end)

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

    def _define_end(self, conn: TracedEnd) -> None:
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

    def _site(self, frame: FrameType | None) -> int:
        """The site id of the user's frame at or above `frame`, defining it if new."""
        while frame is not None:
            key = (id(frame.f_code), frame.f_lasti)
            sid = self.sites.get(key)
            if sid is None:
                sid = self._define_site(key, frame)
            if sid >= 0:
                return sid
            frame = frame.f_back
        return 0

    def _define_site(self, key: tuple[int, int], frame: FrameType) -> int:
        filename = frame.f_code.co_filename
        with self.lock:
            # Our own frames and multiprocessing's internals are not the user's call site.
            if filename in (__file__, _TRACED_FILE) or filename.startswith(_MP_DIR):
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
        timeout: float = math.nan,
    ) -> tuple[int, int, int]:
        """Record the `begin` of a call that can block: (pseq, t, site) for `end`."""
        if self.control[STEP_FLAG_OFFSET]:
            self._wait_step()
        if conn._tl_rec is not self:
            self._define_end(conn)
        site = self.sites.get((id(frame.f_code), frame.f_lasti))
        if site is None or site < 0:
            site = self._site(frame)
        pseq = next(self.counter)
        t = _monotonic_ns()
        slot = conn._tl_slot
        if slot:
            # Sending and receiving have a slot each: one thread may block in recv
            # while another sends on the same duplex end.
            _pack_slot(self.mm, slot + RECEIVING[op], pseq, t, site, op, 0, queued, timeout, pseq)
        else:
            with self.lock:
                off = self._reserve(BEGIN.size)
                BEGIN.pack_into(
                    self.mm, off, BEGIN.size, REC_BEGIN, op, t, pseq, conn._tl_eid,
                    site, queued, timeout,
                )  # fmt: skip
                self._publish(self.write_pos + BEGIN.size)
        return pseq, t, site

    def gate(self, conn: TracedEnd, frame: FrameType) -> int:
        """Before a call without a `begin`: wait for a step grant if needed; the site."""
        if self.control[STEP_FLAG_OFFSET]:
            self._wait_step()
        if conn._tl_rec is not self:
            self._define_end(conn)
        return self._site(frame)

    def end(
        self,
        conn: TracedEnd,
        op: int,
        begin: tuple[int, int, int],
        frame: memoryview | bytes | None = None,
        queued: int = -1,
    ) -> None:
        """Record a call that returned, with the frame it moved if any."""
        if frame is None:
            nbytes = -1
            hlen = h = flags = 0
        else:
            nbytes = len(frame)
            if nbytes > HEAD_STORE:
                h = frame_hash(frame)
                hlen = HEAD_STORE
                flags = FLAG_HASHED
            else:
                # The collector hashes the stored head: it is the whole frame.
                hlen = nbytes
                h = flags = 0
        pseq0, t0, site = begin
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
                mm[off + _CALL_SIZE : off + _CALL_SIZE + hlen] = frame[:hlen]  # type: ignore[index]
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
        timeout: float = math.nan,
    ) -> None:
        """Record a call that raised; `frame` is a frame it consumed anyway."""
        if conn._tl_rec is not self:
            self._define_end(conn)
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
            h = frame_hash(frame)
            flags = FLAG_HASHED
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
            self._define_end(conn)
        self.event(
            {"kind": "attach", "pipe": conn._pipe_id, "pipe_name": conn._pipe_name,
             "end": conn._end}
        )  # fmt: skip

    def site_of(self, frame: FrameType | None) -> str | None:
        """The user's `file:line` for `frame`, walking past library frames."""
        while frame is not None:
            filename = frame.f_code.co_filename
            if not (filename in (__file__, _TRACED_FILE) or filename.startswith(_MP_DIR)):
                return f"{filename}:{frame.f_lineno}"
            frame = frame.f_back
        return None

    # -- step mode --------------------------------------------------------------

    def _wait_step(self) -> None:
        if self.steps_fd < 0:
            try:
                path = os.path.join(self.run_dir, STEPS_NAME)
                self.steps_fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
            except OSError:
                return  # no run directory any more: nothing to wait for
        poller = select.poll()
        poller.register(self.steps_fd, select.POLLIN)
        while self.control[STEP_FLAG_OFFSET]:
            try:
                if os.read(self.steps_fd, 1):
                    return
                # EOF: no controller has the FIFO open yet (or any more).
                time.sleep(STEP_POLL_MS / 1000)
                if not os.path.exists(self.run_dir):
                    # The run is over: stop stepping (the page is no longer shared).
                    self.control[STEP_FLAG_OFFSET] = 0
                    return
            except BlockingIOError:
                poller.poll(STEP_POLL_MS)

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


_CALL_SIZE = CALL.size
_pack_call = CALL.pack_into
_pack_slot = SLOT.pack_into
_pack_position = POSITION.pack_into
_monotonic_ns = time.monotonic_ns

_TRACED_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "traced.py")
_MP_DIR = os.path.dirname(os.path.abspath(multiprocessing.__file__)) + os.sep

_recorder: Recorder | None = None
_activate_lock = threading.Lock()


def recorder() -> Recorder | None:
    """This process's recorder, or None outside a run."""
    return _recorder


def activate(run_dir: str, run_id: str, *, parent: int | None = None) -> None:
    """Record this process's traced calls, output and lifetime into `run_dir`.

    Creates the process's ring `<run_dir>/<pid>.ring`, records a `process` `start`
    event and tees `sys.stdout`/`sys.stderr` into `output` events. Activating the
    same run again is a no-op; activating another run deactivates the current one.
    `parent` is the pid that started this process (default: `os.getppid()`).
    """
    global _recorder
    with _activate_lock:
        current = _recorder
        if current is not None:
            if current.run_dir == run_dir and current.pid == os.getpid():
                return
            _deactivate_locked()
        ensure_layout(run_dir)
        rec = Recorder(run_dir, run_id, multiprocessing.current_process().name)
        _install_hooks()
        _recorder = rec
        parent_pid = os.getppid() if parent is None else parent
        rec.event({"kind": "process", "op": "start", "parent": parent_pid})
        _install_tees()


def deactivate() -> None:
    """Stop recording in this process; the ring file stays for the collector."""
    with _activate_lock:
        _deactivate_locked()


def _deactivate_locked() -> None:
    global _recorder
    rec = _recorder
    if rec is None:
        return
    _flush_tees()
    _recorder = None
    _remove_tees()
    rec.close()


def active_run_dir() -> str | None:
    """The run directory this process records into, or None."""
    rec = _recorder
    return None if rec is None else rec.run_dir


def active_run_id() -> str | None:
    """The run id this process records into, or None."""
    rec = _recorder
    return None if rec is None else rec.run_id


def record_exit(exitcode: int) -> None:
    """Record this process's `process` `exit` event (a run's main process calls this)."""
    rec = _recorder
    if rec is not None:
        _flush_tees()
        rec.event({"kind": "process", "op": "exit", "exitcode": exitcode})


def record_event(fields: dict[str, Any]) -> None:
    """Record an event with the given protocol fields (`kind` included), if active."""
    rec = _recorder
    if rec is not None:
        rec.event(fields)


# -- process lifetime ------------------------------------------------------------

_hooks_installed = False


def _install_hooks() -> None:
    global _hooks_installed
    if _hooks_installed:
        return
    _hooks_installed = True
    os.register_at_fork(after_in_child=_after_fork_in_child)
    # A multiprocessing child runs BaseProcess._bootstrap and exits with what it returns.
    original: Callable[..., int] = getattr(BaseProcess, "_bootstrap")  # noqa: B009

    def _bootstrap(self: BaseProcess, parent_sentinel: int | None = None) -> int:
        rec = _recorder
        if rec is not None and rec.process_name != self.name:
            rec.set_process_name(self.name)
        code = original(self, parent_sentinel)
        record_exit(code)
        return code

    setattr(BaseProcess, "_bootstrap", _bootstrap)  # noqa: B010


def _forking_process_name() -> str:
    # Under fork, multiprocessing names the child only after the fork; its Popen
    # holds the Process object being launched.
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "_launch":
            obj = frame.f_locals.get("process_obj")
            if isinstance(obj, BaseProcess):
                return obj.name
        frame = frame.f_back  # type: ignore[assignment]
    return multiprocessing.current_process().name


def _after_fork_in_child() -> None:
    global _recorder, _activate_lock
    _activate_lock = threading.Lock()
    parent = _recorder
    if parent is None:
        return
    parent.abandon()
    _recorder = None
    for tee in _tees:
        tee.partial = ""
        tee.lock = threading.Lock()
    try:
        rec = Recorder(parent.run_dir, parent.run_id, _forking_process_name())
    except OSError:
        return  # the run directory is gone: record nothing
    _recorder = rec
    rec.event({"kind": "process", "op": "start", "parent": os.getppid()})


# -- output tee ----------------------------------------------------------------


class _Tee:
    """Writes through to the original stream and turns each line into an event."""

    def __init__(self, target: TextIO, stream: str) -> None:
        self.target = target
        self.stream = stream
        self.partial = ""
        self.lock = threading.Lock()

    def write(self, s: str) -> int:
        n = self.target.write(s)
        if _recorder is not None and s:
            with self.lock:
                text = self.partial + s
                lines = text.split("\n")
                self.partial = lines.pop()
            for line in lines:
                self._emit(line)
        return n

    def _emit(self, line: str) -> None:
        rec = _recorder
        if rec is None:
            return
        if len(line) > TEXT_LIMIT:
            line = line[: TEXT_LIMIT - 1] + "…"
        rec.event({"kind": "output", "stream": self.stream, "text": line})

    def flush_partial(self) -> None:
        with self.lock:
            line, self.partial = self.partial, ""
        if line:
            self._emit(line)

    def flush(self) -> None:
        self.target.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.target, name)


_tees: list[_Tee] = []


def _install_tees() -> None:
    if _tees:
        return
    for stream in ("stdout", "stderr"):
        target = getattr(sys, stream)
        if target is None:
            continue
        tee = _Tee(target, stream)
        _tees.append(tee)
        setattr(sys, stream, cast(TextIO, tee))


def _flush_tees() -> None:
    for tee in _tees:
        tee.flush_partial()


def _remove_tees() -> None:
    for tee in _tees:
        if getattr(sys, tee.stream) is tee:
            setattr(sys, tee.stream, tee.target)
    _tees.clear()
