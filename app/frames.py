"""The `events` frames a run's viewers share: slices of the stream, thinned frames, and
their bytes on the wire (UTF-8 JSON, or raw DEFLATE for a viewer that asked)."""

from typing import Any

import orjson

from pipecore.parts import DEFLATE_END, Part, deflated, deflated_whole, encode_events, is_kept

Event = dict[str, Any]
Frame = dict[str, Any]

# An `events` frame's JSON after its last event (when it left none out).
END_OF_EVENTS = b"]}"
# The compressed pieces every compressed `events` frame has (pipecore.parts.deflated).
_COMMA, _END_OF_EVENTS = deflated(b","), deflated(END_OF_EVENTS)


class FrameBytes:
    """An `events` frame as a binary websocket message carries it (docs/protocol.md): its
    UTF-8 JSON, or for a viewer that asked for `compress=deflate-raw` the raw DEFLATE
    stream of that JSON, made once when the first such viewer sends it."""

    __slots__ = ("_deflated", "json")

    def __init__(self, json: bytes) -> None:
        self.json = json
        self._deflated: bytes | None = None

    def sent(self, compress: bool) -> bytes:
        if not compress:
            return self.json
        if self._deflated is None:
            self._deflated = deflated_whole(self.json)
        return self._deflated


class Slice:
    """A run's events from one stretch of its stream, cut the same for every viewer: its
    `events` frame is built once, by the first viewer that sends it, and the others send
    the same bytes whether they are up to date or some slices behind."""

    __slots__ = ("_deflated", "_frame", "count", "first", "last", "parts", "run_id")

    def __init__(self, run_id: str, parts: list[Part]) -> None:
        self.run_id = run_id
        self.parts = parts
        self.first = parts[0].first
        self.last = parts[-1].last
        self.count = sum(part.count for part in parts)
        self._frame: bytes | None = None
        self._deflated: bytes | None = None

    def frame(self) -> bytes:
        """The `events` frame's UTF-8 JSON: sent as it is, never decoded to a string nor
        encoded again."""
        if self._frame is None:
            self._frame = events_json(self.run_id, [part.json() for part in self.parts], 0)
        return self._frame

    def sent(self, compress: bool) -> bytes:
        """The binary message of the `events` frame: its JSON, or that JSON's raw DEFLATE
        stream joined from the parts' own compressed pieces (Part.deflated, shared with
        the store's record of each part) and the frame's few bytes around them."""
        if not compress:
            return self.frame()
        if self._deflated is None:
            pieces = [deflated(events_head(self.run_id))]
            for at, part in enumerate(self.parts):
                if at:
                    pieces.append(_COMMA)
                pieces.append(part.deflated())
            pieces += (_END_OF_EVENTS, DEFLATE_END)
            self._deflated = b"".join(pieces)
        return self._deflated


class SharedFrame(dict[str, Any]):
    """A control frame several viewers are sent: encoded once (app.viewer.encode), and
    compressed once when it is a snapshot for viewers that asked (app.viewer.sent)."""

    __slots__ = ("deflated", "text")

    def __init__(self, frame: Frame) -> None:
        super().__init__(frame)
        self.text: str | None = None
        self.deflated: bytes | None = None


# What a thinned frame keeps besides the run's structure, found in a part's JSON without
# decoding it: output lines (up to `keep` a frame), and calls that close an end or raise,
# which change what the page shows of an end for good.
TELLING = (b'"kind":"output"', b'"op":"close"', b'"phase":"error"')


def events_head(run_id: str) -> bytes:
    """An `events` frame's JSON up to its first event."""
    return b'{"type":"events","run":' + orjson.dumps(run_id) + b',"events":['


def events_json(run_id: str, pieces: list[bytes], skipped: int) -> bytes:
    """An `events` frame's UTF-8 JSON from its events' JSON pieces, with `skipped` when
    some were left out."""
    tail = b'],"skipped":%d}' % skipped if skipped else END_OF_EVENTS
    return b"".join((events_head(run_id), b",".join(pieces), tail))


def thin(parts: list[Part], keep: int) -> tuple[list[bytes], int]:
    """The parts' events as JSON pieces (encode_events' text, none empty) for a thinned
    frame: every event a run keeps whole (`is_kept`), every call that closed an end or
    raised, the latest `keep` output lines and the latest `keep` other calls; and how many
    events it left out. A part is decoded only when it is cut or holds such an event among
    those it drops: a flood's parts of plain calls are sent or dropped whole."""
    pieces: list[bytes] = []
    calls, lines, skipped = keep, keep, 0
    for part in reversed(parts):
        text = part.json()
        telling = any(marker in text for marker in TELLING)
        if not telling and part.others <= calls:
            pieces.append(text)
            calls -= part.others
            continue
        if not telling and not calls and part.others == part.count:
            skipped += part.count
            continue
        kept: list[Event] = []
        for event in reversed(part.events()):  # the latest first: they show the run now
            if is_kept(event) or event.get("op") == "close" or event.get("phase") == "error":
                kept.append(event)
            elif event.get("kind") == "output" and lines:
                lines -= 1
                kept.append(event)
            elif event.get("kind") != "output" and calls:
                calls -= 1
                kept.append(event)
            else:
                skipped += 1
        kept.reverse()
        pieces.append(encode_events(kept))
    pieces.reverse()
    return [piece for piece in pieces if piece], skipped
