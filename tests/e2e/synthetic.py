"""Event streams built in code for browser tests: a long run seen through a snapshot's window."""

from __future__ import annotations

from typing import Any

RUN = "rwindow"
PIPE = "100.1"
WRITER, READER = 101, 102
WINDOW_FROM = 10_001  # the first seq of the snapshot's unbroken stretch of calls
LAST_SEND = 12_000  # the newest send in the snapshot: still queued when it is taken


def event(seq: int, kind: str, pid: int, process: str, **fields: Any) -> dict[str, Any]:
    return {
        "run": RUN,
        "seq": seq,
        "kind": kind,
        "t": 1_000_000_000 + seq * 10_000,
        "pid": pid,
        "process": process,
        **fields,
    }


def call(
    seq: int, pid: int, end: str, op: str, phase: str = "end", **fields: Any
) -> dict[str, Any]:
    process = "Process-1" if pid == WRITER else "Process-2"
    extra: dict[str, Any] = {"pipe": PIPE, "pipe_name": "flood", "end": end}
    extra |= {"op": op, "phase": phase}
    if phase == "end" and op in ("send", "recv"):
        extra |= {"nbytes": 20, "preview": f"'m{seq}'", "type": "str", "hash": "0000abcd"}
    return event(seq, "call", pid, process, **extra, **fields)


def summary(state: str = "running", events: int = LAST_SEND) -> dict[str, Any]:
    return {
        "id": RUN,
        "scenario": "flood",
        "title": {"en": "Flood", "zh": "洪泛"},
        "params": {},
        "start_method": "forkserver",
        "state": state,
        "message": "",
        "started": 1.0e9,
        "ended": None,
        "step_mode": False,
        "verdicts": [],
        "events": events,
    }


def windowed_snapshot() -> list[dict[str, Any]]:
    """What a viewer that fell behind gets: the run's run, pipe, process and attach events,
    then only the calls from WINDOW_FROM on, which begin in the middle of the traffic.

    Process-1 sends on end a, Process-2 receives on end b. In the window: two receives of
    frames sent before it (their sends and begins are missing), a send whose receive was
    recorded before it (before the window, so never seen), then send/receive pairs, and last
    a send nobody has received yet.
    """
    events = [
        event(1, "run", 0, "", state="starting"),
        event(2, "process", 100, "MainProcess", op="start"),
        event(
            3,
            "pipe",
            100,
            "MainProcess",
            pipe=PIPE,
            pipe_name="flood",
            duplex=True,
            transport="socketpair",
            capacity=212992,
            site="flood.py:20",
        ),
        event(4, "run", 0, "", state="running"),
        event(5, "process", WRITER, "Process-1", op="start", parent=100),
        event(6, "process", READER, "Process-2", op="start", parent=100),
        event(7, "attach", WRITER, "Process-1", pipe=PIPE, pipe_name="flood", end="a"),
        event(8, "attach", READER, "Process-2", pipe=PIPE, pipe_name="flood", end="b"),
        call(WINDOW_FROM, READER, "b", "recv", match=9_990, latency_ns=50_000),
        call(WINDOW_FROM + 1, READER, "b", "recv", match=9_995, latency_ns=50_000),
        call(WINDOW_FROM + 2, WRITER, "a", "send"),  # received at seq 9_999, before the window
    ]
    seq = WINDOW_FROM + 3
    while seq + 2 <= LAST_SEND:
        send = seq
        events += [
            call(seq, WRITER, "a", "send"),
            call(seq + 1, READER, "b", "recv", "begin"),
            call(seq + 2, READER, "b", "recv", match=send, latency_ns=20_000),
        ]
        seq += 3
    if seq == LAST_SEND - 1:
        events.append(call(seq, WRITER, "a", "send", "begin"))
        seq += 1
    events.append(call(LAST_SEND, WRITER, "a", "send"))
    return events


def finish(reason: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The rest of the run after the snapshot: the queued frame is read and the run completes."""
    done: dict[str, Any] = {"state": "completed", "message": "the scenario ran to completion"}
    if reason is not None:
        done["reason"] = reason
    return [
        call(LAST_SEND + 1, READER, "b", "recv", match=LAST_SEND, latency_ns=20_000),
        event(LAST_SEND + 2, "process", WRITER, "Process-1", op="exit", exitcode=0),
        event(LAST_SEND + 3, "process", READER, "Process-2", op="exit", exitcode=0),
        event(LAST_SEND + 4, "run", 0, "", **done),
    ]
