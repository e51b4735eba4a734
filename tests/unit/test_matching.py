"""FIFO matching (pipecore.matching): receives paired with sends, and the corrupt frames found."""

from __future__ import annotations

import json
import random

from pipecore.analysis import Analysis
from tests.unit.eventstream import SECOND, Stream, kinds


def test_fifo_matches_each_direction_in_order_with_latency() -> None:
    s, an = Stream(), Analysis("r1")
    s.pipe()
    x1 = s.send(100, 11, "a", "00000001", 10)
    y1 = s.send(150, 12, "b", "000000f1", 7)
    x2 = s.send(200, 11, "a", "00000002", 20)
    r1 = s.recv(300, 12, "b", "00000001", 10)
    q1 = s.recv(330, 11, "a", "000000f1", 7)
    r2 = s.recv(450, 12, "b", "00000002", 20)
    assert s.feed(an) == []
    assert (r1["match"], r1["latency_ns"]) == (x1["seq"], 200)
    assert (r2["match"], r2["latency_ns"]) == (x2["seq"], 250)
    assert (q1["match"], q1["latency_ns"]) == (y1["seq"], 180)
    assert not any("corrupt" in ev for ev in s.events)


def test_receive_seen_before_its_send_is_matched_when_the_send_arrives() -> None:
    s, an = Stream(), Analysis("r1")
    s.pipe()
    r = s.recv(100, 12, "b", "0000abcd", 5)
    s.feed(an)
    assert "match" not in r
    x = s.send(101, 11, "a", "0000abcd", 5)
    assert s.feed(an) == []
    assert (r["match"], r["latency_ns"]) == (x["seq"], 0)
    assert an.ends()["p1/b"]["queued"] == 0


def test_hash_mismatch_is_corrupt_naming_both_events_and_matching_goes_on() -> None:
    s, an = Stream(), Analysis("r1")
    s.pipe()
    x1 = s.send(100, 11, "a", "11111111", 10)
    x2 = s.send(110, 11, "a", "22222222", 12)
    bad = s.recv(200, 12, "b", "deadbeef", 10)
    good = s.recv(210, 12, "b", "22222222", 12)
    verdicts = s.feed(an)
    assert kinds(verdicts) == ["corrupt"]
    v = verdicts[0]
    assert v["events"] == [x1["seq"], bad["seq"]]
    assert (v["pipe"], v["end"], v["pid"], v["kind"]) == ("p1", "b", 0, "verdict")
    for text in ("Process-1 seq 3", "Process-2 seq 7", "11111111", "deadbeef", "10 bytes"):
        assert text in v["message"]
    assert bad["corrupt"] == v["message"] and bad["match"] == x1["seq"]
    assert good["match"] == x2["seq"] and "corrupt" not in good
    assert an.verdicts == verdicts
    assert an.stats()["p1"]["a>b"]["corrupt"] == 1


def test_size_mismatch_is_corrupt() -> None:
    s, an = Stream(), Analysis("r1")
    s.pipe()
    sent = s.send(100, 11, "a", "11111111", 10)
    got = s.call(200, 12, "b", "recv_bytes", "end", nbytes=9)
    verdicts = s.feed(an)
    assert kinds(verdicts) == ["corrupt"]
    # Both events are named, in the message and in the reason the page translates.
    assert verdicts[0]["events"] == [sent["seq"], got["seq"]]
    assert f"seq {sent['seq']}" in verdicts[0]["message"]
    assert f"seq {got['seq']}" in verdicts[0]["message"]
    assert verdicts[0]["reason"] == {
        "key": "corrupt",
        "args": {
            "pipe": "p1", "dir": "a>b", "raced": False,
            "sent_process": sent["process"], "sent_seq": sent["seq"],
            "sent_hash": "11111111", "sent_nbytes": 10,
            "got_process": got["process"], "got_seq": got["seq"],
            "got_hash": got.get("hash", "?"), "got_nbytes": 9,
        },
    }  # fmt: skip


def test_frame_may_overtake_another_writers_frame_but_not_its_own() -> None:
    s, an = Stream(), Analysis("r1")
    s.pipe()
    x1 = s.send(100, 11, "a", "11111111", 10)
    x3 = s.send(101, 13, "a", "33333333", 10)
    r3 = s.recv(200, 12, "b", "33333333", 10)
    r1 = s.recv(201, 12, "b", "11111111", 10)
    assert s.feed(an) == []
    assert (r3["match"], r1["match"]) == (x3["seq"], x1["seq"])
    s.send(300, 11, "a", "44444444", 10)
    s.send(301, 11, "a", "55555555", 10)
    s.recv(400, 12, "b", "55555555", 10)
    assert kinds(s.feed(an)) == ["corrupt"]


def test_buffer_too_short_is_matched_and_not_corrupt() -> None:
    s, an = Stream(), Analysis("r1")
    s.pipe()
    x = s.send(100, 11, "a", "11111111", 64)
    err = s.call(
        200, 12, "b", "recv_bytes_into", "error", error_type="BufferTooShort", error="too short"
    )
    assert s.feed(an) == []
    assert err["match"] == x["seq"] and "corrupt" not in err
    assert an.ends()["p1/b"]["state"] == "idle"
    assert an.ends()["p1/b"]["queued"] == 0


def test_bad_message_length_is_corrupt_only_after_a_race() -> None:
    clean, an = Stream(), Analysis("r1")
    clean.pipe()
    clean.send(100, 11, "a", "11111111", 5000)
    over = clean.call(
        200, 12, "b", "recv_bytes", "error", error_type="OSError", error="bad message length"
    )
    assert clean.feed(an) == []
    assert "corrupt" not in over and an.ends()["p1/b"]["state"] == "errored"

    raced, an = Stream(), Analysis("r1")
    raced.pipe(capacity=65536)
    raced.call(100, 11, "a", "send_bytes", "begin")
    raced.call(101, 13, "a", "send_bytes", "begin")
    raced.call(150, 11, "a", "send_bytes", "end", hash="11111111", nbytes=5000)
    raced.call(151, 13, "a", "send_bytes", "end", hash="33333333", nbytes=5000)
    raced.call(200, 12, "b", "recv_bytes", "end", hash="0badf00d", nbytes=5000)
    bad = raced.call(
        210, 12, "b", "recv_bytes", "error", error_type="OSError", error="bad message length"
    )
    verdicts = raced.feed(an)
    assert kinds(verdicts) == ["corrupt", "corrupt"]
    assert "bad message length" in bad["corrupt"] and "interleaved" in bad["corrupt"]
    # 10008 bytes written, 5004 + 4 read: the rest is still in the kernel.
    assert an.stats()["p1"]["a>b"]["queued"] == 5000


def test_matching_resynchronises_after_a_garbled_frame_swallows_two_frames() -> None:
    s, an = Stream(), Analysis("r1")
    s.pipe()
    x1 = s.send(100, 11, "a", "11111111", 100)
    s.send(101, 13, "a", "22222222", 100)
    x3 = s.send(102, 13, "a", "33333333", 50)
    # One header read, then 204 bytes: the rest of x1 and all of x2 (104 + 104 = 4 + 204).
    bad = s.recv(200, 12, "b", "0badf00d", 204)
    good = s.recv(210, 12, "b", "33333333", 50)
    assert kinds(s.feed(an)) == ["corrupt"]
    assert bad["match"] == x1["seq"]
    assert good["match"] == x3["seq"] and "corrupt" not in good
    assert an.stats()["p1"]["a>b"]["queued"] == 0


def test_a_frame_nobody_sent_is_flagged_after_the_threshold() -> None:
    s, an = Stream(), Analysis("r1", deadlock_after_ns=SECOND)
    s.pipe()
    s.send(100, 11, "a", "11111111", 10)
    s.recv(200, 12, "b", "11111111", 10)
    extra = s.recv(300, 12, "b", "99999999", 10)
    assert s.feed(an) == []
    assert an.tick(300 + SECOND) == []  # its send event may still be on its way
    verdicts = an.tick(301 + SECOND)
    assert kinds(verdicts) == ["corrupt"] and verdicts[0]["events"] == [extra["seq"]]
    assert "no frame was sent towards end b" in extra["corrupt"]


def test_unpickling_error_on_recv_is_corrupt() -> None:
    s, an = Stream(), Analysis("r1")
    s.pipe()
    sent = s.send(100, 11, "a", "11111111", 10)
    got = s.call(
        200, 12, "b", "recv", "error", error_type="UnpicklingError", error="invalid load key"
    )
    verdicts = s.feed(an)
    assert kinds(verdicts) == ["corrupt"] and "invalid load key" in verdicts[0]["message"]
    assert verdicts[0]["events"] == [sent["seq"], got["seq"]]
    args = verdicts[0]["reason"]["args"]
    assert (args["sent_seq"], args["got_seq"]) == (sent["seq"], got["seq"])
    assert args["got_error"] == "UnpicklingError: invalid load key"


def test_garbled_race_stream_neither_crashes_nor_explodes() -> None:
    rng = random.Random(7)
    s, an = Stream(), Analysis("r1", deadlock_after_ns=1000)
    s.pipe(capacity=65536)
    t, receives = 0, 0
    for _ in range(400):
        t += rng.randrange(1, 50)
        if rng.random() < 0.5:
            s.send(
                t, rng.choice([11, 13]), "a", f"{rng.getrandbits(32):08x}", rng.randrange(1, 9000)
            )
        elif rng.random() < 0.9:
            receives += 1
            s.recv(t, 12, "b", f"{rng.getrandbits(32):08x}", rng.randrange(1, 9000))
        else:
            receives += 1
            s.call(t, 12, "b", "recv", "error", error_type="OSError", error="bad message length")
        s.feed(an)
    an.tick(t + 10_000)
    assert 0 < len(an.verdicts) <= receives
    assert all(v["verdict"] == "corrupt" for v in an.verdicts)
    json.dumps(an.snapshot())
