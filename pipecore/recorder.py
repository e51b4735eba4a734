"""Recorder: the writer of one process's telemetry ring (see `pipecore.ring`)."""

from __future__ import annotations

import importlib
import json
import math
import os
import time
from types import ModuleType
from typing import Any

from pipecore.callrecords import NO_TIMEOUT as NO_TIMEOUT
from pipecore.callrecords import QUEUED_INTERVAL_NS as QUEUED_INTERVAL_NS
from pipecore.callrecords import CallRecords
from pipecore.callrecords import TracedEnd as TracedEnd
from pipecore.ring import (
    CALL,
    CALL_KIND_OFFSET,
    ERROR,
    FLAG_RESULT,
    HASH_FULL_LIMIT,
    HEAD_STORE,
    HEADER_BYTES,
    OP_POLL,
    POLL,
    REC_DEFINE,
    REC_END,
    REC_ERROR,
    REC_EVENT,
    REC_POLL,
    SLOT_LAST,
    SLOT_SIZE,
    STEP_FLAG_OFFSET,
    WRITE_POS_OFFSET,
    record_hash,
)

_CALL_SIZE = CALL.size


class Recorder(CallRecords):
    """The writer of one process's ring; every method is thread-safe (a traced end is
    used by one thread at a time, as for the standard connection).

    The traced connection (`pipecore.tracedconnection`) records a call's `begin` in
    its end's slot (`begin_call`) and its `end` when the call returns; with the C
    writer, its four frame-moving methods write both without calling these.
    """

    def __init__(self, run_dir: str, run_id: str, process_name: str) -> None:
        super().__init__(run_dir)
        self.run_id = run_id
        self.process_name = process_name
        self.set_process_name(process_name)

    def set_process_name(self, name: str) -> None:
        with self.lock:
            self.process_name = name
            self._write_json(REC_DEFINE, {"process": name}, False, 0)

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
        h, flags = record_hash(frame) if frame is not None and nbytes > HEAD_STORE else (0, 0)
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

    # -- lifecycle ------------------------------------------------------------------

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
        "CALL_KIND_OFFSET": CALL_KIND_OFFSET,
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
