"""RecordDecoder: the events of a ring's records other than the end of a call seen before."""

from __future__ import annotations

import json
import math
from typing import Any

from pipecore.framefields import FrameFields
from pipecore.ring import (
    BEGIN,
    ERROR,
    EVENT,
    FLAG_RESULT,
    OP_POLL,
    POLL,
    POSITION,
    REC_BEGIN,
    REC_DEFINE,
    REC_ERROR,
    REC_EVENT,
    REC_POLL,
    RECEIVING,
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


class RecordDecoder:
    """Decodes one record at a time (begin, poll, error, event and define records) and
    the begins of calls in flight (from a ring's slots) into events, held in `_pending`
    with their `t`, the sort key; RingReader reads the rings and decodes a call's end."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        # (t, event): sorting by a tuple's first item is faster than by a dict's field
        self._pending: list[tuple[int, Event]] = []
        self._frames = FrameFields()

    def _hold(self, event: Event) -> None:
        self._pending.append((event["t"], event))

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
