"""Exports: JSON Lines round-trips the events; the Chrome trace is structurally valid."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from pipecore.export import jsonl_lines, to_chrome_trace, to_jsonl

T0 = 5_000_000_000


def _call(seq: int, pid: int, op: str, phase: str, end: str, t_us: int, **extra: Any) -> Any:
    return {
        "run": "r1", "seq": seq, "kind": "call", "t": T0 + t_us * 1000, "pid": pid,
        "process": f"Process-{pid}", "pseq": seq, "pipe": "1.1", "pipe_name": "pipe 1",
        "end": end, "op": op, "phase": phase, **extra,
    }  # fmt: skip


def ping_pong() -> list[dict[str, Any]]:
    return [
        _call(1, 11, "send", "begin", "a", 0),
        _call(2, 11, "send", "end", "a", 5, nbytes=20, hash="0badf00d"),
        _call(3, 12, "recv", "begin", "b", 1),
        _call(4, 12, "recv", "end", "b", 9, nbytes=20, hash="0badf00d", match=2),
        {"run": "r1", "seq": 5, "kind": "output", "t": T0 + 10_000, "pid": 12,
         "process": "Process-12", "stream": "stdout", "text": "got proc1"},
        _call(6, 12, "send", "begin", "b", 11),
        _call(7, 12, "send", "end", "b", 14, nbytes=20, hash="12345678"),
        _call(8, 11, "recv", "begin", "a", 6),
        _call(9, 11, "recv", "end", "a", 20, nbytes=20, hash="12345678", match=7),
    ]  # fmt: skip


def check_structure(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The trace-event format's rules this export promises; returns the flow events."""
    events = doc["traceEvents"]
    named = {e["pid"] for e in events if e["ph"] == "M" and e["name"] == "process_name"}
    for e in events:
        assert e["pid"] in named, f"pid {e['pid']} has no process_name metadata"
        assert e["tid"] == e["pid"], "one track per process: tid equals pid"
        if e["ph"] != "M":
            assert isinstance(e["ts"], float) and e["ts"] >= 0.0, e
        if e["ph"] == "X":
            assert e["dur"] >= 0.0
    flows = [e for e in events if e["ph"] in ("s", "f")]
    starts = Counter(e["id"] for e in flows if e["ph"] == "s")
    finishes = Counter(e["id"] for e in flows if e["ph"] == "f")
    assert starts == finishes, f"unpaired flow ids: {starts} vs {finishes}"
    assert all(n == 1 for n in starts.values()), "each flow id is used by one pair"
    for flow_id in starts:
        s = next(e for e in flows if e["id"] == flow_id and e["ph"] == "s")
        f = next(e for e in flows if e["id"] == flow_id and e["ph"] == "f")
        assert f["ts"] >= s["ts"], "a message arrives after it was sent"
    return flows


def test_jsonl_is_one_event_per_line_and_round_trips() -> None:
    events = ping_pong()
    lines = list(to_jsonl(events))
    assert len(lines) == len(events)
    assert all(line.endswith("\n") and "\n" not in line[:-1] for line in lines)
    assert [json.loads(line) for line in lines] == events


def test_jsonl_writes_what_orjson_refuses_with_the_standard_library() -> None:
    """orjson writes the lines (about 8 times faster); an integer past 64 bits, which a
    traced program's preview or an ingested event may hold, still makes a valid line."""
    events = [{"kind": "output", "seq": 1, "value": 2**70}, {"kind": "output", "seq": 2}]
    lines = list(to_jsonl(events))
    assert lines == [
        '{"kind":"output","seq":1,"value":1180591620717411303424}\n',
        '{"kind":"output","seq":2}\n',
    ]
    assert b"".join(jsonl_lines(events)) == "".join(lines).encode()


def test_jsonl_keeps_chinese_text_readable() -> None:
    line = next(to_jsonl([{"kind": "output", "text": "收到 proc1"}]))
    assert "收到 proc1" in line


def test_chrome_trace_has_a_flow_pair_per_matched_message() -> None:
    doc = to_chrome_trace(ping_pong())
    flows = check_structure(doc)
    assert sorted(e["id"] for e in flows if e["ph"] == "s") == [2, 7]
    send_slices = [e for e in doc["traceEvents"] if e["ph"] == "X" and e["name"].startswith("send")]
    assert [e["ts"] for e in send_slices] == [0.0, 11.0]
    assert [e["dur"] for e in send_slices] == [5.0, 3.0]


def test_chrome_trace_shows_blocked_time_in_the_recv_slice() -> None:
    doc = to_chrome_trace(ping_pong())
    recv = next(e for e in doc["traceEvents"] if e["ph"] == "X" and e["pid"] == 11
                and e["name"].startswith("recv"))  # fmt: skip
    assert recv["ts"] == 6.0 and recv["dur"] == 14.0


def test_chrome_trace_marks_a_corrupt_frame() -> None:
    events = ping_pong()
    events[3] = {**events[3], "hash": "ffffffff", "corrupt": "hash ffffffff, expected 0badf00d"}
    doc = to_chrome_trace(events)
    check_structure(doc)
    marks = [e for e in doc["traceEvents"] if e.get("cat") == "corrupt"]
    assert len(marks) == 1 and "expected 0badf00d" in marks[0]["args"]["explanation"]


def test_a_call_still_blocked_at_the_end_is_an_open_slice() -> None:
    events = [*ping_pong(), _call(10, 12, "recv", "begin", "b", 30)]
    events.append({**events[4], "seq": 11, "t": T0 + 50_000})
    doc = to_chrome_trace(events)
    blocked = [e for e in doc["traceEvents"] if "still blocked" in e.get("name", "")]
    assert len(blocked) == 1 and blocked[0]["dur"] == 20.0
