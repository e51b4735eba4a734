"""RingReader: decodes one process's ring records into protocol events (see `pipecore.ring`)."""

from __future__ import annotations

from pipecore.recorddecoder import RecordDecoder
from pipecore.recorder import _fastring
from pipecore.ring import (
    CALL,
    CALL_KIND_OFFSET,
    CALL_TIMES,
    HEADER_BYTES,
    POSITION,
    READ_POS_OFFSET,
    REC_END,
    REC_PAD,
    RECEIVING,
    RECORD_HEAD,
    WRITE_POS_OFFSET,
)
from pipecore.ringstate import Ring

_KINDS_MAX = 1024  # per ring: a ring holds one process's recurring calls

_unpack_call = CALL.unpack_from
_unpack_times = CALL_TIMES.unpack_from
_unpack_head = RECORD_HEAD.unpack_from
_CALL_SIZE = CALL.size
_HEAD_SIZE = RECORD_HEAD.size
# The loop below in C, for the end records of calls like ones seen before, where the C
# writer is built (None: Python decodes every record).
_read_calls = None if _fastring is None else _fastring.read_calls


class RingReader(RecordDecoder):
    """Turns ring records into events (held in `_pending` with their `t`, the sort key);
    the collector decides which rings to read and when. The end of a call like one seen
    before is decoded here, inline (or in C); other records by RecordDecoder."""

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
