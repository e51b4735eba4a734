"""Collector: drains every process's telemetry ring of a run and orders the events."""

from __future__ import annotations

import builtins
import json
import math
import mmap
import os
import pickle
import reprlib
import shutil
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

from pipecore.ordering import CausalOrder
from pipecore.ring import (
    BEGIN,
    CALL,
    ERROR,
    EVENT,
    FLAG_HASHED,
    FLAG_RESULT,
    FLAG_SAMPLED,
    HEADER_BYTES,
    OP_POLL,
    OP_RECV,
    OP_SEND,
    OPS,
    POLL,
    POSITION,
    READ_POS_OFFSET,
    REC_BEGIN,
    REC_DEFINE,
    REC_END,
    REC_ERROR,
    REC_EVENT,
    REC_PAD,
    REC_POLL,
    RECEIVING,
    RECORD_HEAD,
    RING_HEAD,
    RING_MAGIC,
    RING_SUFFIX,
    SLOT_BASE,
    SLOT_BODY,
    SLOT_LAST,
    SLOT_SEQ,
    SLOT_SIZE,
    SLOTS,
    WAITING_OFFSET,
    WRITE_POS_OFFSET,
    complete_sample,
    ensure_layout,
)
from pipecore.stepping import StepControl

Event = dict[str, Any]

PREVIEW_CHARS = 80
HEAD_HEX_BYTES = 64
HOLD_NS = 20_000_000  # events younger than this wait, so a slower ring cannot reorder
RECEIVING_OPS = frozenset(("recv", "recv_bytes", "recv_bytes_into", "poll"))
_DESCRIBE_CACHE_MAX = 4096


@dataclass
class _Ring:
    pid: int
    path: str
    mm: mmap.mmap
    capacity: int
    read_pos: int = 0
    process: str = ""
    ends: dict[int, tuple[str, str, str]] = field(default_factory=dict)
    sites: dict[int, str] = field(default_factory=dict)
    begun: dict[int, int] = field(default_factory=dict)  # slot -> last begin emitted
    done: dict[int, int] = field(default_factory=dict)  # slot -> last begin completed
    exited: bool = False
    last_t: int = 0
    # (end id, site id, op) -> the fields every call event of that kind shares
    templates: dict[tuple[int, int, int], Event] = field(default_factory=dict)


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    # The state follows the parenthesised command name; a zombie has finished.
    state = stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3]
    return state not in (b"Z", b"X")


def _clip(text: str, limit: int = PREVIEW_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class _Opaque:
    """Stands in for an instance of a class the collector will not import."""

    _type_name = "object"

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def __setstate__(self, state: object) -> None:
        pass

    def __setitem__(self, key: object, value: object) -> None:
        pass

    def append(self, item: object) -> None:
        pass

    def extend(self, items: object) -> None:
        pass

    def __repr__(self) -> str:
        return f"{self._type_name}(…)"


_SAFE_BUILTINS = frozenset(("set", "frozenset", "complex", "slice", "range", "object"))
_opaque_classes: dict[str, type[_Opaque]] = {}


class _SafeUnpickler(pickle.Unpickler):
    """Unpickles plain data; any other class becomes an inert stand-in."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "builtins" and name in _SAFE_BUILTINS:
            return getattr(builtins, name)
        cls = _opaque_classes.get(name)
        if cls is None:
            cls = type(name, (_Opaque,), {"_type_name": name})
            if len(_opaque_classes) < 1024:
                _opaque_classes[name] = cls
        return cls

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not decoded")


_repr = reprlib.Repr()
_repr.maxstring = PREVIEW_CHARS
_repr.maxother = PREVIEW_CHARS
_repr.maxlevel = 3

# First-value opcodes of a pickle -> type name (for frames too long to decode).
_STR_OPS = {0x8C: 1, ord("X"): 4, 0x8D: 8}
_BYTES_OPS = {ord("C"): 1, ord("B"): 4, 0x8E: 8, 0x96: 8}
_SIMPLE_OPS = {
    ord("]"): ("list", "[…]"),
    ord("}"): ("dict", "{…}"),
    0x8F: ("set", "{…}"),
    ord("("): ("tuple", "(…)"),
    ord(")"): ("tuple", "()"),
    ord("J"): ("int", "…"),
    ord("K"): ("int", "…"),
    ord("M"): ("int", "…"),
    ord("G"): ("float", "…"),
    ord("N"): ("NoneType", "None"),
    0x88: ("bool", "True"),
    0x89: ("bool", "False"),
}


def _describe_partial(head: bytes) -> tuple[str, str]:
    """Type and preview from the first value opcode of a (truncated) pickle."""
    i = 0
    if head[i : i + 1] == b"\x80":
        i += 2
    if head[i : i + 1] == b"\x95":
        i += 9
    if i >= len(head):
        return "object", "…"
    op = head[i]
    if op in _STR_OPS or op in _BYTES_OPS:
        width = _STR_OPS.get(op) or _BYTES_OPS[op]
        size = int.from_bytes(head[i + 1 : i + 1 + width], "little")
        data = head[i + 1 + width : i + 1 + width + size]
        if op in _STR_OPS:
            text = repr(data.decode("utf-8", "ignore"))
            value, type_name = (text[:-1] if len(data) < size else text), "str"
        else:
            type_name = "bytearray" if op == 0x96 else "bytes"
            text = repr(bytes(data))
            value = text[:-1] if len(data) < size else text
        return type_name, value if len(data) == size else _clip(value + "…", PREVIEW_CHARS)
    if op in _SIMPLE_OPS:
        return _SIMPLE_OPS[op]
    # A class reference: module and name as two short strings then STACK_GLOBAL, or GLOBAL.
    if op == ord("c"):
        line = head[i + 1 :].split(b"\n")
        if len(line) >= 2:
            name = line[1].decode("utf-8", "replace")
            return name, f"{name}(…)"
    strings: list[str] = []
    while i < len(head) and head[i] == 0x8C:
        size = head[i + 1] if i + 1 < len(head) else 0
        strings.append(head[i + 2 : i + 2 + size].decode("utf-8", "replace"))
        i += 2 + size
        if i < len(head) and head[i] == 0x94:  # MEMOIZE
            i += 1
    if len(strings) >= 2 and i < len(head) and head[i] == 0x93:
        return strings[1], f"{strings[1]}(…)"
    return "object", "…"


def describe_pickle(head: bytes, complete: bool) -> tuple[str, str]:
    """The type name and preview (repr, <= 80 chars) of a pickled frame's object.

    `head` is the frame's first bytes; `complete` says whether it is the whole frame.
    Only plain data is rebuilt; other classes are named, never imported.
    """
    if complete:
        try:
            obj = _SafeUnpickler(_BytesReader(head)).load()
        except Exception:
            return _describe_partial(head)
        type_name = obj._type_name if isinstance(obj, _Opaque) else type(obj).__name__
        return type_name, _clip(_repr.repr(obj))
    return _describe_partial(head)


class _BytesReader:
    """Minimal file object over bytes for the unpickler."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def read(self, n: int = -1) -> bytes:
        end = len(self._data) if n < 0 else self._pos + n
        chunk = self._data[self._pos : end]
        self._pos += len(chunk)
        return chunk

    def readinto(self, buf: bytearray | memoryview) -> int:
        chunk = self.read(len(buf))
        buf[: len(chunk)] = chunk
        return len(chunk)

    def readline(self) -> bytes:
        nl = self._data.find(b"\n", self._pos)
        end = len(self._data) if nl < 0 else nl + 1
        chunk = self._data[self._pos : end]
        self._pos = end
        return chunk

    def peek(self, n: int = 0) -> bytes:
        return self._data[self._pos : self._pos + max(n, 1)]


_unpack_call = CALL.unpack_from
_CALL_SIZE = CALL.size
FOREVER = 1 << 62  # `now` for the final drain: no receive waits any longer


class Collector:
    """Drains the telemetry rings of one run directory into ordered protocol events.

    `drain()` returns the events that are new since the last call, merged across
    processes in (t, pid, pseq) order, except that a receive never precedes the
    send it took (`pipecore.ordering`), and numbered with `seq` 1, 2, 3 … . Events
    younger than `hold_ns` are held back until the next drain so that a ring read
    a little later cannot put an earlier event after a later one; `drain(final=True)`
    releases everything. A process whose pid is gone without an `exit` event gets
    a `process` `exit` event with `exitcode` null and `killed` true.
    """

    def __init__(
        self,
        run_dir: str,
        run_id: str,
        *,
        ring_bytes: int | None = None,
        hold_ns: int = HOLD_NS,
    ) -> None:
        self.run_dir = run_dir
        self.run_id = run_id
        self.hold_ns = hold_ns
        ensure_layout(run_dir, ring_bytes)
        self._rings: dict[str, _Ring] = {}
        self._finished: set[str] = set()
        self._pending: list[tuple[int, int, int, Event]] = []
        self._seq = 0
        self._steps: StepControl | None = None
        self._describe_cache: dict[bytes, tuple[str, str]] = {}
        self._bytes_cache: dict[bytes, tuple[str, str]] = {}
        self._closed = False
        self._order = CausalOrder()

    # -- step mode ----------------------------------------------------------------

    def _step_control(self) -> StepControl:
        if self._steps is None:
            self._steps = StepControl(self.run_dir)
        return self._steps

    def set_step_mode(self, on: bool) -> None:
        """Turn the run's step mode on or off (see `stepping.StepControl`)."""
        self._step_control().set_step_mode(on)

    def grant(self, n: int = 1) -> None:
        """Let `n` more traced calls of the run execute while in step mode."""
        self._step_control().grant(n)

    # -- draining -----------------------------------------------------------------

    def writers_waiting(self) -> bool:
        """Whether a process of the run waits for room in its ring (the collector lags):
        such a process is busy recording, whatever its last call looks like."""
        if self._closed:
            return False
        self._discover()
        return any(
            POSITION.unpack_from(ring.mm, WAITING_OFFSET)[0] for ring in self._rings.values()
        )

    def drain(self, *, final: bool = False) -> list[Event]:
        """Return the new events, merged and ordered, with `seq` set."""
        if self._closed:
            return []
        now = time.monotonic_ns()
        self._discover()
        for name, ring in list(self._rings.items()):
            got = self._read(ring)
            self._scan_slots(ring)
            if got or _pid_alive(ring.pid):
                continue
            # The process is gone: anything it wrote before dying is in the ring.
            self._read(ring)
            self._scan_slots(ring)
            if not ring.exited:
                t = max(time.monotonic_ns(), ring.last_t + 1)
                self._hold(
                    t,
                    ring.pid,
                    1 << 62,
                    {
                        "kind": "process",
                        "run": self.run_id,
                        "t": t,
                        "pid": ring.pid,
                        "process": ring.process,
                        "op": "exit",
                        "exitcode": None,
                        "killed": True,
                    },
                )
            ring.mm.close()
            del self._rings[name]
            self._finished.add(name)
        self._pending.sort(key=lambda item: item[:3])
        if final:
            ready = self._pending
            self._pending = []
        else:
            cutoff = now - self.hold_ns
            n = 0
            while n < len(self._pending) and self._pending[n][0] <= cutoff:
                n += 1
            ready = self._pending[:n]
            del self._pending[:n]
        out, held = self._order.release([item[3] for item in ready], FOREVER if final else now)
        for event in held:
            self._hold(event["t"], event["pid"], event.get("pseq", 1 << 62), event)
        for event in out:
            self._seq += 1
            event["seq"] = self._seq
        return out

    def _discover(self) -> None:
        try:
            names = os.listdir(self.run_dir)
        except FileNotFoundError:
            return
        for name in names:
            if not name.endswith(RING_SUFFIX) or name in self._rings or name in self._finished:
                continue
            path = os.path.join(self.run_dir, name)
            try:
                fd = os.open(path, os.O_RDWR)
            except FileNotFoundError:
                continue
            try:
                size = os.fstat(fd).st_size
                if size <= HEADER_BYTES:
                    continue
                mm = mmap.mmap(fd, size)
            finally:
                os.close(fd)
            magic, _version, capacity, pid = RING_HEAD.unpack_from(mm, 0)
            if magic != RING_MAGIC or capacity + HEADER_BYTES != size:
                mm.close()
                self._finished.add(name)
                continue
            read_pos = POSITION.unpack_from(mm, READ_POS_OFFSET)[0]
            self._rings[name] = _Ring(pid, path, mm, capacity, read_pos)

    def _hold(self, t: int, pid: int, pseq: int, event: Event) -> None:
        self._pending.append((t, pid, pseq, event))

    def _read(self, ring: _Ring) -> int:
        mm = ring.mm
        cap = ring.capacity
        write_pos = POSITION.unpack_from(mm, WRITE_POS_OFFSET)[0]
        r = ring.read_pos
        count = 0
        while r < write_pos:
            off = HEADER_BYTES + r % cap
            length, rtype, op = RECORD_HEAD.unpack_from(mm, off)
            if length < RECORD_HEAD.size or length % 8 or length > cap:
                # A ring that does not parse cannot be trusted any further.
                r = write_pos
                break
            if rtype == REC_END:
                self._decode_end(ring, op, off)
                count += 1
            elif rtype != REC_PAD:
                self._decode(ring, rtype, op, off)
                count += 1
            r += length
        if r != ring.read_pos:
            ring.read_pos = r
            POSITION.pack_into(mm, READ_POS_OFFSET, r)
        return count

    def _base(self, ring: _Ring, t: int, pseq: int, kind: str) -> Event:
        ring.last_t = t
        return {
            "kind": kind,
            "run": self.run_id,
            "t": t,
            "pid": ring.pid,
            "process": ring.process,
            "pseq": pseq,
        }

    def _call(self, ring: _Ring, t: int, pseq: int, eid: int, site: int, op: int) -> Event:
        template = ring.templates.get((eid, site, op))
        if template is None:
            template = self._template(ring, eid, site, op)
        event = template.copy()
        event["t"] = t
        event["pseq"] = pseq
        ring.last_t = t
        return event

    def _template(self, ring: _Ring, eid: int, site: int, op: int) -> Event:
        template = self._base(ring, 0, 0, "call")
        ends = ring.ends.get(eid)
        pipe, pipe_name, end = ("?", "?", "?") if ends is None else ends
        template["pipe"] = pipe
        template["pipe_name"] = pipe_name
        template["end"] = end
        template["op"] = OPS[op] if op < len(OPS) else str(op)
        site_text = ring.sites.get(site)
        if site_text is not None:
            template["site"] = site_text
        if ends is not None and (site_text is not None or site == 0):
            # Ends, sites and the process name are defined before use; only a
            # complete template is kept (a process rename clears them all).
            ring.templates[(eid, site, op)] = template
        return template

    def _scan_slots(self, ring: _Ring) -> None:
        """Emit the `begin` of every call in flight whose record has not come yet."""
        mm = ring.mm
        found = []
        for eid in ring.ends:
            for side in (0, 1):
                key = 2 * eid + side
                if key >= SLOTS:
                    continue
                off = SLOT_BASE + key * SLOT_SIZE
                # Read in the reverse of the writer's order: last copy, body, first copy.
                last = SLOT_SEQ.unpack_from(mm, off + SLOT_LAST)[0]
                if last == 0 or last == ring.begun.get(key) or last <= ring.done.get(key, 0):
                    continue
                body = SLOT_BODY.unpack_from(mm, off + 8)
                if SLOT_SEQ.unpack_from(mm, off)[0] == last:
                    found.append((eid, last, body))
        # The writer publishes a call's records before the next call's slot; if nothing
        # was published since the read, every record older than these slots has been read.
        if not found or POSITION.unpack_from(mm, WRITE_POS_OFFSET)[0] != ring.read_pos:
            return
        for eid, pseq, (t, site, op, _, queued, timeout) in found:
            self._begin(ring, t, pseq, eid, site, op, queued, timeout)

    def _begin(
        self,
        ring: _Ring,
        t: int,
        pseq: int,
        eid: int,
        site: int,
        op: int,
        queued: int,
        timeout: float | None,
    ) -> None:
        ring.begun[2 * eid + (1 if RECEIVING[op] else 0)] = pseq
        event = self._call(ring, t, pseq, eid, site, op)
        event["phase"] = "begin"
        if queued >= 0:
            event["queued"] = queued
        if op == OP_POLL:
            event["timeout"] = None if timeout is None or math.isnan(timeout) else timeout
        self._hold(t, ring.pid, pseq, event)

    def _decode_end(self, ring: _Ring, op: int, off: int) -> None:
        """A call that returned: the commonest record, decoded without detours."""
        mm = ring.mm
        _, _, _, t0, pseq0, t, pseq, eid, site, nbytes, queued, h, hlen, flags = _unpack_call(
            mm, off
        )
        template = ring.templates.get((eid, site, op))
        if template is None:
            template = self._template(ring, eid, site, op)
        pending = self._pending
        pid = ring.pid
        if pseq0:
            key = 2 * eid + (1 if RECEIVING[op] else 0)
            if ring.begun.get(key) != pseq0:
                ring.begun[key] = pseq0
                begin = template.copy()
                begin["t"] = t0
                begin["pseq"] = pseq0
                begin["phase"] = "begin"
                if queued >= 0:
                    begin["queued"] = queued
                pending.append((t0, pid, pseq0, begin))
            ring.done[key] = pseq0
        event = template.copy()
        event["t"] = t
        event["pseq"] = pseq
        event["phase"] = "end"
        ring.last_t = t
        if nbytes >= 0:
            start = off + _CALL_SIZE
            self._frame_fields(event, op, mm[start : start + hlen], nbytes, h, flags)
        pending.append((t, pid, pseq, event))

    def _frame_fields(
        self, event: Event, op: int, head: bytes, nbytes: int, h: int, flags: int
    ) -> None:
        """The frame's size, hash (completed here from the stored head), head and preview."""
        event["nbytes"] = nbytes
        if flags & FLAG_SAMPLED:
            h = complete_sample(nbytes, head, h)
        elif not flags & FLAG_HASHED:
            h = zlib.crc32(head)
        event["hash"] = f"{h:08x}"
        event["head"] = head[:HEAD_HEX_BYTES].hex()
        event["type"], event["preview"] = self._describe(op, head, nbytes)

    def _decode(self, ring: _Ring, rtype: int, op: int, off: int) -> None:
        mm = ring.mm
        if rtype in (REC_END, REC_POLL, REC_ERROR):
            jlen = 0
            timeout: float | None = None
            if rtype == REC_END:
                fields = CALL.unpack_from(mm, off)
                start = off + CALL.size
            elif rtype == REC_POLL:
                fields = POLL.unpack_from(mm, off)
                timeout = None if math.isnan(fields[9]) else fields[9]
                fields = (*fields[:9], -1, *fields[10:])
                start = off + POLL.size
            else:
                unpacked = ERROR.unpack_from(mm, off)
                fields, jlen = unpacked[:-2], unpacked[-2]
                start = off + ERROR.size
            _, _, _, t0, pseq0, t, pseq, eid, site, nbytes, queued, h, hlen, flags = fields
            info: dict[str, Any] = {}
            if jlen:
                info = json.loads(mm[start + hlen : start + hlen + jlen])
            if rtype == REC_ERROR and op == OP_POLL:
                timeout = info.get("timeout")
            if pseq0:
                key = 2 * eid + (1 if RECEIVING[op] else 0)
                if ring.begun.get(key) != pseq0:
                    self._begin(ring, t0, pseq0, eid, site, op, queued, timeout)
                ring.done[key] = pseq0
            event = self._call(ring, t, pseq, eid, site, op)
            if rtype == REC_ERROR:
                event["phase"] = "error"
                event["error_type"] = info["error_type"]
                event["error"] = info["error"]
            else:
                event["phase"] = "end"
            if op == OP_POLL:
                event["timeout"] = timeout
                if rtype == REC_POLL:
                    event["result"] = bool(flags & FLAG_RESULT)
            elif nbytes >= 0:
                self._frame_fields(event, op, mm[start : start + hlen], nbytes, h, flags)
            self._hold(t, ring.pid, pseq, event)
        elif rtype == REC_BEGIN:
            _, _, _, t, pseq, eid, site, queued, wait = BEGIN.unpack_from(mm, off)
            self._begin(ring, t, pseq, eid, site, op, queued, wait)
        elif rtype == REC_EVENT:
            _, _, _, t, pseq, jlen = EVENT.unpack_from(mm, off)
            start = off + EVENT.size
            payload = json.loads(mm[start : start + jlen])
            event = self._base(ring, t, pseq, payload.pop("kind"))
            event.update(payload)
            if event["kind"] == "process" and event.get("op") == "exit":
                ring.exited = True
            self._hold(t, ring.pid, pseq, event)
        elif rtype == REC_DEFINE:
            _, _, _, _, _, jlen = EVENT.unpack_from(mm, off)
            start = off + EVENT.size
            payload = json.loads(mm[start : start + jlen])
            if "eid" in payload:
                ring.ends[payload["eid"]] = (payload["pipe"], payload["pipe_name"], payload["end"])
            elif "site_id" in payload:
                ring.sites[payload["site_id"]] = payload["site"]
            elif "process" in payload:
                ring.process = payload["process"]
                ring.templates.clear()

    def _describe(self, op: int, head: bytes, nbytes: int) -> tuple[str, str]:
        pickled = op in (OP_SEND, OP_RECV)
        complete = nbytes == len(head)
        if not pickled:
            # The first PREVIEW_CHARS + 1 stored bytes decide the preview (and whether
            # it is cut short): frames alike share it.
            key = head[: PREVIEW_CHARS + 1]
            preview = self._bytes_cache.get(key)
            if preview is None:
                text = repr(head[:PREVIEW_CHARS])
                preview = "bytes", _clip(text[:-1] + "…" if nbytes > PREVIEW_CHARS else text)
                if len(self._bytes_cache) >= _DESCRIBE_CACHE_MAX:
                    self._bytes_cache.clear()
                self._bytes_cache[key] = preview
            return preview
        if not complete:
            return describe_pickle(head, complete=False)
        cached = self._describe_cache.get(head)
        if cached is None:
            cached = describe_pickle(head, complete=True)
            if len(self._describe_cache) >= _DESCRIBE_CACHE_MAX:
                self._describe_cache.clear()
            self._describe_cache[head] = cached
        return cached

    def close(self) -> None:
        """Unmap every ring and remove the run directory (drain first if needed)."""
        if self._closed:
            return
        self._closed = True
        if self._steps is not None:
            self._steps.close()
            self._steps = None
        for ring in self._rings.values():
            ring.mm.close()
        self._rings.clear()
        shutil.rmtree(self.run_dir, ignore_errors=True)


__all__ = ["Collector", "describe_pickle"]
