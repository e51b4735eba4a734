"""TracedCalls: the traced end's frame-moving calls in Python, the reference the C ones follow."""

from __future__ import annotations

import io
import sys
import time
from multiprocessing import BufferTooShort, reduction
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any, NoReturn

from pipecore import telemetry
from pipecore.recorder import QUEUED_INTERVAL_NS
from pipecore.ring import (
    OP_RECV,
    OP_RECV_BYTES,
    OP_RECV_BYTES_INTO,
    OP_SEND,
    OP_SEND_BYTES,
)

_dumps = reduction.ForkingPickler.dumps
_loads = reduction.ForkingPickler.loads
_getframe = sys._getframe
_monotonic_ns = time.monotonic_ns
_plain_send = Connection.send
_plain_recv = Connection.recv
_plain_send_bytes = Connection.send_bytes
_plain_recv_bytes = Connection.recv_bytes


class TracedCalls(Connection):
    """The calls of `pipecore.tracedconnection.TracedConnection` that move a frame:
    send, recv, send_bytes, recv_bytes and recv_bytes_into, recorded in Python."""

    __slots__ = ()

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

        # The traced end's fields (TracedConnection's slots), which the recorder reads.
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

    # Four of these cost two recorder calls: `begin_call` (step gate, call site, the
    # begin in the end's slot) and `end` (the record). With the C writer built, C methods
    # replace all five (pipecore.tracedconnection installs them) and hand on to them only
    # what the C recorder does not record itself: these stay the reference.

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
