"""TracedConnection against the standard Connection, call by call, in real processes."""

import array
import contextlib
import glob
import multiprocessing
import os
import re
import struct
import tempfile
from collections.abc import Callable
from multiprocessing import reduction
from multiprocessing.connection import Connection, wait
from typing import Any

import pytest

import pipecore
from pipecore import telemetry
from pipecore.traced import TracedConnection
from tests.unit.conftest import START_METHODS, RunFixture, calls

OBJECTS: list[Any] = [None, 1, "text", b"x" * 100, {"k": [1, 2]}, b"y" * 70000, list(range(500))]
BYTES_CALLS: list[tuple[Any, ...]] = [
    (b"0123456789", 2, 5),
    (array.array("i", [1, 2, 3]),),
    (b"",),
    (b"z" * 20000, 100),
]
Outcome = tuple[str, Any]


def _payloads() -> list[bytes]:
    out = [bytes(reduction.ForkingPickler.dumps(obj)) for obj in OBJECTS]
    for args in BYTES_CALLS:
        m = memoryview(args[0]).cast("B")
        offset = args[1] if len(args) > 1 else 0
        size = args[2] if len(args) > 2 else len(m) - offset
        out.append(bytes(m[offset : offset + size]))
    return out


def _stream_length() -> int:
    return sum(4 + len(p) for p in _payloads())


def _send_everything(conn: Connection) -> None:
    for obj in OBJECTS:
        conn.send(obj)
    for args in BYTES_CALLS:
        conn.send_bytes(*args)


def _read_exactly(fd: int, n: int) -> bytes:
    chunks = []
    while n > 0:
        chunk = os.read(fd, min(n, 1 << 16))
        assert chunk, f"Expected {n} more bytes, but got end of file"
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _child_sends(traced_end: Connection, raw_end: Connection) -> None:
    _send_everything(traced_end)
    _send_everything(raw_end)


def _child_reads(traced_peer: Connection, raw_peer: Connection, out: Connection, n: int) -> None:
    out.send_bytes(_read_exactly(traced_peer.fileno(), n))
    out.send_bytes(_read_exactly(raw_peer.fileno(), n))


def _start(ctx: Any, target: Callable[..., None], *args: Any) -> Any:
    process = ctx.Process(target=target, args=args)
    process.start()
    return process


def _join(process: Any) -> None:
    process.join(30)
    if process.is_alive():
        process.kill()
        process.join()
    assert process.exitcode == 0, f"Expected the child to exit 0, but got {process.exitcode}"


@pytest.mark.parametrize("method", START_METHODS)
def test_bytes_on_the_wire_are_the_standard_ones_both_ways(run: RunFixture, method: str) -> None:
    ctx = multiprocessing.get_context(method)
    run.activate()
    n = _stream_length()

    # Child sends on a traced end and on a standard end; the peers see the same bytes.
    ta, tb = pipecore.Pipe()
    ra, rb = multiprocessing.Pipe()
    child = _start(ctx, _child_sends, tb, rb)
    sender_pid = child.pid
    tb.close()
    rb.close()
    traced_bytes = _read_exactly(ta.fileno(), n)
    raw_bytes = _read_exactly(ra.fileno(), n)
    _join(child)
    assert traced_bytes == raw_bytes
    assert struct.unpack("!i", traced_bytes[:4])[0] == len(_payloads()[0])

    # Parent sends on a traced end and a standard end; a child reads the raw bytes.
    ta2, tb2 = pipecore.Pipe()
    ra2, rb2 = multiprocessing.Pipe()
    out_r, out_w = multiprocessing.Pipe(duplex=False)
    child = _start(ctx, _child_reads, tb2, rb2, out_w, n)
    out_w.close()
    _send_everything(ta2)
    _send_everything(ra2)
    from_traced = out_r.recv_bytes()
    from_raw = out_r.recv_bytes()
    _join(child)
    assert from_traced == from_raw
    assert from_traced == traced_bytes

    # Both sides recorded every traced send; the peers' frames hash alike.
    events = run.drain_until(
        lambda ev: len(calls(ev, op="send_bytes", phase="end")) == 2 * len(BYTES_CALLS)
    )
    for pid in (sender_pid, os.getpid()):
        sends = calls(events, op="send", phase="end", pid=pid)
        assert [e["nbytes"] for e in sends] == [len(p) for p in _payloads()[: len(OBJECTS)]]
        assert [e["type"] for e in sends] == [type(obj).__name__ for obj in OBJECTS]
    for a in (ta, tb, ra, rb, ta2, tb2, ra2, rb2, out_r):
        a.close()


@pytest.mark.parametrize("method", START_METHODS)
def test_a_traced_end_talks_to_an_untraced_end(run: RunFixture, method: str) -> None:
    ctx = multiprocessing.get_context(method)
    run.activate()
    a, b = pipecore.Pipe()
    df_end = Connection(os.dup(b.fileno()))
    out_r, out_w = multiprocessing.Pipe(duplex=False)
    child = _start(ctx, _child_echo_plain, df_end, out_w)
    df_end.close()
    b.close()
    out_w.close()
    a.send({"nested": [1, "two", b"3"]})
    assert a.recv() == {"nested": [1, "two", b"3"]}
    a.send_bytes(b"abcdef")
    buf = bytearray(10)
    assert a.recv_bytes_into(buf, 2) == 6
    assert bytes(buf) == b"\0\0fedcba\0\0"
    assert out_r.recv() == "done"
    _join(child)
    a.close()
    out_r.close()
    events = run.drain_until(lambda ev: bool(calls(ev, op="recv_bytes_into", phase="end")))
    into = calls(events, op="recv_bytes_into", phase="end")[0]
    assert into["nbytes"] == 6
    assert into["preview"] == "b'fedcba'"


def _child_echo_plain(conn: Connection, out: Connection) -> None:
    obj = conn.recv()
    conn.send(obj)
    data = conn.recv_bytes()
    conn.send_bytes(data[::-1])
    out.send("done")
    conn.close()


def _outcome(fn: Callable[[], Any]) -> Outcome:
    try:
        return ("ok", fn())
    except BaseException as exc:  # the exception itself is what is compared
        return (type(exc).__name__, exc.args)


def _behaviour(factory: Callable[..., tuple[Connection, Connection]]) -> list[Outcome]:
    """Every observable result of a fixed sequence of calls on pipes from `factory`."""
    out: list[Outcome] = []
    rec = out.append
    r, w = factory(False)
    rec(_outcome(lambda: (r.readable, r.writable, w.readable, w.writable)))
    rec(_outcome(lambda: r.send(1)))
    rec(_outcome(lambda: r.send_bytes(b"x")))
    rec(_outcome(lambda: w.recv()))
    rec(_outcome(lambda: w.recv_bytes()))
    rec(_outcome(lambda: w.poll()))
    rec(_outcome(lambda: w.send_bytes(b"y" * 100)))
    rec(_outcome(lambda: r.recv_bytes(10)))  # too long: the reader is closed
    rec(_outcome(lambda: (r.closed, r.readable)))
    rec(_outcome(lambda: r.recv()))
    rec(_outcome(lambda: r.fileno()))
    w.close()

    a, b = factory()
    rec(_outcome(lambda: a.send_bytes(b"abc", -1)))
    rec(_outcome(lambda: a.send_bytes(b"abc", 4)))
    rec(_outcome(lambda: a.send_bytes(b"abc", 1, -1)))
    rec(_outcome(lambda: a.send_bytes(b"abc", 2, 5)))
    rec(_outcome(lambda: a.send_bytes(b"abc", 2**70)))  # beyond a C long long
    rec(_outcome(lambda: a.send_bytes(b"abc", 1.0)))  # type: ignore[arg-type]
    rec(_outcome(lambda: a.send_bytes(123)))  # type: ignore[arg-type]
    rec(_outcome(lambda: a.send_bytes(memoryview(b"abcdef")[::2])))
    rec(_outcome(lambda: a.send_bytes(b"keywords", offset=1, size=3)))
    rec(_outcome(lambda: a.send_bytes(bytearray(b"mutable"), True)))
    rec(_outcome(lambda: b.recv_bytes(maxlength=10)))
    rec(_outcome(lambda: b.recv_bytes(100)))
    rec(_outcome(lambda: a.send(obj=("by", "keyword"))))
    rec(_outcome(lambda: b.recv()))
    rec(_outcome(lambda: b.recv_bytes(-1)))
    rec(_outcome(lambda: b.poll()))
    rec(_outcome(lambda: a.send_bytes(b"0123456789")))
    rec(_outcome(lambda: b.poll(5.0)))
    small = bytearray(4)
    rec(_outcome(lambda: b.recv_bytes_into(small)))  # BufferTooShort with the whole message
    rec(_outcome(lambda: b.recv_bytes_into(small, 5)))
    rec(_outcome(lambda: b.recv_bytes_into(small, -1)))
    ints = array.array("i", [0, 0, 0, 0])
    rec(_outcome(lambda: a.send_bytes(array.array("i", [7, 8]))))
    rec(_outcome(lambda: (b.recv_bytes_into(ints, 4), ints.tolist())))
    rec(_outcome(lambda: a.send(lambda: None)))  # unpicklable: fails before the pipe
    rec(_outcome(lambda: a.send_bytes(b"z" * 100)))
    rec(_outcome(lambda: b.recv_bytes(10)))  # too long: a duplex end stops reading
    rec(_outcome(lambda: (b.closed, b.readable, b.writable)))
    rec(_outcome(lambda: b.recv()))
    rec(_outcome(lambda: b.send("still writable")))
    rec(_outcome(lambda: a.recv()))
    b.close()
    rec(_outcome(lambda: a.recv()))  # reset: b closed with unread data
    rec(_outcome(lambda: a.send(1)))  # BrokenPipeError
    rec(_outcome(lambda: a.poll(0)))
    a.close()
    rec(_outcome(lambda: a.close()))
    rec(_outcome(lambda: a.closed))
    rec(_outcome(lambda: a.fileno()))
    rec(_outcome(lambda: a.poll()))
    rec(_outcome(lambda: a.send(1)))
    c, d = factory()
    with c:
        d.send([1, 2])
        rec(_outcome(lambda: (c.recv(), c.closed)))
    rec(_outcome(lambda: c.closed))
    d.close()
    e, f = factory()
    f.close()
    rec(_outcome(lambda: e.recv()))  # EOFError
    rec(_outcome(lambda: e.send(1)))
    e.close()
    return out


def _child_behaviour(activator: Connection, out: Connection) -> None:
    # `activator` is a traced end: unpickling it starts telemetry in this child.
    assert telemetry.active_run_dir() is not None
    out.send(_behaviour(pipecore.Pipe))
    out.send(_behaviour(multiprocessing.Pipe))
    activator.close()


@pytest.mark.parametrize("method", START_METHODS)
def test_results_and_exceptions_are_the_standard_ones(run: RunFixture, method: str) -> None:
    ctx = multiprocessing.get_context(method)
    run.activate()
    activator, keep = pipecore.Pipe()
    out_r, out_w = multiprocessing.Pipe(duplex=False)
    child = _start(ctx, _child_behaviour, activator, out_w)
    out_w.close()
    traced = out_r.recv()
    standard = out_r.recv()
    _join(child)
    assert traced == standard
    assert ("BufferTooShort", (b"0123456789",)) in traced
    assert ("OSError", ("bad message length",)) in traced
    assert ("EOFError", ()) in traced
    assert ("BrokenPipeError", (32, "Broken pipe")) in traced
    # The traced run was recorded: its errors are events of the child.
    events = run.drain_until(
        lambda ev: any(
            e["kind"] == "process" and e["op"] == "exit" and e["pid"] == child.pid for e in ev
        )
    )
    errors = calls(events, phase="error", pid=child.pid)
    assert {e["error_type"] for e in errors} >= {
        "OSError",
        "ValueError",
        "BufferTooShort",
        "EOFError",
        "BrokenPipeError",
    }
    too_short = calls(events, op="recv_bytes_into", phase="error", error_type="BufferTooShort")
    assert too_short[0]["nbytes"] == 10  # the frame was consumed: it is on the event
    # The same calls, outside a run, in this process.
    telemetry.deactivate()
    assert _behaviour(pipecore.Pipe) == standard
    keep.close()
    out_r.close()


def _child_poll_wait_handle(end: Connection, parent_pid: int, path: str) -> None:
    assert end.poll(10.0)
    assert end.recv() == "go"
    end.send("ready")
    with open(path, "rb") as f:
        reduction.send_handle(end, f.fileno(), parent_pid)
    assert end.recv() == "bye"


@pytest.mark.parametrize("method", START_METHODS)
def test_poll_wait_and_send_handle_work_on_traced_ends(run: RunFixture, method: str) -> None:
    ctx = multiprocessing.get_context(method)
    run.activate()
    a, b = pipecore.Pipe()
    with tempfile.NamedTemporaryFile() as f:
        f.write(b"handle passed")
        f.flush()
        child = _start(ctx, _child_poll_wait_handle, b, os.getpid(), f.name)
        b.close()
        assert not a.poll(0.01)
        a.send("go")
        assert wait([a], timeout=10) == [a]
        assert a.recv() == "ready"
        fd = reduction.recv_handle(a)
        with open(fd, "rb") as received:
            assert received.read() == b"handle passed"
        a.send("bye")
        _join(child)
    a.close()
    events = run.drain_until(lambda ev: bool(calls(ev, op="poll", phase="end", pid=child.pid)))
    polls = calls(events, op="poll", phase="end")
    assert {(p["pid"], p["result"], p["timeout"]) for p in polls} >= {
        (os.getpid(), False, 0.01),
        (child.pid, True, 10.0),
    }


def _child_reports(end: Connection) -> None:
    end.send(("child", os.getpid(), type(end).__name__, end.pipe_id, end.end))  # type: ignore[attr-defined]
    end.close()


@pytest.mark.parametrize("method", START_METHODS)
def test_a_traced_end_pickled_into_a_child_records_there(run: RunFixture, method: str) -> None:
    ctx = multiprocessing.get_context(method)
    run.activate()
    a, b = pipecore.Pipe(name="to child")
    assert isinstance(a, TracedConnection)
    assert a.pipe_id == f"{os.getpid()}.{a.pipe_id.split('.')[1]}"
    child = _start(ctx, _child_reports, b)
    b.close()
    assert a.recv() == ("child", child.pid, "TracedConnection", a.pipe_id, "b")
    _join(child)
    a.close()
    # Nothing orders this process's recv `end` after the child's exit event: wait for both.
    events = run.drain_until(
        lambda ev: (
            any(e["kind"] == "process" and e["op"] == "exit" and e["pid"] == child.pid for e in ev)
            and bool(calls(ev, op="recv", phase="end", pid=os.getpid()))
        )
    )
    mine = [e for e in events if e["pid"] == child.pid]
    assert [e["kind"] for e in mine][:2] == ["process", "attach"]
    assert mine[0]["parent"] == os.getpid()
    assert mine[1]["pipe"] == a.pipe_id
    assert mine[1]["pipe_name"] == "to child"
    assert mine[1]["end"] == "b"
    assert mine[-1]["op"] == "exit"
    assert mine[-1]["exitcode"] == 0
    send = calls(mine, op="send", phase="end")[0]
    recv = calls(events, op="recv", phase="end", pid=os.getpid())[0]
    assert send["hash"] == recv["hash"]
    assert send["nbytes"] == recv["nbytes"]
    assert send["site"].endswith(f"test_traced.py:{_child_reports.__code__.co_firstlineno + 1}")


def test_pipe_event_names_transport_and_capacity(run: RunFixture) -> None:
    run.activate()
    duplex = pipecore.Pipe()
    oneway = pipecore.Pipe(duplex=False, name="one way")
    events = run.drain_until(lambda ev: len([e for e in ev if e["kind"] == "pipe"]) == 2)
    first, second = [e for e in events if e["kind"] == "pipe"]
    assert (first["transport"], first["duplex"], first["pipe_name"]) == (
        "socketpair",
        True,
        f"pipe {duplex[0].pipe_id.split('.')[1]}",
    )
    assert (second["transport"], second["duplex"], second["pipe_name"]) == (
        "os.pipe",
        False,
        "one way",
    )
    assert second["capacity"] == 65536
    assert first["capacity"] > 0
    assert first["site"].endswith("test_traced.py:" + str(_line_of("duplex = pipecore.Pipe()")))
    for c in (*duplex, *oneway):
        c.close()


def _line_of(text: str) -> int:
    with open(__file__) as f:
        for number, line in enumerate(f, 1):
            if text in line:
                return number
    raise AssertionError(f"Expected {text!r} in {__file__}")


def _shared_paths() -> set[str]:
    """Every path under /dev/shm and under the temporary directory's pipescope-* entries."""
    tops = glob.glob(os.path.join(tempfile.gettempdir(), "pipescope-*"))
    found = set(tops)
    for top in ["/dev/shm", *tops]:
        for folder, dirs, files in os.walk(top):  # another program's entry may go meanwhile
            found.update(os.path.join(folder, name) for name in dirs + files)
    return found


def _shared_open() -> set[str]:
    """What this process holds open or mapped under /dev/shm or a pipescope-* directory."""
    roots = ("/dev/shm/", os.path.join(tempfile.gettempdir(), "pipescope-"))
    held = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the fd listdir itself held
            held.add(os.readlink(f"/proc/self/fd/{fd}"))
    with open("/proc/self/maps") as maps:
        fields = [line.split(maxsplit=5) for line in maps]
    held.update(row[5].strip() for row in fields if len(row) == 6)
    return {path for path in held if path.startswith(roots)}


def _child_outside_a_run(end: Connection) -> None:
    question = end.recv()
    end.send((question.upper(), type(end).__name__, telemetry.recorder() is None))
    end.send(_shared_open())
    end.close()


@pytest.mark.parametrize("method", START_METHODS)
def test_outside_a_run_a_child_records_nothing(
    method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No run: telemetry inactive here, and none of the variables a traced program finds
    # its run by (pipecore.autotrace) in the environment the children inherit.
    for name in [name for name in os.environ if name.startswith("PIPESCOPE_")]:
        monkeypatch.delenv(name)
    assert telemetry.recorder() is None
    ctx = multiprocessing.get_context(method)
    open_before = _shared_open()
    before = _shared_paths()
    a, b = pipecore.Pipe(name="outside")
    child = _start(ctx, _child_outside_a_run, b)
    b.close()
    a.send("ping")
    assert a.recv() == ("PING", "TracedConnection", True)  # no recorder in the child
    child_open = a.recv()
    _join(child)
    a.close()
    assert telemetry.recorder() is None
    # Nothing held by the child or by this process: no ring mapped, no file open.
    assert child_open <= open_before, child_open - open_before
    assert _shared_open() <= open_before
    # Nothing left behind by either. Other programs on the machine (a server's runs, other
    # tests) may add entries meanwhile: what this exchange would add names one of its two
    # processes (a ring is `<pid>.ring`).
    pids = {str(os.getpid()), str(child.pid)}
    added = _shared_paths() - before
    ours = [path for path in added if pids & set(re.split(r"\D+", os.path.basename(path)))]
    assert ours == [], ours


def test_outside_a_run_nothing_is_recorded(tmp_path: Any) -> None:
    assert telemetry.active_run_dir() is None
    a, b = pipecore.Pipe()
    a.send("plain")
    assert b.recv() == "plain"
    a.close()
    b.close()
    assert telemetry.recorder() is None
