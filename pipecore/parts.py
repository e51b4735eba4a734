"""Published events in parts: consecutive in `seq`, held as dicts, as JSON or compressed."""

from __future__ import annotations

import json
import threading
import zlib
from typing import Any

import orjson
from isal import isal_zlib

Event = dict[str, Any]

# Events that draw a run's structure: a run keeps them all (up to a cap), and only the
# newest of the others (calls, output).
KEPT_KINDS = frozenset({"run", "pipe", "process", "attach"})
# A part holds at most this many events, so that a frame made of parts stays near 1 MiB
# and a viewer that subscribed in the middle of one decodes little to trim it.
PART_EVENTS = 1000


# A part's JSON and compression are made under one of these (picked by the part), so that
# the store's thread and the loop, both asking for a new part at once, make them once
# (without it, both would make them, each spending the CPU time of it).
_MAKING = tuple(threading.Lock() for _ in range(16))

# ISA-L's level 1. On a flood's JSON (20,022 events, 380 bytes each) it made 3,200 MB/s and
# 1/21.4 of it; zlib's fastest level made 566 MB/s and 1/20.7. Both make raw DEFLATE,
# which the page and zlib inflate alike.
DEFLATE_LEVEL = 1
# The last block of a raw DEFLATE stream (empty, final): it closes pieces made by deflated().
DEFLATE_END = b"\x03\x00"


def deflated(data: bytes) -> bytes:
    """`data` as raw DEFLATE blocks (RFC 1951, no header) ending on a byte boundary and
    not final (a sync flush): such pieces, one after another and closed by DEFLATE_END,
    are one stream that inflates to their data joined. A piece refers to no byte before
    it, so each is made once and joined into whatever frame or record holds it."""
    compressor = isal_zlib.compressobj(DEFLATE_LEVEL, isal_zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush(isal_zlib.Z_SYNC_FLUSH)


def deflated_whole(data: bytes) -> bytes:
    """`data` as one whole raw DEFLATE stream: its `deflated` piece, closed."""
    return deflated(data) + DEFLATE_END


def is_kept(event: Event) -> bool:
    """Whether a run keeps this event for its whole life (structure and verdicts)."""
    kind = event.get("kind")
    return kind in KEPT_KINDS or kind == "verdict"


def encode_events(events: list[Event]) -> bytes:
    """The events as a JSON array without its brackets (orjson; the standard library for
    what orjson refuses, such as an integer past 64 bits)."""
    try:
        return orjson.dumps(events)[1:-1]
    except TypeError:
        return json.dumps(events, ensure_ascii=False, separators=(",", ":")).encode()[1:-1]


def decode_events(text: bytes) -> list[Event]:
    """The events of encode_events' text."""
    events: list[Event] = orjson.loads(b"[" + text + b"]")
    return events


def array_check(text: bytes) -> int:
    """The Adler-32 of the JSON array of encode_events' `text` (with its brackets): the
    check a zlib stream of that array ends with. ISA-L's: 22 ns an event of a flood's JSON,
    zlib's 111."""
    adler32 = isal_zlib.adler32
    return adler32(b"]", adler32(text, adler32(b"[")))


class Part:
    """Events `first` … `last` of a run (`count` of them, `others` not `is_kept`).

    A part made in this process holds the events themselves and encodes them once, when
    first asked. A part that arrived from a run's collector process holds only its
    compressed piece (see `deflated`), about 1/20 of the JSON: its JSON is inflated, and
    its events decoded, each time they are asked for.
    """

    __slots__ = (
        "_check",
        "_deflated",
        "_events",
        "_json",
        "_size",
        "count",
        "first",
        "last",
        "others",
        "states",
    )

    def __init__(
        self,
        first: int,
        last: int,
        count: int,
        others: int,
        *,
        events: list[Event] | None = None,
        text: bytes | None = None,
        piece: tuple[bytes, int, int] | None = None,
        states: tuple[str, ...] = (),
    ) -> None:
        """`piece`: the part's compressed JSON (`deflated`), the JSON's length and its
        `array_check`, in place of its events or its JSON `text`."""
        if events is None and text is None and piece is None:
            raise ValueError("a part needs its events, their JSON or its piece, got none")
        self.first = first
        self.last = last
        self.count = count
        self.others = others
        # The `state` of each `run` event in it, in order (a run's collector sends none).
        self.states = states
        self._events = events
        self._json = text
        self._deflated: bytes | None = None
        self._size: int | None = None
        self._check: int | None = None
        if piece is not None:
            self._deflated, self._size, self._check = piece

    def events(self) -> list[Event]:
        """The part's events, in `seq` order."""
        if self._events is not None:
            return self._events
        return decode_events(self.json())

    def json(self) -> bytes:
        """The part's events as a JSON array without its brackets."""
        text = self._json
        if text is None:
            if self._events is None:
                assert self._deflated is not None
                return zlib.decompress(self._deflated + DEFLATE_END, -15)
            with self._making():
                text = self._json
                if text is None:
                    text = self._json = encode_events(self._events)
        return text

    @property
    def size(self) -> int:
        """The length of json()."""
        if self._size is None:
            self._size = len(self.json())
        return self._size

    def array_check(self) -> int:
        """The `array_check` of json()."""
        if self._check is None:
            self._check = array_check(self.json())
        return self._check

    def deflated(self) -> bytes:
        """json() as a piece of raw DEFLATE stream (`deflated`), made once: the store's
        record of the part and every compressed frame that carries it share it."""
        piece = self._deflated
        if piece is None:
            text = self.json()  # takes the same lock itself
            with self._making():
                piece = self._deflated
                if piece is None:
                    piece = self._deflated = deflated(text)
        return piece

    def _making(self) -> threading.Lock:
        # id() is an address, a multiple of 16: its low bits would pick one lock only
        return _MAKING[(id(self) >> 4) % len(_MAKING)]


def part_of(events: list[Event]) -> Part:
    """A part holding these numbered events (consecutive in `seq`)."""
    return Part(
        int(events[0]["seq"]),
        int(events[-1]["seq"]),
        len(events),
        sum(1 for e in events if not is_kept(e)),
        events=events,
        states=tuple(str(e.get("state")) for e in events if e.get("kind") == "run"),
    )


def parts_of(events: list[Event]) -> list[Part]:
    """Numbered events in parts of at most PART_EVENTS."""
    return [part_of(events[i : i + PART_EVENTS]) for i in range(0, len(events), PART_EVENTS)]
