"""TracedConnection: the connection end that records every call it makes."""

from __future__ import annotations

import fcntl
import math
import os
import sys
import termios
from multiprocessing.connection import Connection

from pipecore import telemetry
from pipecore.recorder import _fastring
from pipecore.ring import OP_CLOSE, OP_POLL
from pipecore.tracedcalls import TracedCalls, _dumps, _loads

_getframe = sys._getframe
_ioctl = fcntl.ioctl
_FIONREAD = termios.FIONREAD


class TracedConnection(TracedCalls):
    """A `multiprocessing.connection.Connection` that records every call it makes.

    It behaves exactly like the standard connection: same bytes on the wire, same
    return values and exceptions. While telemetry is active in the process
    (`pipecore.telemetry.activate`), each call also writes `call` events (see
    docs/protocol.md) to the process's ring; otherwise it records nothing.
    """

    # Slots (the standard connection keeps its __dict__): the C methods read these
    # fields at their offsets instead of looking them up by name.
    __slots__ = (
        "_end",
        "_handle",
        "_pipe_id",
        "_pipe_name",
        "_queued_at",
        "_queued_buf",
        "_readable",
        "_tl_eid",
        "_tl_origin",
        "_tl_rec",
        "_tl_recv_code",
        "_tl_recv_lasti",
        "_tl_recv_site",
        "_tl_send_code",
        "_tl_send_lasti",
        "_tl_send_site",
        "_tl_slot",
        "_writable",
    )

    def __init__(
        self,
        handle: int,
        readable: bool = True,
        writable: bool = True,
        *,
        pipe_id: str = "",
        pipe_name: str = "",
        end: str = "a",
    ) -> None:
        # As the standard class attribute: a handle the constructor refuses is None.
        self._handle = None
        super().__init__(handle, readable, writable)
        self._pipe_id = pipe_id
        self._pipe_name = pipe_name
        self._end = end
        self._tl_rec: object = None
        self._tl_eid = 0
        self._tl_slot = 0
        self._tl_origin = os.getpid()
        # The last call site of each direction (its code, instruction and site id): a
        # loop calling from one line skips the site lookup.
        self._tl_send_code: object = None
        self._tl_send_lasti = -1
        self._tl_send_site = 0
        self._tl_recv_code: object = None
        self._tl_recv_lasti = -1
        self._tl_recv_site = 0
        self._queued_buf = bytearray(4)
        self._queued_at = 0

    @property
    def pipe_id(self) -> str:
        """The pipe's id, `<creator pid>.<n>`."""
        return self._pipe_id

    @property
    def pipe_name(self) -> str:
        """The pipe's display name."""
        return self._pipe_name

    @property
    def end(self) -> str:
        """Which end of the pipe this is: `a` or `b`."""
        return self._end

    def __repr__(self) -> str:
        return f"<TracedConnection pipe={self._pipe_id!r} end={self._end!r} handle={self._handle}>"

    def _queued(self, now: int) -> int:
        # FIONREAD: bytes waiting in the kernel for this end (-1: not measured).
        self._queued_at = now
        try:
            _ioctl(self._handle, _FIONREAD, self._queued_buf)  # type: ignore[arg-type]
        except (OSError, TypeError):
            return -1
        return int.from_bytes(self._queued_buf, sys.byteorder)

    def poll(self, timeout: float | None = 0.0) -> bool:
        """Whether there is any input available to be read."""
        rec = telemetry._recorder
        if rec is None:
            return super().poll(timeout)
        frame = _getframe(1)
        wait = math.nan if timeout is None else float(timeout)
        # poll(0) cannot block: it gets an `end` only.
        if timeout is not None and timeout <= 0:
            begin = (0, 0, rec.gate(self, frame))
        else:
            begin = rec.begin(self, OP_POLL, frame, -1, wait)
        try:
            self._check_closed()
            self._check_readable()
            result = self._poll(timeout)
        except BaseException as exc:
            rec.error(self, OP_POLL, begin, exc, None, -1, wait)
            raise
        rec.end_poll(self, begin, wait, result)
        return result

    def close(self) -> None:
        """Close the connection."""
        rec = telemetry._recorder
        if rec is None or self._handle is None:
            return super().close()
        begin = (0, 0, rec.gate(self, _getframe(1)))
        try:
            super().close()
        except BaseException as exc:
            rec.error(self, OP_CLOSE, begin, exc)
            raise
        rec.end(self, OP_CLOSE, 0, 0, begin[2])


if _fastring is not None:
    # Without a Python frame of their own, these five cost little more than the standard
    # methods (docs/performance.md); they call the standard methods outside a run and the
    # Python methods of TracedCalls with the Python writer or unusual arguments.
    _fastring.install_methods(TracedConnection, Connection, vars(telemetry), _dumps, _loads)
