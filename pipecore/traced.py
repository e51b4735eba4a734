"""TracedConnection: the drop-in multiprocessing.Pipe that records every call."""

from __future__ import annotations

import fcntl
import io
import itertools
import math
import os
import socket
import sys
import termios
import time
from multiprocessing import BufferTooShort, reduction
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any, NoReturn

from pipecore import telemetry
from pipecore.recorder import QUEUED_INTERVAL_NS
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
_pipe_numbers = itertools.count(1)
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
    # call site, the begin in the end's slot) and `end` (the record); both run in C
    # when the C writer is active (see `pipecore.recorder`).

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


def _capacity(handle: int, transport: str) -> int | None:
    try:
        if transport == "os.pipe":
            return fcntl.fcntl(handle, fcntl.F_GETPIPE_SZ)
        with socket.socket(fileno=os.dup(handle)) as sock:
            return int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF))
    except OSError:
        return None


def Pipe(
    duplex: bool = True, *, name: str | None = None
) -> tuple[TracedConnection, TracedConnection]:
    """Return a pair of traced connection ends, like `multiprocessing.Pipe(duplex)`.

    The first end is `a`, the second `b`; for `duplex=False` `a` is the reader and
    `b` the writer. The pipe's id is `<this pid>.<n>` and its name `name` or `pipe <n>`.
    While telemetry is active a `pipe` event records its creation.
    """
    n = next(_pipe_numbers)
    pipe_id = f"{os.getpid()}.{n}"
    pipe_name = name if name is not None else f"pipe {n}"
    if duplex:
        s1, s2 = socket.socketpair()
        s1.setblocking(True)
        s2.setblocking(True)
        a = TracedConnection(s1.detach(), pipe_id=pipe_id, pipe_name=pipe_name, end="a")
        b = TracedConnection(s2.detach(), pipe_id=pipe_id, pipe_name=pipe_name, end="b")
        transport = "socketpair"
    else:
        r, w = os.pipe()
        a = TracedConnection(r, writable=False, pipe_id=pipe_id, pipe_name=pipe_name, end="a")
        b = TracedConnection(w, readable=False, pipe_id=pipe_id, pipe_name=pipe_name, end="b")
        transport = "os.pipe"
    rec = telemetry._recorder
    if rec is not None:
        fields: dict[str, Any] = {
            "kind": "pipe",
            "pipe": pipe_id,
            "pipe_name": pipe_name,
            "duplex": duplex,
            "transport": transport,
        }
        capacity = _capacity(b.fileno() if not duplex else a.fileno(), transport)
        if capacity is not None:
            fields["capacity"] = capacity
        site = rec.site_of(_getframe(1))
        if site is not None:
            fields["site"] = site
        rec.event(fields)
    return a, b


def _reduce_traced(conn: TracedConnection) -> tuple[Any, tuple[Any, ...]]:
    df = reduction.DupFd(conn.fileno())
    return _rebuild_traced, (
        df,
        conn.readable,
        conn.writable,
        conn._pipe_id,
        conn._pipe_name,
        conn._end,
        telemetry.active_run_dir(),
        telemetry.active_run_id(),
        os.getpid(),
    )


def _rebuild_traced(
    df: Any,
    readable: bool,
    writable: bool,
    pipe_id: str,
    pipe_name: str,
    end: str,
    run_dir: str | None,
    run_id: str | None,
    sender: int,
) -> TracedConnection:
    fd = df.detach()
    conn = TracedConnection(fd, readable, writable, pipe_id=pipe_id, pipe_name=pipe_name, end=end)
    if run_dir is not None and run_id is not None:
        rec = telemetry._recorder
        if rec is None or rec.run_dir != run_dir:
            try:
                # The sender started this process (under forkserver, getppid() is
                # the fork server, not the process that asked for the child).
                telemetry.activate(run_dir, run_id, parent=sender)
            except OSError:
                return conn  # the run is gone: behave as an untraced end
            rec = telemetry._recorder
        if rec is not None:
            rec.attach(conn)
    return conn


reduction.ForkingPickler.register(TracedConnection, _reduce_traced)
