"""RingReader: decodes one process's ring records into protocol events (see `pipecore.ring`)."""

from __future__ import annotations

import json
import math
from typing import Any

from pipecore.framefields import FrameFields
from pipecore.recorder import _fastring
from pipecore.ring import (
    BEGIN,
    CALL,
    CALL_KIND_OFFSET,
    CALL_TIMES,
    ERROR,
    EVENT,
    FLAG_RESULT,
    HEADER_BYTES,
    OP_POLL,
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
    SLOT_BASE,
    SLOT_BODY,
    SLOT_LAST,
    SLOT_SEQ,
    SLOT_SIZE,
    SLOTS,
    WRITE_POS_OFFSET,
)
from pipecore.ringstate import Ring

Event = dict[str, Any]

_KINDS_MAX = 1024  # per ring: a ring holds one process's recurring calls

_unpack_call = CALL.unpack_from
_unpack_times = CALL_TIMES.unpack_from
_unpack_head = RECORD_HEAD.unpack_from
_CALL_SIZE = CALL.size
_HEAD_SIZE = RECORD_HEAD.size
# The loop below in C, for the end records of calls like ones seen before, where the C
# writer is built (None: Python decodes every record).
_read_calls = None if _fastring is None else _fastring.read_calls


def _loads(data: bytes) -> Any:
    """A record's JSON (ASCII: its writer escapes the rest), every text in it valid Unicode.
    A process's texts (output lines, file names, error messages) may hold lone surrogates,
    from bytes Python could not decode; they read as U+FFFD, as a terminal shows them,
    instead of breaking every encoder downstream."""
    value = json.loads(data)
    return _valid(value) if b"\\ud" in data else value


def _valid(value: Any) -> Any:
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:
            return _replaced(value)
        return value
    if isinstance(value, dict):
        return {_valid(k): _valid(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_valid(v) for v in value]
    return value


def _replaced(text: str) -> str:
    """`text` decoded again: a byte Python kept as a surrogate (U+DC80–U+DCFF) is that
    byte, other lone surrogates U+FFFD; then bytes that are not UTF-8 read as U+FFFD."""
    raw = bytearray()
    for ch in text:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:
            raw.append(code - 0xDC00)
        elif 0xD800 <= code <= 0xDFFF:
            raw += "\ufffd".encode()
        else:
            raw += ch.encode()
    return raw.decode("utf-8", "replace")


class RingReader:
    """Turns ring records into events (held in `_pending` with their `t`, the sort key);
    the collector decides which rings to read and when."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        # (t, event): sorting by a tuple's first item is faster than by a dict's field
        self._pending: list[tuple[int, Event]] = []
        self._frames = FrameFields()

    def _hold(self, event: Event) -> None:
        self._pending.append((event["t"], event))

    def _read(self, ring: Ring, budget: int | None = None) -> int:
        """Decode the ring's new records, about `budget` bytes of them at most (None: all),
        and hand their space back to the writer; the number of records read."""
        mm = ring.mm
        cap = ring.capacity
        write_pos = POSITION.unpack_from(mm, WRITE_POS_OFFSET)[0]
        r = ring.read_pos
        stop = write_pos if budget is None else min(write_pos, r + budget)
        count = 0
        kinds = ring.kinds
        begun = ring.begun
        done = ring.done
        append = self._pending.append
        last_t = -1  # the newest end read here, kept in ring.last_t once the loop is done
        fast = _read_calls
        while r < stop:
            if fast is not None:
                # As many known calls' end records as come in a row, in C; the record it
                # stops at (if any) is decoded below.
                r, got, t = fast(mm, cap, r, stop, kinds, begun, done, self._pending)
                count += got
                if t >= 0:
                    last_t = t
                if r >= stop:
                    break
            off = HEADER_BYTES + r % cap
            length, rtype, op, hlen = _unpack_head(mm, off)
            if length < _HEAD_SIZE or length & 7 or length > cap:
                # A ring that does not parse cannot be trusted any further.
                r = write_pos
                break
            if rtype == REC_END:
                # The commonest record, decoded inline: a call like one seen before
                # (same end, site, op and frame) reuses its events' shared fields.
                shared = mm[off + CALL_KIND_OFFSET : off + _CALL_SIZE + hlen]
                kind = kinds.get(shared)
                if kind is not None:
                    begin, end, key = kind
                    t0, pseq0, t, pseq, queued = _unpack_times(mm, off)
                    if pseq0:
                        if begun.get(key) != pseq0:
                            begun[key] = pseq0
                            if queued >= 0:
                                event = {**begin, "t": t0, "pseq": pseq0, "queued": queued}
                            else:
                                event = {**begin, "t": t0, "pseq": pseq0}
                            append((t0, event))
                        done[key] = pseq0
                    append((t, {**end, "t": t, "pseq": pseq}))
                    last_t = t
                    count += 1
                    r += length
                    continue
                if last_t >= 0:
                    ring.last_t = last_t
                    last_t = -1
                self._new_call(ring, off, shared)
                count += 1
            elif rtype != REC_PAD:
                if last_t >= 0:
                    ring.last_t = last_t
                    last_t = -1
                self._decode(ring, rtype, op, off)
                count += 1
            r += length
        if last_t >= 0:
            ring.last_t = last_t
        ring.cut = r < write_pos
        if r != ring.read_pos:
            ring.read_bytes += r - ring.read_pos
            ring.read_pos = r
            POSITION.pack_into(mm, READ_POS_OFFSET, r)
        return count

    def _new_call(self, ring: Ring, off: int, shared: bytes) -> None:
        """A call record unlike the ring's remembered ones: its events, built in full. Its
        shared fields are remembered the second time they come (a call that recurs)."""
        fields = _unpack_call(ring.mm, off)
        t0, pseq0, t, pseq, queued, eid, site, nbytes, h, flags, op = fields[4:]
        template = ring.templates.get((eid, site, op))
        if template is None:
            template = ring.template(self.run_id, eid, site, op)
        key = 2 * eid + (1 if op < len(RECEIVING) and RECEIVING[op] else 0)
        if pseq0:
            if ring.begun.get(key) != pseq0:
                ring.begun[key] = pseq0
                begin = template.copy()
                begin["t"] = t0
                begin["pseq"] = pseq0
                begin["phase"] = "begin"
                if queued >= 0:
                    begin["queued"] = queued
                self._pending.append((t0, begin))
            ring.done[key] = pseq0
        event = template.copy()
        event["t"] = t
        event["pseq"] = pseq
        event["phase"] = "end"
        if nbytes >= 0:
            self._frames.fill(event, op, shared[_CALL_SIZE - CALL_KIND_OFFSET :], nbytes, h, flags)
        self._pending.append((t, event))
        ring.last_t = t
        # Kept only once the end and site are defined (see `Ring.template`).
        if ring.templates.get((eid, site, op)) is not template:
            return
        if shared not in ring.seen:
            if len(ring.seen) >= _KINDS_MAX:
                ring.seen.clear()
            ring.seen.add(shared)
            return
        if len(ring.kinds) >= _KINDS_MAX:
            ring.kinds.clear()
        # t and pseq are set on each copy
        ring.kinds[shared] = ({**template, "phase": "begin"}, event.copy(), key)

    def _scan_slots(self, ring: Ring) -> None:
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
        ring: Ring,
        t: int,
        pseq: int,
        eid: int,
        site: int,
        op: int,
        queued: int,
        timeout: float | None,
    ) -> None:
        ring.begun[2 * eid + (1 if RECEIVING[op] else 0)] = pseq
        event = ring.call(self.run_id, t, pseq, eid, site, op)
        event["phase"] = "begin"
        if queued >= 0:
            event["queued"] = queued
        if op == OP_POLL:
            event["timeout"] = None if timeout is None or math.isnan(timeout) else timeout
        self._hold(event)

    def _decode(self, ring: Ring, rtype: int, op: int, off: int) -> None:
        mm = ring.mm
        if rtype in (REC_POLL, REC_ERROR):
            jlen = 0
            timeout: float | None = None
            if rtype == REC_POLL:
                _, _, _, hlen, t0, pseq0, t, pseq, queued, eid, site, wait, h, flags, _ = (
                    POLL.unpack_from(mm, off)
                )
                timeout = None if math.isnan(wait) else wait
                nbytes = -1
                start = off + POLL.size
            else:
                fields = ERROR.unpack_from(mm, off)
                hlen, t0, pseq0, t, pseq, queued, eid, site, nbytes, h, flags = fields[3:14]
                jlen = fields[15]
                start = off + ERROR.size
            info: dict[str, Any] = {}
            if jlen:
                info = _loads(mm[start + hlen : start + hlen + jlen])
            if rtype == REC_ERROR and op == OP_POLL:
                timeout = info.get("timeout")
            if pseq0:
                key = 2 * eid + (1 if RECEIVING[op] else 0)
                if ring.begun.get(key) != pseq0:
                    self._begin(ring, t0, pseq0, eid, site, op, queued, timeout)
                ring.done[key] = pseq0
            event = ring.call(self.run_id, t, pseq, eid, site, op)
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
                self._frames.fill(event, op, mm[start : start + hlen], nbytes, h, flags)
            self._hold(event)
        elif rtype == REC_BEGIN:
            _, _, _, _, t, pseq, eid, site, queued, wait = BEGIN.unpack_from(mm, off)
            self._begin(ring, t, pseq, eid, site, op, queued, wait)
        elif rtype == REC_EVENT:
            _, _, _, _, t, pseq, jlen = EVENT.unpack_from(mm, off)
            start = off + EVENT.size
            payload = _loads(mm[start : start + jlen])
            event = ring.event(self.run_id, t, pseq, payload.pop("kind"))
            event.update(payload)
            if event["kind"] == "process" and event.get("op") == "exit":
                ring.exited = True
            self._hold(event)
        elif rtype == REC_DEFINE:
            _, _, _, _, _, _, jlen = EVENT.unpack_from(mm, off)
            start = off + EVENT.size
            payload = _loads(mm[start : start + jlen])
            if "eid" in payload:
                ring.ends[payload["eid"]] = (payload["pipe"], payload["pipe_name"], payload["end"])
            elif "site_id" in payload:
                ring.sites[payload["site_id"]] = payload["site"]
            elif "process" in payload:
                ring.process = payload["process"]
                ring.templates.clear()
                ring.kinds.clear()
                ring.seen.clear()
