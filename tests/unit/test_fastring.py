"""The C record writer against the Python one: the same calls give the same ring bytes."""

import array
import importlib.util
import inspect
import itertools
import multiprocessing
import os
import pickle
import subprocess
import sys
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import Any

import pytest

import pipecore
from pipecore import recorder, telemetry, traced
from pipecore.ring import (
    HEADER_BYTES,
    OP_SEND_BYTES,
    POSITION,
    REC_BEGIN,
    REC_END,
    REC_ERROR,
    REC_EVENT,
    REC_POLL,
    RECORD_HEAD,
    SLOT_BASE,
    SLOT_SIZE,
    SLOTS,
    WRITE_POS_OFFSET,
    frame_hash,
)
from pipecore.traced import TracedConnection
from tests.unit.conftest import Event, RunFixture, calls, make_run

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SIZES = [0, 100, 192, 193, 700, 1024, 1025, 5000, 70000]
# Larger than a socket's buffer: written straight to the recorder, as if sent.
LARGE = [262_143, 300_000, 1 << 20]
WRITERS: dict[str, type[recorder.Recorder]] = {"python": recorder.Recorder}
if recorder._fastring is not None:
    WRITERS["c"] = recorder.FastRecorder
elif os.environ.get("CI") == "true":
    # `make test` builds the C writer on the machines CI runs on: its absence there is a
    # build failure to see, not a reason to test less.
    raise RuntimeError("the C record writer (pipecore._fastring) was not built")
needs_c = pytest.mark.skipif(
    recorder._fastring is None, reason="the C writer is not built (no compiler at install)"
)


def _payload(n: int) -> bytes:
    return bytes(range(256)) * (n // 256) + bytes(range(n % 256))


def _drive() -> None:
    # Every kind of record the writers produce, from fixed call sites.
    a, b = pipecore.Pipe(name="compare")
    for obj in (None, "text", b"y" * 150, list(range(300))):
        a.send(obj)
        # `queued` is measured at most every QUEUED_INTERVAL_NS: measure it on every
        # receive, so it does not depend on how fast the machine runs the calls.
        b._queued_at = 0
        b.recv()
    for n in SIZES:
        a.send_bytes(_payload(n))
        b._queued_at = 0
        b.recv_bytes()
    a.send_bytes(b"0123456789", 2, 5)
    b._queued_at = 0
    b.recv_bytes()
    # Views, keywords and odd arguments (the C methods hand these to the Python ones).
    sends: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
        ((bytearray(b"mutable"),), {}),
        ((array.array("i", [1, 2]),), {}),
        ((b"keywords",), {"offset": 1, "size": 3}),
        ((b"abc", True), {}),
    ]
    for args, kwargs in sends:
        a.send_bytes(*args, **kwargs)
        b._queued_at = 0
        b.recv_bytes(100)
    a.send(obj="by keyword")
    b._queued_at = 0
    b.recv_bytes(maxlength=100)
    _drive_errors(a, b)
    rec = telemetry.recorder()
    assert rec is not None
    for n in LARGE:
        rec.end(a, OP_SEND_BYTES, 0, 0, 0, _payload(n))
        rec.end(a, OP_SEND_BYTES, 0, 0, 0, memoryview(_payload(n + 8))[8:])
    into = bytearray(64)
    a.send_bytes(b"z" * 40)
    b._queued_at = 0
    b.recv_bytes_into(into, 8)
    b.poll(0)
    b.poll(0.001)
    for i in range(3):
        a.send(i)  # one site, again and again
    for _ in range(3):
        b._queued_at = 0
        b.recv()
    # Ends 128 and beyond have no slot: their begins are records.
    pipes = [pipecore.Pipe() for _ in range(64)]
    for x, y in pipes:
        x.send_bytes(b"ping")
        y.recv_bytes()
    for x, y in pipes:
        x.close()
        y.close()
    b.close()
    with pytest.raises(EOFError):
        a.recv()
    a.close()


class _Unpicklable:
    def __reduce__(self) -> str:
        raise TypeError("expected no pickling, got an attempt")


def _drive_errors(a: TracedConnection, b: TracedConnection) -> None:
    # Each error before, during and after the frame moves is an error record.
    for call in (
        lambda: a.send(_Unpicklable()),
        lambda: a.send_bytes(b"abc", -1),
        lambda: a.send_bytes(b"abc", 1, 5),
        lambda: a.send_bytes(123),
        lambda: b.recv_bytes(-1),
    ):
        b._queued_at = 0
        with pytest.raises((TypeError, ValueError)):
            call()
    a.send_bytes(b"not a pickle")
    b._queued_at = 0
    with pytest.raises(pickle.UnpicklingError):
        b.recv()
    c, d = pipecore.Pipe()
    c.send_bytes(b"y" * 100)
    d._queued_at = 0
    with pytest.raises(OSError, match="bad message length"):
        d.recv_bytes(10)
    c.close()
    with pytest.raises(OSError, match="handle is closed"):
        c.send(1)
    d.close()


def _records(ring: bytes) -> tuple[bytes, list[bytes]]:
    """The header and each record, with every timestamp zeroed."""
    header = bytearray(ring[:HEADER_BYTES])
    for slot in range(SLOTS):
        off = SLOT_BASE + slot * SLOT_SIZE
        header[off + 8 : off + 16] = bytes(8)
    write_pos = POSITION.unpack_from(ring, WRITE_POS_OFFSET)[0]
    assert write_pos < len(ring) - HEADER_BYTES, "Expected no wrap in the comparison"
    records = []
    r = 0
    while r < write_pos:
        off = HEADER_BYTES + r
        length, rtype, _, _ = RECORD_HEAD.unpack_from(ring, off)
        record = bytearray(ring[off : off + length])
        if rtype in (REC_END, REC_ERROR, REC_POLL):
            record[8:16] = record[24:32] = bytes(8)
        elif rtype in (REC_BEGIN, REC_EVENT):
            record[8:16] = bytes(8)
        records.append(bytes(record))
        r += length
    return bytes(header), records


def _timeless(events: list[Event]) -> list[Event]:
    return [{k: v for k, v in e.items() if k not in ("t", "latency_ns", "run")} for e in events]


@pytest.fixture
def writer_run(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[RunFixture]:
    """A run recorded with the writer `request.param` names."""
    monkeypatch.setattr(telemetry, "RECORDER", WRITERS[request.param])
    monkeypatch.setattr(traced, "_pipe_numbers", itertools.count(1))
    run = make_run()
    try:
        yield run
    finally:
        telemetry.deactivate()
        run.collector.close()


def _record(run: RunFixture) -> tuple[bytes, list[bytes], list[Event]]:
    run.activate()
    assert type(telemetry.recorder()) is telemetry.RECORDER
    _drive()
    telemetry.deactivate()
    with open(os.path.join(run.run_dir, f"{os.getpid()}.ring"), "rb") as f:
        ring = f.read()
    header, records = _records(ring)
    return header, records, run.drain(final=True)


@needs_c
def test_both_writers_write_the_same_ring_bytes_and_the_same_events(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    results = {}
    for name, cls in WRITERS.items():
        monkeypatch.setattr(telemetry, "RECORDER", cls)
        monkeypatch.setattr(traced, "_pipe_numbers", itertools.count(1))
        run = make_run()
        try:
            results[name] = _record(run)
        finally:
            telemetry.deactivate()
            run.collector.close()
    py_header, py_records, py_events = results["python"]
    c_header, c_records, c_events = results["c"]
    assert len(c_records) == len(py_records)
    for i, (c, p) in enumerate(zip(c_records, py_records, strict=True)):
        assert c == p, f"record {i}: expected {p.hex()}, got {c.hex()}"
    assert c_header == py_header
    assert _timeless(c_events) == _timeless(py_events)
    sent = calls(c_events, op="send_bytes", phase="end")
    expected = [_payload(n) for n in SIZES] + [b"23456", b"mutable"]
    expected += [array.array("i", [1, 2]).tobytes(), b"eyw", b"bc", b"not a pickle", b"y" * 100]
    for n in LARGE:
        expected += [_payload(n), _payload(n + 8)[8:]]
    got = [(e["nbytes"], e["hash"]) for e in sent[: len(expected)]]
    assert got == [(len(p), f"{frame_hash(p):08x}") for p in expected]
    assert len(calls(c_events, phase="begin")) > 64 * 2  # slot begins and begin records


@pytest.mark.parametrize("writer_run", list(WRITERS), indirect=True)
def test_a_call_is_in_the_ring_when_it_returns(writer_run: RunFixture) -> None:
    # Nothing flushes later: a process killed right after the call loses nothing.
    writer_run.activate()
    a, b = pipecore.Pipe()
    for n in SIZES:
        a.send_bytes(_payload(n))
        events = writer_run.drain(final=True)
        sent = calls(events, op="send_bytes", phase="end")
        assert [(e["nbytes"], e["hash"]) for e in sent] == [(n, f"{frame_hash(_payload(n)):08x}")]
        assert b.recv_bytes() == _payload(n)
    a.close()
    b.close()


@pytest.mark.parametrize("writer_run", list(WRITERS), indirect=True)
def test_timestamps_follow_the_clock_and_pseqs_count_up(writer_run: RunFixture) -> None:
    writer_run.activate()
    a, b = pipecore.Pipe()
    start = time.monotonic_ns()
    a.send("x")
    b.recv()
    stop = time.monotonic_ns()
    events = writer_run.drain(final=True)
    mine = [e for e in events if e["kind"] == "call"]
    assert [e["op"] for e in mine if e["phase"] == "end"] == ["send", "recv"]
    assert all(start <= e["t"] <= stop for e in mine)
    every = [e for e in events if e["pid"] == os.getpid()]
    assert [e["pseq"] for e in every] == list(range(1, len(every) + 1))
    a.close()
    b.close()


def _writer_in_child(env: dict[str, str]) -> str:
    code = "from pipecore import telemetry; print(telemetry.WRITER)"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


def test_the_writer_is_chosen_at_import_and_pure_python_forces_python() -> None:
    env = {k: v for k, v in os.environ.items() if k != "PIPESCOPE_PURE_PYTHON"}
    # Built or not, whatever this process was told (PIPESCOPE_PURE_PYTHON may be set here).
    built = importlib.util.find_spec("pipecore._fastring") is not None
    assert _writer_in_child(env) == ("c" if built else "python")
    assert _writer_in_child({**env, "PIPESCOPE_PURE_PYTHON": "1"}) == "python"


@needs_c
def test_the_traced_telemetry_and_collector_tests_pass_with_the_python_writer() -> None:
    env = {**os.environ, "PIPESCOPE_PURE_PYTHON": "1"}
    files = ["tests/unit/test_traced.py", "tests/unit/test_telemetry.py"]
    files += ["tests/unit/test_collector.py", "tests/unit/test_ringreader.py"]
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *files],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]


@needs_c
def test_the_c_writers_lock_excludes_like_threading_lock() -> None:
    assert recorder._fastring is not None
    lock = recorder._fastring.Lock()
    assert lock.acquire() is True
    assert lock.locked()
    assert lock.acquire(False) is False
    lock.release()
    assert not lock.locked()
    with lock:
        assert lock.locked()
    assert not lock.locked()
    with pytest.raises(RuntimeError, match="expected a held lock"):
        lock.release()


@needs_c
def test_the_frame_moving_methods_run_in_c_with_the_standard_signatures() -> None:
    traced_end, other = pipecore.Pipe()
    raw_end, raw_other = multiprocessing.Pipe()
    for name in ("send", "recv", "send_bytes", "recv_bytes", "recv_bytes_into"):
        method = vars(TracedConnection)[name]
        assert type(method).__name__ == "method_descriptor", f"{name}: {method!r}"
        expected = inspect.signature(getattr(raw_end, name))
        assert inspect.signature(getattr(traced_end, name)) == expected
    for end in (traced_end, other, raw_end, raw_other):
        end.close()


def _into_cases(a: Connection, b: Connection) -> list[object]:
    # Each case: what recv_bytes_into returns or raises, the buffer after it, and what
    # the next receive gets (a frame is consumed by a BufferTooShort, not by a bad offset).
    out: list[object] = []

    def case(message: bytes, buf: Any, *args: Any, **kwargs: Any) -> None:
        a.send_bytes(message)
        try:
            got: object = b.recv_bytes_into(buf, *args, **kwargs)
        except Exception as exc:
            got = (type(exc).__name__, exc.args)
        after = bytes(buf) if not isinstance(buf, memoryview) else buf.tobytes()
        a.send_bytes(b"next")
        left = [b.recv_bytes()]
        while left[-1] != b"next":
            left.append(b.recv_bytes())
        out.append((got, after, left))

    case(b"hello", bytearray(16))
    case(b"hello", bytearray(16), 8)
    case(b"exactly", bytearray(7))
    case(b"", bytearray(4), 4)  # an empty frame at the very end
    case(b"0123456789", bytearray(4))  # BufferTooShort carries the whole message
    case(b"0123456789", bytearray(12), 4)  # too short after the offset
    case(b"abc", bytearray(4), -1)
    case(b"abc", bytearray(4), 5)
    case(b"abc", bytearray(8), offset=2)  # a keyword: the Python method
    case(b"abc", bytearray(8), True)  # not an int: the Python method
    case(b"abc", bytearray(8), 2**70)  # beyond a C long long
    case(array.array("i", [7, 8]).tobytes(), array.array("i", [0, 0, 0, 0]), 4)
    case(b"odd", array.array("i", [0, 0]), 2)  # an offset inside an item
    case(b"abc", bytes(8))  # read-only
    case(b"abcd", memoryview(bytearray(8))[::2])  # not contiguous
    case(b"ab", memoryview(bytearray(16)).cast("B", (4, 4)))  # its length is 4 rows
    case(b"abc", 123)  # not a buffer
    return out


@needs_c
@pytest.mark.parametrize("writer_run", list(WRITERS), indirect=True)
def test_recv_bytes_into_runs_in_c_and_behaves_as_the_standard_method(
    writer_run: RunFixture,
) -> None:
    assert type(vars(TracedConnection)["recv_bytes_into"]).__name__ == "method_descriptor"
    raw = multiprocessing.Pipe()
    standard = _into_cases(*raw)
    writer_run.activate()
    a, b = pipecore.Pipe()
    assert _into_cases(a, b) == standard
    assert (("BufferTooShort", (b"0123456789",)), bytes(4), [b"next"]) in standard
    assert (("ValueError", ("negative offset",)), bytes(4), [b"abc", b"next"]) in standard
    # EOF, a closed end and a write-only end raise as the standard ones do.
    ends = {
        "traced": (a, b, *pipecore.Pipe(duplex=False)),
        "raw": (*raw, *multiprocessing.Pipe(duplex=False)),
    }
    results = {}
    for kind, (x, y, reader, writer) in ends.items():
        got = []
        with pytest.raises(OSError) as info:
            writer.recv_bytes_into(bytearray(4))
        got.append(info.value.args)
        x.close()
        with pytest.raises(EOFError):
            y.recv_bytes_into(bytearray(4))
        y.close()
        with pytest.raises(OSError) as info:
            y.recv_bytes_into(bytearray(4))
        got.append(info.value.args)
        reader.close()
        writer.close()
        results[kind] = got
    assert results["traced"] == results["raw"]
    events = writer_run.drain_until(
        lambda ev: len(calls(ev, op="recv_bytes_into", phase="error", error_type="EOFError")) == 1
    )
    ends_ok = calls(events, op="recv_bytes_into", phase="end")
    assert [e["nbytes"] for e in ends_ok][:4] == [5, 5, 7, 0]
    assert ends_ok[0]["hash"] == f"{frame_hash(b'hello'):08x}"
    short = calls(events, op="recv_bytes_into", phase="error", error_type="BufferTooShort")
    # The consumed frame is on the error event; a bad offset consumed nothing.
    assert [(e["nbytes"], e["hash"]) for e in short][:2] == [
        (10, f"{frame_hash(b'0123456789'):08x}")
    ] * 2
    bad = calls(events, op="recv_bytes_into", phase="error", error_type="ValueError")
    assert [e.get("nbytes") for e in bad][:2] == [None, None]
