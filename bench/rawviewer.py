"""Websocket viewers over plain sockets: the handshake, and readers that cost the machine
little more than the kernel's copy of what they receive."""

from __future__ import annotations

import base64
import json
import os
import selectors
import socket
import struct
import zlib

# The run's terminal event is the last of the frame that ends it; its state is within
# this many bytes of the frame's end.
TAIL_BYTES = 2000
_SNAPSHOT = b'{"type":"snapshot"'
# A text message up to this size is kept whole: a `runs` frame may announce the run's end.
TEXT_KEPT = 1 << 16
_CHUNK = 1 << 20


def handshake(
    host: str, rcvbuf: int | None = None, timeout: float = 10, compress: bool = True
) -> socket.socket:
    """A socket to `host` ("address:port") past the websocket handshake on /ws, with
    nothing after the handshake read; with `compress` it asks for `events` frames as
    raw DEFLATE streams (`/ws?compress=deflate-raw`), as the page does."""
    address, port = host.split(":")
    sock = socket.socket()
    sock.settimeout(timeout)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect((address, int(port)))
    key = base64.b64encode(os.urandom(16)).decode()
    path = "/ws?compress=deflate-raw" if compress else "/ws"
    sock.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
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
    keeps each message's first bytes (to count snapshots) and last bytes (to see the end).

    A `compressed` viewer's binary messages are raw DEFLATE streams (`events` frames and
    snapshots), whose last bytes say nothing: it inflates only their first bytes, and
    keeps small text messages whole, and once a `runs` frame
    announces that the run (`run_id`, or any run without one) reached a state of `ends`,
    it inflates the binary messages that follow to see the terminal `run` event.
    """

    def __init__(
        self,
        sock: socket.socket,
        ends: list[bytes],
        run_id: str | None = None,
        compressed: bool = True,
    ) -> None:
        self.sock = sock
        self.ends = ends
        self.run_id = run_id
        self.compressed = compressed
        self.ended = False
        self.closed = False
        self.announced = False  # a `runs` frame announced the run's end
        self.snapshots = 0
        self._header = bytearray()
        self._in_payload = False
        self._left = 0  # payload bytes of the current frame not yet received
        self._opcode = 0
        self._fin = True
        self._head = bytearray()  # the current message's first bytes
        self._tail = b""  # the current message's last bytes (inflated, when inflating)
        self._text: bytearray | None = None  # the current text message, while small
        self._inflater: zlib._Decompress | None = None
        # inflates a compressed message's first bytes, to tell a snapshot from `events`
        self._peek: zlib._Decompress | None = None
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
                self._start_message(opcode)
        self._header.clear()
        self._left = length
        self._in_payload = length > 0
        if length == 0:
            self._frame_done()
        return at + 1

    def _start_message(self, opcode: int) -> None:
        self._head.clear()
        self._tail = b""
        self._text = bytearray() if opcode == 1 else None
        inflate = self.compressed and self.announced and opcode == 2
        self._inflater = zlib.decompressobj(-15) if inflate else None
        self._peek = zlib.decompressobj(-15) if self.compressed and opcode == 2 else None

    def _payload(self, chunk: memoryview) -> None:
        if self._opcode >= 8:
            self._control += chunk
            return
        want = len(_SNAPSHOT) - len(self._head)
        if want > 0:
            if self._peek is not None:  # a compressed `events` frame or snapshot
                try:
                    data = self._peek.unconsumed_tail + chunk
                    self._head += self._peek.decompress(data, want)
                except zlib.error:
                    self._peek = None  # not DEFLATE: the message is left as it is
            else:
                self._head += chunk[:want]
        if self._text is not None:
            if len(self._text) + len(chunk) <= TEXT_KEPT:
                self._text += chunk
            else:
                self._text = None
        if self._inflater is not None:
            self._inflate(self._inflater, chunk)
        else:
            self._keep_tail(chunk)

    def _keep_tail(self, data: bytes | memoryview) -> None:
        self._tail = (self._tail + bytes(data[-TAIL_BYTES:]))[-TAIL_BYTES:]

    def _inflate(self, inflater: zlib._Decompress, data: bytes | memoryview) -> None:
        try:
            # Bounded output steps: only the last bytes are kept, never the whole frame.
            while data:
                self._keep_tail(inflater.decompress(data, _CHUNK))
                data = inflater.unconsumed_tail
        except zlib.error as exc:
            raise RuntimeError(
                f"expected a raw DEFLATE `events` message after the run's end, got one "
                f"that does not inflate ({exc}), starting {bytes(self._head)!r}"
            ) from exc

    def _frame_done(self) -> None:
        if self._opcode == 9:  # ping: answer it
            self.sock.sendall(client_frame(10, bytes(self._control)))
        elif self._opcode == 8:
            self.closed = True
        elif self._fin and self._opcode in (1, 2):
            self._message_done()
        if self._opcode >= 8:
            self._control.clear()

    def _message_done(self) -> None:
        head = self._head
        self.snapshots += head.startswith(_SNAPSHOT)
        if self._text is not None and not head.startswith(_SNAPSHOT):
            self.announced = self.announced or self._announces_end(bytes(self._text))
        if self._inflater is not None:
            self._keep_tail(self._inflater.flush())
        # Only snapshots and `events` frames carry events; compressed bytes say nothing.
        if self._opcode == 1 and not head.startswith(_SNAPSHOT):
            return
        if self._opcode == 2 and self.compressed and self._inflater is None:
            return
        tail = self._tail
        if b'"kind":"run"' in tail and any(state in tail for state in self.ends):
            self.ended = True

    def _announces_end(self, message: bytes) -> bool:
        frame = json.loads(message)
        if frame.get("type") != "runs":
            return False
        return any(
            (self.run_id is None or run.get("id") == self.run_id)
            and b'"state":' + json.dumps(run.get("state")).encode() in self.ends
            for run in frame["runs"]
        )


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
