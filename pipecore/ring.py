"""The ring file's layout: header, in-flight slots, record formats, frame hash."""

from __future__ import annotations

import contextlib
import mmap
import os
import struct
import zlib

# Ring file: a header, one in-flight slot per traced end, then the data area that
# variable-length records wrap around in.
RING_MAGIC = 0x47525350  # "PSRG"
RING_VERSION = 4
WRITE_POS_OFFSET = 64  # own cache line: written by the process
READ_POS_OFFSET = 128  # own cache line: written by the collector
# Beside it, also the collector's: the most unread bytes the process may leave in the
# ring (0: the whole data area). The collector sets it from how fast it drains, so that
# a record never waits much longer than its lag bound to be read.
WINDOW_OFFSET = 136
MIN_WINDOW = 64 * 1024
# The window a run's rings start with when its collector bounds the lag, until it has
# measured its pace.
FIRST_WINDOW = 128 * 1024
WAITING_OFFSET = 192  # own cache line: 1 while the process waits for ring space
RING_HEAD = struct.Struct("<IIQQ")  # magic, version, data bytes, pid
POSITION = struct.Struct("<Q")
SLOT_BASE = 256
SLOT_SIZE = 64
SLOTS = 256  # ends 1..127 get two slots (sending, receiving); later ends write BEGIN records
HEADER_BYTES = SLOT_BASE + SLOTS * SLOT_SIZE
DEFAULT_RING_BYTES = 2 * 1024 * 1024
MIN_RING_BYTES = 64 * 1024

# Control page: written by the controller, read by every traced call.
CONTROL_BYTES = 4096
CONTROL_MAGIC = 0x43525350  # "PSRC"
STEP_FLAG_OFFSET = 8
RING_SIZE_OFFSET = 16
FIRST_WINDOW_OFFSET = 24  # the window a new ring starts with (0: none)
CONTROL_HEAD = struct.Struct("<I")
CONTROL_NAME = "control"
STEPS_NAME = "steps"
RING_SUFFIX = ".ring"

# The in-flight slot of an end: the `begin` of its current call, written in place
# (no reservation, no lock). pseq is written first and again last, so the collector
# reading it in the opposite order knows a consistent slot when both copies agree.
# pseq, t, site id, op, unused, queued (-1: unknown), poll timeout (NaN: None), pseq
SLOT = struct.Struct("<QqIHHqdQ")
SLOT_BODY = struct.Struct("<qIHHqd")  # at slot + 8
SLOT_SEQ = struct.Struct("<Q")  # at slot + 0 and slot + 40
SLOT_LAST = 40

# Record layout. Every record starts with (length, type, op, head length) and is 8-byte
# aligned; `length` covers the whole record including alignment padding.
REC_PAD = 0
REC_BEGIN = 1
REC_END = 2
REC_ERROR = 3
REC_EVENT = 4
REC_DEFINE = 5
REC_POLL = 6
RECORD_HEAD = struct.Struct("<IBBH")
# A call that returned, with its begin: length, type, op, head length, begin t, begin
# pseq (0: no begin), end t, end pseq, queued; then what alike calls share: end id, site
# id, nbytes (-1: no frame), hash, flags, op again; then the head bytes.
CALL = struct.Struct("<IBBHqQqQqIIqIHBx")
# The fields that differ from call to call: begin t, begin pseq, end t, end pseq, queued.
CALL_TIMES = struct.Struct("<8xqQqQq")
# Where the shared part starts: from here to the head's end, the bytes describe a call
# of one end, site, op and frame, whenever it happens.
CALL_KIND_OFFSET = 48
# The same for poll, with its timeout (NaN: None) in place of nbytes.
POLL = struct.Struct("<IBBHqQqQqIIdIHBx")
# The same for a call that raised, then the JSON length; then head bytes and JSON.
ERROR = struct.Struct("<IBBHqQqQqIIqIHBxII")
# A `begin` of an end without a slot: length, type, op, 0, t, pseq, end id, site id,
# queued, poll timeout
BEGIN = struct.Struct("<IBBHqQIIqd")
# length, type, op, 0, t, pseq, json length
EVENT = struct.Struct("<IBBHqQI")
FLAG_RESULT = 1
FLAG_HASHED = 2  # the record's hash is the whole frame's CRC-32
FLAG_SAMPLED = 4  # the record's hash is `frame_sample`; the collector completes it

# Slot offset added for each op: receiving ops use the end's second slot.
RECEIVING = (0, 64, 0, 64, 64, 64, 0)
OPS = ("send", "recv", "send_bytes", "recv_bytes", "recv_bytes_into", "poll", "close")
OP_SEND, OP_RECV, OP_SEND_BYTES, OP_RECV_BYTES, OP_RECV_BYTES_INTO, OP_POLL, OP_CLOSE = range(7)

# How much of each frame a record keeps: the collector derives head, preview, type
# (and, for frames no longer than this, the hash) from these bytes.
HEAD_STORE = 192
# Frames up to this size are hashed whole; larger ones by their length, their first
# HEAD_STORE bytes and one byte in every `sample_stride(n)` counted from the last.
HASH_FULL_LIMIT = 1024
# The stride grows with the frame (about 64 samples) up to one sample per 4 KiB page.
SAMPLE_COUNT = 64
SAMPLE_MIN_STRIDE = 16
SAMPLE_MAX_STRIDE = 4096

_crc32 = zlib.crc32


def sample_stride(n: int) -> int:
    """The distance between sampled bytes of an `n`-byte frame above HASH_FULL_LIMIT."""
    return min(SAMPLE_MAX_STRIDE, max(SAMPLE_MIN_STRIDE, n // SAMPLE_COUNT))


def frame_sample(frame: memoryview | bytes | bytearray) -> int:
    """CRC-32 of the bytes at n-1, n-1-s, n-1-2s, ... (s = `sample_stride(n)`)."""
    n = len(frame)
    s = min(SAMPLE_MAX_STRIDE, max(SAMPLE_MIN_STRIDE, n // SAMPLE_COUNT))
    # Slicing bytes with a step copies in C; a memoryview slice needs tobytes().
    picked = frame[::-s]
    return _crc32(picked if type(picked) is bytes else bytes(picked))


def complete_sample(n: int, head: bytes, sample: int) -> int:
    """The protocol hash of an `n`-byte frame from its head bytes and `frame_sample`."""
    h = _crc32(n.to_bytes(8, "little"))
    h = _crc32(head[:HEAD_STORE], h)
    return _crc32(sample.to_bytes(4, "little"), h)


def record_hash(frame: memoryview | bytes | bytearray) -> tuple[int, int]:
    """What a record stores of a frame longer than HEAD_STORE: (hash, flags), the whole
    frame's CRC-32 up to HASH_FULL_LIMIT bytes, else `frame_sample` for the collector to
    complete (see `frame_hash`)."""
    if len(frame) <= HASH_FULL_LIMIT:
        return _crc32(frame), FLAG_HASHED
    return frame_sample(frame), FLAG_SAMPLED


def frame_hash(frame: memoryview | bytes | bytearray) -> int:
    """The protocol's `hash` of a frame: CRC-32 of the whole frame up to HASH_FULL_LIMIT
    bytes; beyond it, CRC-32 of the 8-byte little-endian length, the first HEAD_STORE
    bytes and the 4-byte little-endian `frame_sample`."""
    n = len(frame)
    if n <= HASH_FULL_LIMIT:
        return _crc32(frame)
    return complete_sample(n, bytes(frame[:HEAD_STORE]), frame_sample(frame))


def ensure_layout(run_dir: str, ring_bytes: int | None = None, window: int = 0) -> None:
    """Create the run directory, its control page and its steps FIFO if missing; each
    ring of the run starts with `window` (see WINDOW_OFFSET; 0: none)."""
    os.makedirs(run_dir, exist_ok=True)
    path = os.path.join(run_dir, CONTROL_NAME)
    if not os.path.exists(path):
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            page = bytearray(CONTROL_BYTES)
            CONTROL_HEAD.pack_into(page, 0, CONTROL_MAGIC)
            POSITION.pack_into(page, RING_SIZE_OFFSET, ring_bytes or DEFAULT_RING_BYTES)
            POSITION.pack_into(page, FIRST_WINDOW_OFFSET, window)
            f.write(page)
        os.replace(tmp, path)
    fifo = os.path.join(run_dir, STEPS_NAME)
    with contextlib.suppress(FileExistsError):
        os.mkfifo(fifo, 0o600)


def map_control(run_dir: str) -> mmap.mmap:
    """Map the run's control page."""
    fd = os.open(os.path.join(run_dir, CONTROL_NAME), os.O_RDWR)
    try:
        return mmap.mmap(fd, CONTROL_BYTES)
    finally:
        os.close(fd)
