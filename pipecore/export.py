"""Exports of a run's events: JSON Lines and the Chrome trace-event format (Perfetto)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

import orjson

Event = dict[str, Any]

SEND_OPS = frozenset({"send", "send_bytes"})
RECV_OPS = frozenset({"recv", "recv_bytes", "recv_bytes_into"})
FORMATS = ("jsonl", "chrome")


def to_jsonl(events: Iterable[Event]) -> Iterator[str]:
    """One protocol event per line, each line ending in a newline."""
    for line in jsonl_lines(events):
        yield line.decode()


def jsonl_lines(events: Iterable[Event]) -> Iterator[bytes]:
    """to_jsonl's lines as UTF-8."""
    for event in events:
        yield event_json(event) + b"\n"


def event_json(event: Event) -> bytes:
    """An event's compact JSON as UTF-8: orjson, about 8 times faster than the standard
    library, which makes what orjson refuses (such as an integer past 64 bits)."""
    try:
        return orjson.dumps(event)
    except TypeError:
        return json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode()


def _us(t: int, t0: int) -> float:
    return (t - t0) / 1000.0


def _call_name(event: Event) -> str:
    return f"{event['op']} {event.get('pipe_name', event.get('pipe', ''))}/{event.get('end', '')}"


def _call_args(event: Event) -> dict[str, Any]:
    keep = ("pipe", "end", "nbytes", "hash", "preview", "type", "site", "error", "corrupt")
    return {key: event[key] for key in keep if key in event}


def to_chrome_trace(events: Iterable[Event]) -> dict[str, Any]:
    """A Chrome trace-event document: a track per process, a slice per call (blocked
    time included), and a flow arrow from each send to the receive it was matched to."""
    ordered = sorted(events, key=lambda e: e.get("seq", 0))
    t0 = min((e["t"] for e in ordered if e.get("t")), default=0)
    out: list[dict[str, Any]] = []
    names: dict[int, str] = {}
    open_calls: dict[tuple[int, str, str, str], Event] = {}
    send_by_seq: dict[int, Event] = {}
    for event in ordered:
        pid = int(event.get("pid", 0))
        if event.get("process"):
            names[pid] = str(event["process"])
        kind = event.get("kind")
        if kind == "call":
            key = (pid, str(event.get("pipe")), str(event.get("end")), str(event["op"]))
            if event["phase"] == "begin":
                open_calls[key] = event
                continue
            begin = open_calls.pop(key, event)
            start = _us(begin["t"], t0)
            slice_ = {
                "ph": "X",
                "name": _call_name(event),
                "cat": "call" if event["phase"] == "end" else "call,error",
                "pid": pid,
                "tid": pid,
                "ts": start,
                "dur": max(_us(event["t"], t0) - start, 0.0),
                "args": _call_args(event),
            }
            out.append(slice_)
            if event["op"] in SEND_OPS and event["phase"] == "end":
                send_by_seq[int(event["seq"])] = event
            match = event.get("match")
            if event["op"] in RECV_OPS and isinstance(match, int) and match in send_by_seq:
                send = send_by_seq[match]
                send_pid = int(send.get("pid", 0))
                flow = {"cat": "message", "name": "message", "id": match}
                out.append(
                    {**flow, "ph": "s", "pid": send_pid, "tid": send_pid, "ts": _us(send["t"], t0)}
                )
                out.append(
                    {
                        **flow,
                        "ph": "f",
                        "bp": "e",
                        "pid": pid,
                        "tid": pid,
                        "ts": _us(event["t"], t0),
                    }
                )
            if "corrupt" in event:
                out.append(
                    {
                        "ph": "i",
                        "s": "t",
                        "name": "corrupt frame",
                        "cat": "corrupt",
                        "pid": pid,
                        "tid": pid,
                        "ts": _us(event["t"], t0),
                        "args": {"explanation": event["corrupt"]},
                    }
                )
        elif kind == "output":
            out.append(
                {
                    "ph": "i",
                    "s": "t",
                    "name": event.get("stream", "stdout"),
                    "cat": "output",
                    "pid": pid,
                    "tid": pid,
                    "ts": _us(event["t"], t0),
                    "args": {"text": event.get("text", "")},
                }
            )
        elif kind == "verdict":
            out.append(
                {
                    "ph": "i",
                    "s": "g",
                    "name": f"verdict: {event.get('verdict')}",
                    "cat": "verdict",
                    "pid": pid,
                    "tid": pid,
                    "ts": _us(event.get("t") or t0, t0),
                    "args": {"message": event.get("message", "")},
                }
            )
    # calls still blocked when the record ends: open slices up to the last event
    t_last = max((e["t"] for e in ordered if e.get("t")), default=t0)
    for (pid, _pipe, _end, _op), begin in open_calls.items():
        start = _us(begin["t"], t0)
        out.append(
            {
                "ph": "X",
                "name": _call_name(begin) + " (still blocked)",
                "cat": "call",
                "pid": pid,
                "tid": pid,
                "ts": start,
                "dur": max(_us(t_last, t0) - start, 0.0),
                "args": _call_args(begin),
            }
        )
    for pid, name in names.items():
        out.append(
            {
                "ph": "M",
                "name": "process_name",
                "pid": pid,
                "tid": pid,
                "args": {"name": f"{name} ({pid})" if pid else "collector"},
            }
        )
        out.append(
            {"ph": "M", "name": "thread_name", "pid": pid, "tid": pid, "args": {"name": name}}
        )
    return {"traceEvents": out, "displayTimeUnit": "ns"}
