"""The benchmark's plain-socket viewer: websocket frames parsed from any split of the bytes."""

from __future__ import annotations

import json
import random
import socket
import struct
import zlib
from collections.abc import Iterator

import pytest

from bench.rawviewer import Follower

ENDS = [b'"state":"completed"']


def server_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    first = (0x80 if fin else 0) | opcode
    size = len(payload)
    if size < 126:
        return bytes([first, size]) + payload
    if size < 1 << 16:
        return bytes([first, 126]) + struct.pack("!H", size) + payload
    return bytes([first, 127]) + struct.pack("!Q", size) + payload


SNAPSHOT = b'{"type":"snapshot","run":{"id":"r1"},"events":[]}'
EVENTS = b'{"type":"events","run":"r1","events":[' + b'{"kind":"call"},' * 5000 + b"{}]}"
END = b'{"type":"events","run":"r1","events":[{"kind":"run","state":"completed"}]}'


def stream() -> bytes:
    return (
        server_frame(1, SNAPSHOT)
        + server_frame(2, EVENTS)  # 16-bit length
        + server_frame(9, b"hi")  # a ping, answered with a pong
        + server_frame(1, SNAPSHOT[:10], fin=False)
        + server_frame(0, SNAPSHOT[10:])  # a fragmented message
        + server_frame(2, EVENTS * 2)  # 64-bit length
        + server_frame(2, END)
    )


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


@pytest.mark.parametrize("chunk", [1, 7, 125, 4096, 1 << 20])
def test_frames_are_followed_to_the_run_end_however_the_bytes_are_split(
    pair: tuple[socket.socket, socket.socket], chunk: int
) -> None:
    mine, theirs = pair
    follower = Follower(mine, ENDS, compressed=False)
    data = stream()
    for at in range(0, len(data), chunk):
        assert not follower.ended
        follower.feed(memoryview(data)[at : at + chunk])
    assert follower.ended
    assert follower.snapshots == 2
    pong = theirs.recv(100)
    # A masked pong (opcode 10) carrying the ping's two bytes.
    assert pong[0] == 0x8A and pong[1] == 0x80 | 2
    mask = pong[2:6]
    assert bytes(b ^ mask[i % 4] for i, b in enumerate(pong[6:])) == b"hi"


def test_a_frame_naming_another_state_is_not_the_end(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    follower = Follower(pair[0], ENDS, compressed=False)
    follower.feed(memoryview(server_frame(2, END.replace(b"completed", b"running"))))
    assert not follower.ended
    follower.feed(memoryview(server_frame(8, b"\x03\xe8")))
    assert follower.closed and not follower.ended


def deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(1, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush()


def runs(run_id: str, state: str) -> bytes:
    return json.dumps({"type": "runs", "runs": [{"id": run_id, "state": state}]}).encode()


HELLO = b'{"type":"hello","runs":[{"id":"r0","state":"completed"}],"version":"1"}'
# Hex of random bytes: it stays large when compressed (a 64-bit length).
NOISE = random.Random(1).randbytes(60_000).hex().encode()
WIDE = b'{"type":"events","run":"r1","events":[{"kind":"output","text":"' + NOISE + b'"}]}'
# Inflated, more than one step of the follower's bounded inflating.
LAST = (
    b'{"type":"events","run":"r1","events":['
    + b'{"kind":"call"},' * 100_000
    + b'{"kind":"run","state":"completed"}]}'
)
GARBAGE = b"\xff" * 300  # a reserved block type: it does not inflate


def compressed_stream() -> bytes:
    events = deflate(EVENTS)
    snapshot = deflate(SNAPSHOT)
    return (
        server_frame(1, HELLO)
        + server_frame(2, snapshot)  # snapshots are compressed too
        + server_frame(2, events)
        + server_frame(2, snapshot[:3], fin=False)
        + server_frame(0, snapshot[3:])  # a resynchronising one, fragmented
        + server_frame(2, deflate(END))  # the end, before the runs frame: not inflated
        + server_frame(2, GARBAGE)  # not inflated either, so it cannot fail
        + server_frame(9, b"hi")
        + server_frame(1, runs("r2", "completed"))  # another run's end
        + server_frame(1, runs("r1", "running"))
        + server_frame(1, runs("r1", "completed"))
        + server_frame(2, events[:10], fin=False)
        + server_frame(0, events[10:])  # a fragmented message, inflated
        + server_frame(2, deflate(WIDE))
        + server_frame(2, deflate(LAST))
    )


@pytest.mark.parametrize("chunk", [1, 7, 125, 4096, 1 << 20])
def test_compressed_frames_are_followed_to_the_run_end_however_the_bytes_are_split(
    pair: tuple[socket.socket, socket.socket], chunk: int
) -> None:
    mine, theirs = pair
    follower = Follower(mine, ENDS, "r1")
    data = compressed_stream()
    assert len(deflate(WIDE)) >= 1 << 16
    for at in range(0, len(data), chunk):
        assert not follower.ended
        follower.feed(memoryview(data)[at : at + chunk])
    assert follower.ended and follower.announced
    assert follower.snapshots == 2
    assert theirs.recv(100)[0] == 0x8A  # the ping was answered


def test_a_compressed_end_counts_only_after_the_runs_frame_announcing_it(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    follower = Follower(pair[0], ENDS, "r1")
    follower.feed(memoryview(server_frame(1, HELLO)))  # an earlier run, completed
    follower.feed(memoryview(server_frame(1, runs("r2", "completed"))))
    follower.feed(memoryview(server_frame(2, deflate(END))))
    assert not follower.ended and not follower.announced
    follower.feed(memoryview(server_frame(1, runs("r1", "completed"))))
    assert follower.announced and not follower.ended
    follower.feed(memoryview(server_frame(2, deflate(EVENTS))))
    assert not follower.ended
    follower.feed(memoryview(server_frame(2, deflate(END))))
    assert follower.ended


def test_without_a_run_id_any_runs_end_is_announced(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    follower = Follower(pair[0], ENDS)
    follower.feed(memoryview(server_frame(1, runs("r2", "running"))))
    assert not follower.announced
    follower.feed(memoryview(server_frame(1, runs("r2", "completed"))))
    follower.feed(memoryview(server_frame(2, deflate(END))))
    assert follower.ended


def test_a_message_that_does_not_inflate_after_the_announcement_is_an_error(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    follower = Follower(pair[0], ENDS, "r1")
    follower.feed(memoryview(server_frame(1, runs("r1", "completed"))))
    with pytest.raises(RuntimeError, match="expected a raw DEFLATE"):
        follower.feed(memoryview(server_frame(2, GARBAGE)))


def test_a_snapshot_holding_the_end_ends_a_compressed_follower(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    follower = Follower(pair[0], ENDS, "r1")
    snapshot = SNAPSHOT.replace(b'"events":[]', b'"events":[{"kind":"run","state":"completed"}]')
    follower.feed(memoryview(server_frame(1, snapshot)))
    assert follower.ended
