"""The traced Pipe: a drop-in `multiprocessing.Pipe` whose ends record every call."""

from __future__ import annotations

import fcntl
import itertools
import os
import socket
import sys
from multiprocessing import reduction
from typing import Any

from pipecore import telemetry
from pipecore.tracedconnection import TracedConnection as TracedConnection

_pipe_numbers = itertools.count(1)
_getframe = sys._getframe


def _capacity(handle: int, transport: str) -> int | None:
    """The pipe's buffer size in bytes, or None where it cannot be told (an interpreter
    without fcntl.F_GETPIPE_SZ, a handle the system refuses to size)."""
    try:
        if transport == "os.pipe":
            get_size = getattr(fcntl, "F_GETPIPE_SZ", None)
            return None if get_size is None else int(fcntl.fcntl(handle, get_size))
        copy = os.dup(handle)
        try:
            sock = socket.socket(fileno=copy)
        except BaseException:
            os.close(copy)
            raise
        with sock:
            return int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF))
    except (OSError, ValueError):
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
