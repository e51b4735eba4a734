"""/ws?compress=deflate-raw: `events` frames and snapshots as raw DEFLATE streams, each
`events` frame made once."""

import json
import random
import threading
import zlib

import httpx
import pytest
from websockets.sync.client import ClientConnection

from app.frames import FrameBytes, Slice
from app.storewriter import packed
from pipecore import parts
from pipecore.parts import part_of
from tests.integration.wsclient import (
    TERMINAL,
    Frame,
    receive,
    receive_until,
    start_run,
    viewer,
)


def messages_until_the_end(ws: ClientConnection, run_id: str) -> list[str | bytes]:
    """Every message from now to the frame with the run's terminal event."""
    messages: list[str | bytes] = []
    while True:
        message = ws.recv(timeout=30)
        messages.append(message)
        frame = json.loads(inflated(message))
        ended = any(e["kind"] == "run" and e["state"] in TERMINAL for e in frame.get("events", []))
        if frame["type"] == "events" and frame["run"] == run_id and ended:
            return messages


def until_the_snapshot(ws: ClientConnection) -> list[str | bytes]:
    messages: list[str | bytes] = []
    while not messages or json.loads(inflated(messages[-1]))["type"] != "snapshot":
        messages.append(ws.recv(timeout=30))
    return messages


def _compressed(message: str | bytes) -> bool:
    return isinstance(message, bytes) and not message.startswith(b"{")


def inflated(message: str | bytes) -> str | bytes:
    if isinstance(message, bytes) and _compressed(message):
        return zlib.decompress(message, -15)
    return message


def held_events(messages: list[str | bytes], run_id: str) -> list[Frame]:
    events: list[Frame] = []
    for message in messages:
        frame = json.loads(inflated(message))
        if frame["type"] == "snapshot" and frame["run"]["id"] == run_id:
            events = list(frame["events"])
        elif frame["type"] == "events" and frame["run"] == run_id:
            events += frame["events"]
    return events


def test_a_compressing_viewer_gets_the_same_frames_deflated(live_server: str) -> None:
    run_id = start_run(live_server, step_mode=True)
    with viewer(live_server, "?compress=deflate-raw") as packed, viewer(live_server) as plain:
        for ws in (packed, plain):
            receive_until(ws, "hello")
            ws.send(json.dumps({"type": "subscribe", "run": run_id}))
        # Both hold their snapshot before the run goes on; what they received is kept.
        got, expected = until_the_snapshot(packed), until_the_snapshot(plain)
        packed.send(json.dumps({"type": "step_mode", "run": run_id, "on": False}))
        got += messages_until_the_end(packed, run_id)
        expected += messages_until_the_end(plain, run_id)

    binary = [m for m in got if isinstance(m, bytes)]
    assert binary and all(_compressed(m) for m in binary)
    assert sum(map(len, binary)) < sum(len(m) for m in expected if isinstance(m, bytes))
    # Every other frame stays text JSON.
    assert all(json.loads(m)["type"] != "events" for m in got if isinstance(m, str))
    record = httpx.get(f"{live_server}/api/runs/{run_id}/events").json()
    assert held_events(got, run_id) == held_events(expected, run_id) == record
    # Past both snapshots the two viewers get the same slices: byte for byte once inflated.
    both = max(_snapshot_end(got, run_id), _snapshot_end(expected, run_id))
    inflated_frames = {_first_seq(zlib.decompress(m, -15)): zlib.decompress(m, -15) for m in binary}
    plain_frames = {_first_seq(m): m for m in expected if isinstance(m, bytes)}
    later = {seq for seq in inflated_frames if seq > both}
    assert later and all(inflated_frames[seq] == plain_frames[seq] for seq in later)


def _first_seq(frame: bytes) -> int:
    return int(json.loads(frame)["events"][0]["seq"])


def _snapshot_end(messages: list[str | bytes], run_id: str) -> int:
    snapshots = [json.loads(inflated(m)) for m in messages]
    return max(
        (f["events"][-1]["seq"] for f in snapshots if f["type"] == "snapshot" and f["events"]),
        default=0,
    )


def test_a_long_runs_snapshot_comes_deflated_to_a_compressing_viewer(live_server: str) -> None:
    run_id = start_run(live_server, scenario="flood", params={"messages": 3000})
    with viewer(live_server, max_size=None) as ws:
        receive_until(ws, "hello")
        ws.send(json.dumps({"type": "subscribe", "run": run_id}))
        messages_until_the_end(ws, run_id)
    # Viewers that join the ended run get its kept events in one snapshot.
    with (
        viewer(live_server, "?compress=deflate-raw", max_size=None) as packed,
        viewer(live_server, max_size=None) as plain,
    ):
        for ws in (packed, plain):
            receive_until(ws, "hello")
            ws.send(json.dumps({"type": "subscribe", "run": run_id}))
        got, expected = until_the_snapshot(packed)[-1], until_the_snapshot(plain)[-1]
    assert isinstance(got, bytes) and _compressed(got)
    assert isinstance(expected, str)
    assert zlib.decompress(got, -15).decode() == expected
    snapshot = json.loads(expected)
    assert snapshot["type"] == "snapshot" and len(snapshot["events"]) > 12_000
    assert len(got) * 10 < len(expected.encode())


def test_an_unknown_compression_is_named_and_the_frames_stay_plain(live_server: str) -> None:
    run_id = start_run(live_server)
    with viewer(live_server, "?compress=gzip") as ws:
        assert receive(ws)["type"] == "hello"
        assert receive_until(ws, "error")["message"] == (
            "compress: expected 'deflate-raw', got 'gzip'"
        )
        ws.send(json.dumps({"type": "subscribe", "run": run_id}))
        messages = messages_until_the_end(ws, run_id)
    assert not any(_compressed(m) for m in messages)
    assert held_events(messages, run_id)[-1]["state"] == "completed"


def test_a_frame_is_deflated_once_however_many_viewers_send_it() -> None:
    events = [{"seq": s, "kind": "output", "text": "a line " * 20} for s in range(1, 301)]
    piece = Slice("r1", [part_of(events[:100]), part_of(events[100:])])
    deflated = piece.sent(compress=True)
    assert piece.sent(compress=True) is deflated
    assert zlib.decompress(deflated, -15) == piece.frame() == piece.sent(compress=False)
    assert len(deflated) * 10 < len(piece.frame())
    thinned = FrameBytes(b'{"type":"events","run":"r1","events":[],"skipped":3}')
    assert zlib.decompress(thinned.sent(True), -15) == thinned.json


def test_the_store_and_the_compressed_frames_share_each_parts_compression() -> None:
    events = [{"seq": s, "kind": "output", "text": f"line {s}"} for s in range(1, 2001)]
    parts = [part_of(events[:1000]), part_of(events[1000:])]
    record = packed(parts[0])
    # The store's chunk is a whole zlib stream (its check is verified on inflating) ...
    assert json.loads(zlib.decompress(record)) == events[:1000]
    frame = Slice("r1", parts).sent(compress=True)
    # ... and it and the frame are joined around the one compressed piece of the part.
    assert parts[0].deflated() in record and parts[0].deflated() in frame
    assert parts[1].deflated() in frame
    assert json.loads(zlib.decompress(frame, -15))["events"] == events


def test_a_part_asked_for_by_two_threads_at_once_is_deflated_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The store's thread and the loop ask for a new part's compression at the same time:
    # the second waits for the first one's piece instead of making it a second time.
    made: list[bytes] = []
    inside, release = threading.Event(), threading.Event()

    def slow_deflated(data: bytes) -> bytes:
        made.append(data)
        if len(made) == 1:
            inside.set()
            release.wait(30)
        return zlib.compress(data)

    monkeypatch.setattr(parts, "deflated", slow_deflated)
    part = part_of([{"seq": s, "kind": "output", "text": f"line {s}"} for s in range(1, 11)])
    got: list[bytes] = []
    first = threading.Thread(target=lambda: got.append(part.deflated()))
    second = threading.Thread(target=lambda: got.append(part.deflated()))
    first.start()
    assert inside.wait(30)
    second.start()
    second.join(0.2)  # without the lock it makes its own piece now, and returns
    release.set()
    first.join(30)
    second.join(30)
    assert len(made) == 1
    assert len(got) == 2 and got[0] is got[1]


def test_pieces_of_any_data_join_into_one_stream_that_zlib_inflates() -> None:
    # Empty, one byte, incompressible (stored blocks) and longer than DEFLATE's window:
    # each piece ends on a byte boundary without a final block, so any of them joins on.
    datas = [b"", b",", bytes(range(256)) * 300, random.Random(7).randbytes(100_000), b"x" * 5]
    pieces = [parts.deflated(data) for data in datas]
    inflater = zlib.decompressobj(-15)
    for piece, data in zip(pieces, datas, strict=True):
        assert inflater.decompress(piece) == data
        assert not inflater.eof
    assert inflater.decompress(parts.DEFLATE_END) == b"" and inflater.eof
    assert zlib.decompress(b"".join(pieces) + parts.DEFLATE_END, -15) == b"".join(datas)
    assert zlib.decompress(parts.deflated_whole(b"abc"), -15) == b"abc"


def test_a_part_that_came_compressed_is_stored_and_sent_as_it_came() -> None:
    # A run's collector process sends each part as its compressed piece, with the length
    # and Adler-32 of its JSON: the server neither inflates nor compresses it again.
    events = [{"seq": s, "kind": "output", "text": f"行 {s}"} for s in range(1, 501)]
    text = parts.encode_events(events)
    piece = parts.deflated(text)
    part = parts.Part(1, 500, 500, 500, piece=(piece, len(text), parts.array_check(text)))
    assert part.deflated() is piece and part.size == len(text)
    record = packed(part)
    assert piece in record
    assert json.loads(zlib.decompress(record)) == events  # zlib verifies the check
    assert json.loads(zlib.decompress(Slice("r1", [part]).sent(True), -15))["events"] == events
    assert part.json() == text and part.events() == events
