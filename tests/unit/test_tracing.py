"""Tracing unmodified example programs: their pipes' events, output and exit status."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pipecore.eventcheck import EventError, check_batch
from pipecore.tracing import new_run_id, program_name, trace_program

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
METHODS = ["spawn", "forkserver", "fork"]
SEND_OPS = {"send", "send_bytes"}
RECV_OPS = {"recv", "recv_bytes", "recv_bytes_into"}


def _trace(
    program: str, method: str, capfd: pytest.CaptureFixture[str]
) -> tuple[int, list[dict[str, Any]], str]:
    events: list[dict[str, Any]] = []
    code = trace_program([sys.executable, str(EXAMPLES / program), method], events.extend)
    out = capfd.readouterr().out
    return code, events, out


def _untraced_output(program: str, method: str) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / program), method],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode, done.stdout


def _messages(events: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    ends = [e for e in events if e["kind"] == "call" and e["phase"] == "end"]
    return [e for e in ends if e["op"] in SEND_OPS], [e for e in ends if e["op"] in RECV_OPS]


def _normalise(text: str) -> list[str]:
    # the parent pid in a Process repr differs from one run to the next
    import re

    return sorted(re.sub(r"parent=\d+", "parent=N", line) for line in text.splitlines())


@pytest.mark.parametrize("method", METHODS)
def test_ping_pong_is_traced_with_unchanged_output(
    method: str, capfd: pytest.CaptureFixture[str]
) -> None:
    code, events, out = _trace("pingpong.py", method, capfd)
    plain_code, plain_out = _untraced_output("pingpong.py", method)
    assert code == plain_code == 0
    assert _normalise(out) == _normalise(plain_out)
    sends, recvs = _messages(events)
    # A send's `end` is stamped after its write returns, so the two sends' order in the
    # stream is the scheduler's; each receive follows the send it took, and matches it.
    assert sorted(e["preview"] for e in sends) == ["'proc1'", "'proc2'"]
    assert [e["preview"] for e in recvs] == ["'proc1'", "'proc2'"]
    by_seq = {e["seq"]: e for e in sends}
    assert [by_seq[e["match"]]["preview"] for e in recvs] == ["'proc1'", "'proc2'"]
    assert [e["hash"] for e in recvs] == [by_seq[e["match"]]["hash"] for e in recvs]
    assert all(e["match"] < e["seq"] for e in recvs)
    printed = [e["text"] for e in events if e["kind"] == "output"]
    assert any(line.startswith("进程proc2(<Process name='Process-2'") for line in printed)
    assert events[-1]["kind"] == "run" and events[-1]["state"] == "completed"
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))


@pytest.mark.parametrize("method", METHODS)
def test_locked_producers_deliver_every_item_intact(
    method: str, capfd: pytest.CaptureFixture[str]
) -> None:
    code, events, out = _trace("producer_consumer.py", method, capfd)
    assert code == 0
    assert "consumed 10 items: A-0 A-1 A-2 A-3 A-4 B-0 B-1 B-2 B-3 B-4" in out
    sends, recvs = _messages(events)
    assert len(sends) == len(recvs) == 10
    by_seq = {e["seq"]: e for e in sends}
    for recv in recvs:
        assert "corrupt" not in recv
        assert by_seq[recv["match"]]["hash"] == recv["hash"]
    # FIFO per writer: each producer's items arrive in the order it sent them
    for name in ("A", "B"):
        got = [r["preview"] for r in recvs if r["preview"].startswith(f"'{name}")]
        assert got == [f"'{name}-{i}'" for i in range(5)]


@pytest.mark.parametrize("method", METHODS)
def test_pipeline_exit_status_passes_through(
    method: str, capfd: pytest.CaptureFixture[str]
) -> None:
    code, events, out = _trace("pipeline.py", method, capfd)
    assert code == 3
    assert out.strip() == "sum of squares 1..5 = 55"
    sends, recvs = _messages(events)
    assert len(sends) == len(recvs) == 6 + 6 + 1  # 5 numbers + sentinel twice, 1 result
    assert all(r["hash"] == {s["seq"]: s for s in sends}[r["match"]]["hash"] for r in recvs)
    exits = [e for e in events if e["kind"] == "process" and e["op"] == "exit"]
    assert {e["exitcode"] for e in exits} == {0, 3}
    assert events[-1]["state"] == "failed"


def _processes_of(run_id: str) -> set[int]:
    """The live processes of trace run `run_id`: every one inherits it in its environment."""
    needle = f"\0PIPESCOPE_TRACE_RUN={run_id}\0".encode()
    found: set[int] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        if needle in b"\0" + environ and _running(int(entry)):
            found.add(int(entry))
    return found


def test_nothing_is_left_behind(capfd: pytest.CaptureFixture[str]) -> None:
    events: list[dict[str, Any]] = []
    trace_program([sys.executable, str(EXAMPLES / "pingpong.py"), "forkserver"], events.extend)
    run_id = events[0]["run"]
    # Only this run is looked at: other runs on the machine come and go meanwhile.
    assert not os.path.exists(f"/dev/shm/pipescope-{run_id}")
    # The program leaves nothing running: its helpers (the fork server, the resource
    # tracker) end by themselves once its main process has exited.
    deadline = time.monotonic() + 30
    while _processes_of(run_id):
        assert time.monotonic() < deadline, f"left running: {_processes_of(run_id)}"
        time.sleep(0.01)


ENDLESS = """
import multiprocessing, time
a, b = multiprocessing.Pipe()
deadline = time.monotonic() + 60
while time.monotonic() < deadline:  # bounded, so a failing test still ends
    a.send("tick")
    b.recv()
    time.sleep(0.01)
"""


def test_a_sink_that_fails_ends_the_program_and_leaves_nothing_behind(tmp_path: Path) -> None:
    script = tmp_path / "endless.py"
    script.write_text(ENDLESS)
    run_id = new_run_id()

    def sink(batch: list[dict[str, Any]]) -> None:
        if any(e["kind"] == "call" for e in batch):
            raise OSError("expected a writable output, got a full disk")

    try:
        with pytest.raises(OSError, match="full disk"):
            trace_program([sys.executable, str(script)], sink, run_id=run_id)
        assert _processes_of(run_id) == set()
        assert not os.path.exists(f"/dev/shm/pipescope-{run_id}")
    finally:
        for pid in _processes_of(run_id):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(f"/dev/shm/pipescope-{run_id}", ignore_errors=True)


def _event(seq: int, **fields: Any) -> dict[str, Any]:
    return {"run": "t1", "seq": seq, "kind": "output", "t": 5, "pid": 7, "process": "Main",
            "stream": "stdout", "text": "hi", **fields}  # fmt: skip


ESCAPING = """
import os, sys, time
pid = os.fork()
if pid == 0:
    os.setsid()
    time.sleep(600)
    os._exit(0)
print(pid, flush=True)
"""


def test_a_process_the_program_left_in_a_session_of_its_own_is_left_running(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """It was ended with the program; untraced it runs on, and so it does traced: the
    trace ends when the program's main process exits, as a shell's command does."""
    script = tmp_path / "escaping.py"
    script.write_text(ESCAPING)
    events: list[dict[str, Any]] = []
    assert trace_program([sys.executable, str(script)], events.extend) == 0
    pid = int(capfd.readouterr().out.split()[-1])
    try:
        assert _running(pid), f"pid {pid} was ended with the trace"
        assert events[-1]["state"] == "completed"
        assert events[-1]["reason"] == {
            "key": "program_exit",
            "args": {"program": "escaping.py", "code": 0},
        }
        assert not os.path.exists(f"/dev/shm/pipescope-{events[0]['run']}")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat.rsplit(b")", 1)[1].split()[0] != b"Z"


def test_check_batch_accepts_the_protocol_and_names_what_breaks_it() -> None:
    good = [_event(3), _event(4, kind="run", state="completed")]
    assert check_batch(good, "t1", 3) == good
    why = {"key": "program_exit", "args": {"program": "prog.py", "code": 0}}
    reasoned = [_event(3, kind="run", state="completed", reason=why)]
    assert check_batch(reasoned, "t1", 3) == reasoned
    wait = {"pid": 7, "process": "w", "pipe": "7.1", "pipe_name": "p", "end": "a", "op": "recv"}
    deadlock = [_event(3, kind="verdict", verdict="deadlock", message="m", cycle=[wait])]
    assert check_batch(deadlock, "t1", 3) == deadlock
    killed = [_event(3, kind="process", op="exit", exitcode=None, killed=True)]
    assert check_batch(killed, "t1", 3) == killed
    polled = [_event(3, kind="call", pipe="1.1", end="a", op="poll", phase="end", timeout=None)]
    assert check_batch(polled, "t1", 3) == polled

    def cycle(*waits: object) -> list[dict[str, object]]:
        return [_event(3, kind="verdict", verdict="deadlock", message="m", cycle=list(waits))]

    refused = {
        "cycle shape": (
            [_event(3, kind="verdict", verdict="deadlock", message="m", cycle="x")],
            "expected 'cycle' to be a list of at most 1024 waits, got 'x'",
        ),
        "cycle wait": (cycle(7), "cycle[0]: expected an object, got int"),
        "cycle pid": (
            cycle({**wait, "pid": "<img src=x>"}),
            "cycle[0]: expected 'pid' to be int, got '<img src=x>'",
        ),
        "cycle name": (cycle({**wait, "process": 1}), "expected 'process' to be str, got 1"),
        "cycle pipe name": (cycle({**wait, "pipe_name": None}), "expected 'pipe_name' to be str"),
        "not a list": ({"seq": 3}, "expected 'events' to be a list, got dict"),
        "foreign run": ([_event(3, run="t2")], "expected 'run' to be 't1', got 't2'"),
        # a long value is named by its first 80 characters, not repeated whole
        "long run": ([_event(3, run="t" * 5000)], f"got '{'t' * 78}…"),
        # every field the analysis and the page read has its protocol type
        "attach without a pipe": (
            [_event(3, kind="attach", end="a")],
            "expected 'pipe' to be str, got None",
        ),
        "attach end": ([_event(3, kind="attach", pipe="1.1", end="c")], "got 'c'"),
        "call size": (
            [_event(3, kind="call", pipe="1.1", end="a", op="send", phase="end", nbytes="9")],
            "expected 'nbytes' to be int, got '9'",
        ),
        "call capacity": (
            [_event(3, kind="call", pipe="1.1", end="a", op="send", phase="end", capacity="x")],
            "expected 'capacity' to be int, got 'x'",
        ),
        "call result": (
            [_event(3, kind="call", pipe="1.1", end="a", op="poll", phase="end", result=1)],
            "expected 'result' to be bool, got 1",
        ),
        "pipe duplex": (
            [_event(3, kind="pipe", pipe="1.1", duplex=1)],
            "expected 'duplex' to be bool, got 1",
        ),
        "pipe capacity": (
            [_event(3, kind="pipe", pipe="1.1", capacity=True)],
            "expected 'capacity' to be int, got True",
        ),
        "thread count": (
            [_event(3, kind="thread", op="start", threads="2")],
            "expected 'threads' to be int, got '2'",
        ),
        "process op": ([_event(3, kind="process", op="left")], "got 'left'"),
        "exit code": (
            [_event(3, kind="process", op="exit", exitcode="x")],
            "expected 'exitcode' to be int or null, got 'x'",
        ),
        "pseq": ([_event(3, pseq=[1])], "expected 'pseq' to be int, got [1]"),
        "a gap": ([_event(3), _event(5)], "event 1 (seq 4): expected 'seq' 4, got 5"),
        "bool seq": ([_event(True)], "expected 'seq' to be int, got True"),
        "kind": ([_event(3, kind="x")], "expected 'kind' to be one of attach, call"),
        "kind list": ([_event(3, kind=["call"])], "expected 'kind' to be one of attach, call"),
        "end object": (
            [_event(3, kind="call", pipe="1.1", end={"a": 1}, op="send", phase="end")],
            "expected 'end' to be one of a, b, got {'a': 1}",
        ),
        "pid": ([_event(3, pid=-1)], "expected 'pid' to be 0 or more, got -1"),
        "state": ([_event(3, kind="run", state="asleep")], "got 'asleep'"),
        "stream": ([_event(3, stream="stdin")], "expected 'stream' to be one of stderr, stdout"),
        "end": ([_event(3, kind="call", pipe="1.1", end="c", op="send", phase="end")], "'c'"),
        "reason shape": (
            [_event(3, kind="run", state="failed", reason="gone")],
            "expected 'reason' to be an object with 'key' and 'args', got 'gone'",
        ),
        "reason key": (
            [_event(3, kind="run", state="failed", reason={"key": 7, "args": {}})],
            "expected 'reason.key' to be a string of 1 to 40 characters, got 7",
        ),
        "reason arg": (
            [_event(3, kind="run", state="failed", reason={"key": "k", "args": {"a": [1]}})],
            "expected 'reason.args.a' to be a string or a number, got [1]",
        ),
        "after the end": (
            [_event(3, kind="run", state="failed"), _event(4)],
            "expected nothing after the run's terminal state",
        ),
    }
    for case, (batch, expected) in refused.items():
        with pytest.raises(EventError) as caught:
            check_batch(batch, "t1", 3)
        assert expected in str(caught.value), case


def test_a_program_is_named_after_its_script_or_module() -> None:
    assert program_name([sys.executable, "-u", "examples/pingpong.py", "fork"]) == "pingpong.py"
    assert program_name(["python3", "-m", "http.server"]) == "http.server"
    assert program_name(["/usr/bin/env"]) == "env"
    assert program_name(["python", "-X", "dev", "-W", "ignore", "prog.py"]) == "prog.py"
    assert program_name(["python", "-Xdev", "-Wignore", "-mpkg.mod", "x.py"]) == "pkg.mod"
    assert program_name(["python", "-uc", "a.send(1/2); print(b)", "x.py"]) == "-c"
    assert program_name(["python", "--check-hash-based-pycs", "never", "p.py"]) == "p.py"
    assert program_name(["python", "-", "arg"]) == "-"
    assert program_name(["python3.11"]) == "python3.11"


def test_a_receive_drained_before_its_send_is_written_with_its_match(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Threads of one process: a receive can be stamped, and drained, before its send's
    end. The pump holds it (and what follows) until the analysis has matched it."""
    from pipecore import eventpump
    from pipecore.eventpump import EventPump

    pump = EventPump(str(tmp_path / "run"), "t1")
    common = {"run": "t1", "pid": 7, "process": "MainProcess", "pipe": "7.1", "pipe_name": "p"}
    t0 = time.monotonic_ns()  # the analysis times out receives whose send never came
    pipe = {**common, "kind": "pipe", "t": t0 + 1, "duplex": True, "capacity": 212_992}
    frame = {"hash": "abcd0123", "nbytes": 12}
    recv = {
        **common,
        "kind": "call",
        "t": t0 + 3,
        "end": "b",
        "op": "recv",
        "phase": "end",
        **frame,
    }
    send = {
        **common,
        "kind": "call",
        "t": t0 + 4,
        "end": "a",
        "op": "send",
        "phase": "end",
        **frame,
    }
    later = {**common, "kind": "output", "t": t0 + 5, "stream": "stdout", "text": "after"}
    drains = iter([[pipe, recv], [send, later], []])
    monkeypatch.setattr(pump.collector, "drain", lambda: next(drains))
    first = pump.pump()
    assert [e["kind"] for e in first] == ["pipe"]  # the receive waits for its send
    second = pump.pump()
    assert [(e["kind"], e.get("op")) for e in second] == [
        ("call", "recv"),
        ("call", "send"),
        ("output", None),
    ]
    assert second[0]["match"] == second[1]["seq"]
    assert [e["seq"] for e in first + second] == [1, 2, 3, 4]
    # A receive whose send never shows (an untraced sender) is held only so long.
    alone = {**common, "kind": "call", "end": "b", "op": "recv", "phase": "end", **frame}
    drains = iter([[{**alone, "t": time.monotonic_ns()}], []])
    monkeypatch.setattr(pump.collector, "drain", lambda: next(drains))
    assert pump.pump() == []
    monkeypatch.setattr(eventpump, "HOLD_UNMATCHED_NS", 0)
    assert [(e["seq"], "match" in e) for e in pump.pump()] == [(5, False)]
    pump.close()


def test_a_tracer_drains_again_at_once_while_it_has_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tracer that waited its interval after every drain fell behind a fast program for
    good: the program then waited for room in its rings (a pinned 100 B ping-pong at 1.40
    times its raw time instead of 1.05)."""
    from pipecore.eventpump import BUSY_EVENTS, EventPump

    pump = EventPump(str(tmp_path / "run"), "t1")
    t0 = time.monotonic_ns()

    def lines(n: int) -> list[dict[str, object]]:
        return [
            {"kind": "output", "run": "t1", "t": t0 + i, "pid": 7, "stream": "stdout", "text": "x"}
            for i in range(n)
        ]

    waiting = [False]
    drains = iter([lines(BUSY_EVENTS), lines(10), lines(10), []])
    monkeypatch.setattr(pump.collector, "drain", lambda: next(drains))
    monkeypatch.setattr(pump.collector, "writers_waiting", lambda: waiting[0])
    try:
        pump.pump()
        assert pump.busy, f"a drain of {BUSY_EVENTS} events: drain again at once"
        pump.pump()
        assert not pump.busy, "a drain of 10 events, nobody waiting: wait the interval"
        waiting[0] = True
        pump.pump()
        assert pump.busy, "a process waits for room in its ring: drain again at once"
        waiting[0] = False
        pump.pump()
        assert not pump.busy
    finally:
        pump.close()
