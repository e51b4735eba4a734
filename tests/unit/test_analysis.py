"""Tests for pipecore.analysis over hand-built streams: any calls, statistics, one-way pipes."""

from __future__ import annotations

import json
import random
from typing import Any

from pipecore.analysis import Analysis
from pipecore.digest import EXACT_LATENCIES, percentiles
from tests.unit.eventstream import SECOND, Stream


def test_any_sequence_of_calls_is_analysed_without_error() -> None:
    rng = random.Random(11)
    s, an = Stream(), Analysis("r1", deadlock_after_ns=100)
    s.pipe(pipe="p1")
    s.pipe(pipe="p2", duplex=False)
    ops = ["send", "send_bytes", "recv", "recv_bytes", "recv_bytes_into", "poll", "close"]
    errors = [("EOFError", ""), ("OSError", "bad message length"), ("BufferTooShort", "")]
    errors += [("UnpicklingError", "invalid load key"), ("BrokenPipeError", "[Errno 32]")]
    for t in range(1, 3000):
        pid, op = rng.choice([10, 11, 12, 13]), rng.choice(ops)
        where = {"pipe": rng.choice(["p1", "p2"]), "end": rng.choice(["a", "b", "?"])}
        phase = rng.choice(["begin", "end", "end", "error"])
        fields: dict[str, Any] = {"timeout": rng.choice([None, 0.0, 1.0])}
        if phase == "error":
            fields["error_type"], fields["error"] = rng.choice(errors)
        if rng.random() < 0.7:
            fields.update(hash=f"{rng.randrange(4):08x}", nbytes=rng.randrange(0, 100))
        s.add(t, pid, "call", op=op, phase=phase, **where, **fields)
        if rng.random() < 0.01:
            s.add(t, pid, "process", op="exit", exitcode=rng.choice([0, -9, None]))
        s.feed(an)
        an.tick(t)
    json.dumps(an.snapshot())
    assert {v["verdict"] for v in an.verdicts} <= {"corrupt", "deadlock", "eof", "killed"}


def test_statistics_are_exact_on_a_small_example() -> None:
    s, an = Stream(), Analysis("r1")
    s.pipe(capacity=8192)
    s.call(0, 12, "b", "recv", "begin")
    s.send(1 * SECOND, 11, "a", "00000001", 10)
    s.call(1 * SECOND + 100, 12, "b", "recv", "end", hash="00000001", nbytes=10)
    s.send(2 * SECOND, 11, "a", "00000002", 20)
    s.send(3 * SECOND, 11, "a", "00000003", 30)
    s.call(3 * SECOND + 50, 12, "b", "recv", "begin")
    s.call(3 * SECOND + 250, 12, "b", "recv", "end", hash="00000002", nbytes=20)
    s.call(3 * SECOND + 300, 12, "b", "recv", "begin")
    s.call(3 * SECOND + 1300, 12, "b", "recv", "end", hash="00000003", nbytes=30)
    s.feed(an)
    stats = an.stats()["p1"]["a>b"]
    assert stats == {
        "messages": 3,
        "bytes": 60,
        "messages_per_s": 1.5,
        "bytes_per_s": 30.0,
        "latency_ns": {"p50": 1300, "p90": SECOND + 250, "p99": SECOND + 250, "max": SECOND + 250},
        "blocked_ns": {"recv": SECOND + 100 + 200 + 1000, "send": 0},
        "queued": 0,
        "peak_queued": 58,  # frames of 20 and 30 bytes, each with its 4-byte header
        "capacity": 8192,
        "corrupt": 0,
    }
    assert an.stats()["p1"]["b>a"]["messages"] == 0
    snapshot = an.snapshot()
    assert json.loads(json.dumps(snapshot)) == snapshot


def test_a_rate_from_fewer_than_two_messages_is_unknown() -> None:
    s, an = Stream(), Analysis("r1")
    s.pipe(capacity=8192)
    s.send(1 * SECOND, 11, "a", "00000001", 10)
    s.recv(1 * SECOND + 100, 12, "b", "00000001", 10)
    s.feed(an)
    one, none = an.stats()["p1"]["a>b"], an.stats()["p1"]["b>a"]
    # One message gives no interval to divide by, no message none either: not 0/s.
    assert (one["messages"], one["messages_per_s"], one["bytes_per_s"]) == (1, None, None)
    assert (none["messages"], none["messages_per_s"], none["bytes_per_s"]) == (0, None, None)
    s.send(1 * SECOND, 11, "a", "00000002", 10)  # a second one at the same instant: still none
    s.feed(an)
    assert an.stats()["p1"]["a>b"]["messages_per_s"] is None
    s.send(3 * SECOND, 11, "a", "00000003", 30)
    s.feed(an)
    assert an.stats()["p1"]["a>b"]["messages_per_s"] == 1.5
    assert an.stats()["p1"]["a>b"]["bytes_per_s"] == 25.0
    assert json.loads(json.dumps(an.snapshot())) == an.snapshot()


def test_queued_bytes_never_exceed_the_capacity() -> None:
    s, an = Stream(), Analysis("r1")
    s.pipe(capacity=1000)
    # A 5000-byte frame's send ends only after the receiver has read most of it.
    s.send(100, 11, "a", "11111111", 5000)
    s.feed(an)
    assert (an.ends()["p1/b"]["queued"], an.ends()["p1/b"]["peak_queued"]) == (1000, 1000)
    s.recv(200, 12, "b", "11111111", 5000)
    s.feed(an)
    assert an.stats()["p1"]["a>b"]["queued"] == 0


def test_a_one_way_pipe_has_one_direction() -> None:
    s, an = Stream(), Analysis("r1")
    s.pipe(duplex=False)
    s.call(10, 11, "a", "send", "begin")
    s.call(11, 11, "a", "send", "error", error_type="OSError", error="connection is read-only")
    x = s.send(20, 12, "b", "11111111", 10)
    r = s.recv(30, 11, "a", "11111111", 10)
    assert s.feed(an) == []
    assert list(an.stats()["p1"]) == ["b>a"] and r["match"] == x["seq"]


def test_calls_before_the_pipe_event_of_a_one_way_pipe_then_use_its_one_direction() -> None:
    s, an = Stream(), Analysis("r1")
    s.call(10, 11, "a", "send", "begin")
    s.call(11, 11, "a", "send", "error", error_type="OSError", error="connection is read-only")
    assert s.feed(an) == []  # taken for a duplex pipe until its pipe event says otherwise
    s.pipe(t=12, duplex=False)
    s.call(20, 11, "a", "send", "begin")
    s.call(23, 11, "a", "send", "error", error_type="OSError", error="connection is read-only")
    x = s.send(30, 12, "b", "11111111", 10)
    r = s.recv(40, 11, "a", "11111111", 10)
    assert s.feed(an) == []
    stats = an.stats()["p1"]
    assert stats["a>b"]["blocked_ns"] == {"send": 1}
    assert stats["b>a"]["blocked_ns"] == {"recv": 0, "send": 3}
    assert r["match"] == x["seq"]


def test_latency_statistics_of_many_messages_come_from_the_digest() -> None:
    s, an = Stream(), Analysis("r1")
    s.pipe(capacity=10**9)
    latencies = [1000 + 37 * i for i in range(EXACT_LATENCIES + 500)]
    for i, latency in enumerate(latencies):
        t = 10 * SECOND + i * 100_000
        s.send(t, 11, "a", f"{i:08x}", 5)
        s.recv(t + latency, 12, "b", f"{i:08x}", 5)
    s.feed(an)
    stats = an.stats()["p1"]["a>b"]
    exact = percentiles(latencies)
    assert stats["messages"] == len(latencies) and stats["latency_ns"]["max"] == exact["max"]
    for p in ("p50", "p90", "p99"):
        want = exact[p]
        assert want is not None
        assert abs(stats["latency_ns"][p] - want) <= 0.01 * want
