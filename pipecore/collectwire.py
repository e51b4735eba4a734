"""The messages a run's collector process sends its server: a header and the parts.

A message is `<II` (header length, body length), the header (JSON) and the body: each
part's JSON as a compressed piece (`pipecore.parts.deflated`), one after the other. The
header says:

- `seq`: the last `seq` the collector has given out;
- `parts`: `[first, last, count, others, nbytes, size, check]` for each part of the body,
  in order: `nbytes` of compressed piece, and the `size` and `array_check` of its JSON;
- `kept`: the events of those parts that a run keeps for its whole life (`parts.is_kept`);
- `amended`: events published earlier that the analysis has since annotated;
- `killed`: `[pid, process, signal, message]` of processes a signal ended, new ones only;
- `analysis`: the analysis' ends and statistics, when they changed (at most every
  ANALYSIS_EVERY_NS while events flow, and with the last message);
- `final`: true on the last message, sent once the run's processes are gone.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any

import orjson

from pipecore.parts import Part

Event = dict[str, Any]
HEAD = struct.Struct("<II")
# A header or a body larger than this is not a message from a collector process.
MAX_MESSAGE = 1 << 30


def encode(header: dict[str, Any], pieces: list[bytes]) -> list[bytes]:
    """One message, in pieces to write one after the other: the head and header, then
    the parts' pieces (not joined: drains are bounded, but the final drain takes all that
    is left and its message can be large)."""
    try:
        head = orjson.dumps(header)
    except TypeError:
        head = json.dumps(header, ensure_ascii=False).encode()
    return [HEAD.pack(len(head), sum(len(p) for p in pieces)) + head, *pieces]


@dataclass
class Message:
    """A decoded message: its header's fields, and its parts holding their pieces."""

    seq: int
    parts: list[Part]
    kept: list[Event]
    amended: list[Event] = field(default_factory=list)
    killed: list[tuple[int, str, str, str]] = field(default_factory=list)
    analysis: dict[str, Any] | None = None
    final: bool = False


class MessageReader:
    """Cuts the bytes read from a collector process into messages."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Message]:
        """The messages completed by `data`; ValueError if the stream is not messages."""
        self._buffer += data
        out: list[Message] = []
        buffer = self._buffer
        at = 0
        while len(buffer) - at >= HEAD.size:
            head_len, body_len = HEAD.unpack_from(buffer, at)
            if head_len > MAX_MESSAGE or body_len > MAX_MESSAGE:
                raise ValueError(
                    f"expected a collector message under {MAX_MESSAGE} bytes, "
                    f"got a header of {head_len} and a body of {body_len}"
                )
            end = at + HEAD.size + head_len + body_len
            if len(buffer) < end:
                break
            start = at + HEAD.size
            header = orjson.loads(bytes(buffer[start : start + head_len]))
            out.append(_message(header, bytes(buffer[start + head_len : end])))
            at = end
        del buffer[:at]
        return out


def _message(header: dict[str, Any], body: bytes) -> Message:
    parts: list[Part] = []
    at = 0
    for first, last, count, others, nbytes, size, check in header.get("parts", ()):
        piece = (body[at : at + nbytes], size, check)
        parts.append(Part(first, last, count, others, piece=piece))
        at += nbytes
    if at != len(body):
        raise ValueError(f"expected a body of {at} bytes from the header, got {len(body)}")
    return Message(
        seq=int(header["seq"]),
        parts=parts,
        kept=list(header.get("kept", ())),
        amended=list(header.get("amended", ())),
        killed=[(int(k[0]), str(k[1]), str(k[2]), str(k[3])) for k in header.get("killed", ())],
        analysis=header.get("analysis"),
        final=bool(header.get("final")),
    )
