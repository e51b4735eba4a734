"""The benchmark's plain-socket viewer: websocket frames parsed from any split of the bytes."""

from __future__ import annotations

import socket
import struct
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
    follower = Follower(mine, ENDS)
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
    follower = Follower(pair[0], ENDS)
    follower.feed(memoryview(server_frame(2, END.replace(b"completed", b"running"))))
    assert not follower.ended
    follower.feed(memoryview(server_frame(8, b"\x03\xe8")))
    assert follower.closed and not follower.ended
