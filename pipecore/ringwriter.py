"""RingWriter: a process's ring file and the reservation of space in it (back-pressure)."""

from __future__ import annotations

import itertools
import json
import mmap
import os
import threading
import time
from typing import Any

from pipecore import runmarks
from pipecore.ring import (
    EVENT,
    FIRST_WINDOW_OFFSET,
    HEADER_BYTES,
    MIN_RING_BYTES,
    POSITION,
    READ_POS_OFFSET,
    REC_PAD,
    RECORD_HEAD,
    RING_HEAD,
    RING_MAGIC,
    RING_SIZE_OFFSET,
    RING_SUFFIX,
    RING_VERSION,
    WAITING_OFFSET,
    WINDOW_OFFSET,
    WRITE_POS_OFFSET,
    map_control,
)

WAIT_SLEEP = 0.0005

_pack_position = POSITION.pack_into


class RingWriter:
    """Creates `<run_dir>/<pid>.ring` and appends records to it under `lock`; a full
    ring makes the writer wait for the collector (no record is ever dropped)."""

    def __init__(self, run_dir: str) -> None:
        self.run_dir = run_dir
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
        window = POSITION.unpack_from(self.control, FIRST_WINDOW_OFFSET)[0]
        POSITION.pack_into(self.mm, WINDOW_OFFSET, window)
        # Publish only a fully initialised ring: the collector never sees a half header.
        os.rename(tmp, path)
        self.path = path
        self.write_pos = 0
        self.read_pos = 0  # last read position seen; refreshed only when space runs out
        self.fast_base = -HEADER_BYTES
        self.fast_limit = self.capacity
        self.broken = False
        self.waited_ns = 0  # time spent waiting for ring space, for benchmarks

    def _reserve(self, need: int) -> int:
        """Reserve `need` bytes (8-aligned) and return their offset in the map; the
        caller holds the lock and then publishes the new write position."""
        cap = self.capacity
        w = self.write_pos
        pos = w % cap
        tail = cap - pos
        total = need if need <= tail else tail + need
        # The collector's window bounds the unread bytes, never below this record.
        window: int = POSITION.unpack_from(self.mm, WINDOW_OFFSET)[0]
        limit = max(min(window or cap, cap), total)
        if w + total - self.read_pos > limit:
            self._wait_space(w + total - limit)
        if need > tail:
            RECORD_HEAD.pack_into(self.mm, HEADER_BYTES + pos, tail, REC_PAD, 0, 0)
            self.write_pos = w = w + tail
            pos = 0
        # Until fast_limit a record neither wraps nor overruns the reader: `end` then
        # skips this method.
        lap_start = w - pos
        self.fast_base = lap_start - HEADER_BYTES
        self.fast_limit = min(lap_start + cap, self.read_pos + limit)
        return HEADER_BYTES + pos

    def _wait_space(self, read_needed: int) -> None:
        # Back-pressure: never drop a record; wait for the collector to drain. The flag
        # tells the collector this process is busy, not stuck in a pipe call.
        waited = 0.0
        start = time.monotonic_ns()
        POSITION.pack_into(self.mm, WAITING_OFFSET, 1)
        while True:
            self.read_pos = POSITION.unpack_from(self.mm, READ_POS_OFFSET)[0]
            if self.read_pos >= read_needed or self.broken:
                POSITION.pack_into(self.mm, WAITING_OFFSET, 0)
                self.waited_ns += time.monotonic_ns() - start
                return
            time.sleep(WAIT_SLEEP)
            waited += WAIT_SLEEP
            if waited > 1.0:
                waited = 0.0
                run_dir = os.path.dirname(self.path)
                if not os.path.exists(self.path) or runmarks.owner_gone(run_dir):
                    # The run is over and its directory removed, or whoever drained the
                    # ring (a server, a tracer) was killed: nobody will read. The process
                    # goes on untraced rather than wait for ever.
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
        EVENT.pack_into(self.mm, off, need, rtype, 0, 0, t, pseq, len(data))
        self.mm[off + EVENT.size : off + EVENT.size + len(data)] = data
        self._publish(self.write_pos + need)
