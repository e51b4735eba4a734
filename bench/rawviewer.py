"""Websocket viewers over plain sockets: the handshake, and readers that cost the machine
little more than the kernel's copy of what they receive."""

from __future__ import annotations

import base64
import json
import os
import selectors
import socket
import struct

# The run's terminal event is the last of the frame that ends it; its state is within
# this many bytes of the frame's end.
TAIL_BYTES = 2000
_SNAPSHOT = b'{"type":"snapshot"'
_CHUNK = 1 << 20


def handshake(host: str, rcvbuf: int | None = None, timeout: float = 10) -> socket.socket:
    """A socket to `host` ("address:port") past the websocket handshake on /ws, with
    nothing after the handshake read."""
    address, port = host.split(":")
    sock = socket.socket()
    sock.settimeout(timeout)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect((address, int(port)))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += sock.recv(1)  # byte by byte: leave everything after the handshake unread
    if not answer.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(f"expected the websocket handshake to succeed, got {answer[:80]!r}")
    return sock


def client_frame(opcode: int, payload: bytes) -> bytes:
    """One masked client frame (FIN set) carrying `payload`."""
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    size = len(payload)
    if size < 126:
        head = bytes([0x80 | opcode, 0x80 | size])
    elif size < 1 << 16:
        head = bytes([0x80 | opcode, 0x80 | 126]) + struct.pack("!H", size)
    else:
        head = bytes([0x80 | opcode, 0x80 | 127]) + struct.pack("!Q", size)
    return head + mask + masked


def subscribe(sock: socket.socket, run_id: str) -> None:
    """Send the `subscribe` client message for `run_id`."""
    sock.sendall(client_frame(1, json.dumps({"type": "subscribe", "run": run_id}).encode()))


class Follower:
    """Follows one viewer's frames to the run's end: it parses only frame headers and
    keeps each message's first bytes (to count snapshots) and last bytes (to see the end)."""

    def __init__(self, sock: socket.socket, ends: list[bytes]) -> None:
        self.sock = sock
        self.ends = ends
        self.ended = False
        self.closed = False
        self.snapshots = 0
        self._header = bytearray()
        self._in_payload = False
        self._left = 0  # payload bytes of the current frame not yet received
        self._opcode = 0
        self._fin = True
        self._head = bytearray()  # the current message's first bytes
        self._tail = b""  # the current message's last bytes
        self._control = bytearray()

    def feed(self, data: memoryview) -> None:
        """Take the next bytes received."""
        at, size = 0, len(data)
        while at < size:
            if not self._in_payload:
                at = self._read_header(data, at)
                continue
            take = min(self._left, size - at)
            self._payload(data[at : at + take])
            at += take
            self._left -= take
            if self._left == 0:
                self._in_payload = False
                self._frame_done()

    def _read_header(self, data: memoryview, at: int) -> int:
        self._header += data[at : at + 1]
        header = self._header
        if len(header) < 2:
            return at + 1
        need = 2 + {126: 2, 127: 8}.get(header[1] & 0x7F, 0)
        if len(header) < need:
            return at + 1
        length = header[1] & 0x7F
        if length == 126:
            length = struct.unpack_from("!H", header, 2)[0]
        elif length == 127:
            length = struct.unpack_from("!Q", header, 2)[0]
        opcode = header[0] & 0x0F
        self._fin = bool(header[0] & 0x80)
        if opcode != 0:
            self._opcode = opcode
            if opcode < 8:
                self._head.clear()
                self._tail = b""
        self._header.clear()
        self._left = length
        self._in_payload = length > 0
        if length == 0:
            self._frame_done()
        return at + 1

    def _payload(self, chunk: memoryview) -> None:
        if self._opcode >= 8:
            self._control += chunk
            return
        if len(self._head) < len(_SNAPSHOT):
            self._head += chunk[: len(_SNAPSHOT) - len(self._head)]
        self._tail = (self._tail + bytes(chunk[-TAIL_BYTES:]))[-TAIL_BYTES:]

    def _frame_done(self) -> None:
        if self._opcode == 9:  # ping: answer it
            self.sock.sendall(client_frame(10, bytes(self._control)))
        elif self._opcode == 8:
            self.closed = True
        elif self._fin and self._opcode in (1, 2):
            self.snapshots += self._head.startswith(_SNAPSHOT)
            tail = self._tail
            if b'"kind":"run"' in tail and any(state in tail for state in self.ends):
                self.ended = True
        if self._opcode >= 8:
            self._control.clear()


def follow_all(followers: list[Follower], idle_timeout: float) -> None:
    """Read every follower's socket until each has seen its run end or closed, or nothing
    arrived on any of them for `idle_timeout` seconds."""
    buffer = bytearray(_CHUNK)
    view = memoryview(buffer)
    with selectors.DefaultSelector() as selector:
        for follower in followers:
            follower.sock.setblocking(False)
            selector.register(follower.sock, selectors.EVENT_READ, follower)
        waiting = len(followers)
        while waiting:
            ready = selector.select(idle_timeout)
            if not ready:
                return
            for key, _ in ready:
                follower = key.data
                try:
                    got = follower.sock.recv_into(buffer)
                except BlockingIOError:
                    continue
                if got:
                    follower.feed(view[:got])
                if not got or follower.ended or follower.closed:
                    selector.unregister(follower.sock)
                    waiting -= 1
