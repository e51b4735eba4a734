"""TracedConnection: the connection end that records every call it makes."""

from __future__ import annotations

import fcntl
import io
import math
import os
import sys
import termios
import time
from multiprocessing import BufferTooShort, reduction
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any, NoReturn

from pipecore import telemetry
from pipecore.recorder import QUEUED_INTERVAL_NS, _fastring
from pipecore.ring import (
    OP_CLOSE,
    OP_POLL,
    OP_RECV,
    OP_RECV_BYTES,
    OP_RECV_BYTES_INTO,
    OP_SEND,
    OP_SEND_BYTES,
)

_dumps = reduction.ForkingPickler.dumps
_loads = reduction.ForkingPickler.loads
_getframe = sys._getframe
_ioctl = fcntl.ioctl
_FIONREAD = termios.FIONREAD
_monotonic_ns = time.monotonic_ns
_plain_send = Connection.send
_plain_recv = Connection.recv
_plain_send_bytes = Connection.send_bytes
_plain_recv_bytes = Connection.recv_bytes


class TracedConnection(Connection):
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

    if TYPE_CHECKING:
        # The standard connection's internals, which typeshed does not declare.
        _handle: int | None

        def _check_closed(self) -> None: ...
        def _check_readable(self) -> None: ...
        def _check_writable(self) -> None: ...
        def _bad_message_length(self) -> NoReturn: ...
        def _send_bytes(self, buf: memoryview | bytes) -> None: ...
        def _recv_bytes(self, maxsize: int | None = None) -> io.BytesIO: ...
        def _poll(self, timeout: float | None) -> bool: ...

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

    # The four frame-moving methods cost two recorder calls: `begin_call` (step gate,
    # call site, the begin in the end's slot) and `end` (the record). With the C writer
    # built, C methods replace these four (below) and hand on to them only what the C
    # recorder does not record itself: these stay the reference.

    def send(self, obj: Any) -> None:
        """Send a (picklable) object."""
        rec = telemetry._recorder
        if rec is None:
            return _plain_send(self, obj)
        pseq, t, site, _ = rec.begin_call(self, OP_SEND)
        try:
            self._check_closed()
            self._check_writable()
            buf = _dumps(obj)
            self._send_bytes(buf)
        except BaseException as exc:
            rec.error(self, OP_SEND, (pseq, t, site), exc)
            raise
        rec.end(self, OP_SEND, pseq, t, site, buf)

    def recv(self) -> Any:
        """Receive a (picklable) object."""
        rec = telemetry._recorder
        if rec is None:
            return _plain_recv(self)
        pseq, t, site, queued = rec.begin_call(self, OP_RECV)
        try:
            self._check_closed()
            self._check_readable()
            buf = self._recv_bytes()
        except BaseException as exc:
            rec.error(self, OP_RECV, (pseq, t, site), exc, None, queued)
            raise
        with buf.getbuffer() as frame:
            try:
                obj = _loads(frame)
            except BaseException as exc:
                rec.error(self, OP_RECV, (pseq, t, site), exc, frame, queued)
                raise
            rec.end(self, OP_RECV, pseq, t, site, frame, queued)
        return obj

    def send_bytes(self, buf: Any, offset: int = 0, size: int | None = None) -> None:
        """Send the bytes data from a bytes-like object."""
        rec = telemetry._recorder
        if rec is None:
            return _plain_send_bytes(self, buf, offset, size)
        pseq, t, site, _ = rec.begin_call(self, OP_SEND_BYTES)
        try:
            self._check_closed()
            self._check_writable()
            m = memoryview(buf)
            if m.itemsize > 1:
                m = m.cast("B")
            n = m.nbytes
            if offset < 0:
                raise ValueError("offset is negative")
            if n < offset:
                raise ValueError("buffer length < offset")
            if size is None:
                size = n - offset
            elif size < 0:
                raise ValueError("size is negative")
            elif offset + size > n:
                raise ValueError("buffer length < offset + size")
            frame = m[offset : offset + size]
            self._send_bytes(frame)
        except BaseException as exc:
            rec.error(self, OP_SEND_BYTES, (pseq, t, site), exc)
            raise
        # The whole of a bytes object is the same frame, and cheaper to sample.
        whole = type(buf) is bytes and size == n
        rec.end(self, OP_SEND_BYTES, pseq, t, site, buf if whole else frame)

    def recv_bytes(self, maxlength: int | None = None) -> bytes:
        """Receive bytes data as a bytes object."""
        rec = telemetry._recorder
        if rec is None:
            return _plain_recv_bytes(self, maxlength)
        pseq, t, site, queued = rec.begin_call(self, OP_RECV_BYTES)
        try:
            self._check_closed()
            self._check_readable()
            if maxlength is not None and maxlength < 0:
                raise ValueError("negative maxlength")
            buf = self._recv_bytes(maxlength)
            if buf is None:
                self._bad_message_length()
            data: bytes = buf.getvalue()
        except BaseException as exc:
            rec.error(self, OP_RECV_BYTES, (pseq, t, site), exc, None, queued)
            raise
        rec.end(self, OP_RECV_BYTES, pseq, t, site, data, queued)
        return data

    def recv_bytes_into(self, buf: Any, offset: int = 0) -> int:
        """Receive bytes data into a writeable bytes-like object; return its size."""
        rec = telemetry._recorder
        if rec is None:
            return super().recv_bytes_into(buf, offset)
        now = _monotonic_ns()
        queued = self._queued(now) if now - self._queued_at >= QUEUED_INTERVAL_NS else -1
        begin = rec.begin(self, OP_RECV_BYTES_INTO, _getframe(1), queued)
        received = None
        try:
            self._check_closed()
            self._check_readable()
            with memoryview(buf) as m:
                itemsize = m.itemsize
                bytesize = itemsize * len(m)
                if offset < 0:
                    raise ValueError("negative offset")
                if offset > bytesize:
                    raise ValueError("offset too large")
                received = self._recv_bytes()
                size = received.tell()
                if bytesize < offset + size:
                    raise BufferTooShort(received.getvalue())
                received.seek(0)
                received.readinto(m[offset // itemsize : (offset + size) // itemsize])
        except BaseException as exc:
            consumed = None if received is None else received.getvalue()
            rec.error(self, OP_RECV_BYTES_INTO, begin, exc, consumed, queued)
            raise
        with received.getbuffer() as frame:
            rec.end(self, OP_RECV_BYTES_INTO, begin[0], begin[1], begin[2], frame, queued)
        return size

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
    # Without a Python frame of their own, these four cost little more than the standard
    # methods (docs/performance.md); they call the standard methods outside a run and the
    # Python methods above with the Python writer or unusual arguments.
    _fastring.install_methods(TracedConnection, Connection, vars(telemetry), _dumps, _loads)
