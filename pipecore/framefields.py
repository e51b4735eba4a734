"""FrameFields: a frame's size, hash, head and preview, decoded from the head a ring stored."""

from __future__ import annotations

import zlib
from typing import Any

from pipecore.preview import PREVIEW_CHARS, clip, describe_pickle
from pipecore.ring import FLAG_HASHED, FLAG_SAMPLED, OP_RECV, OP_SEND, complete_sample

Event = dict[str, Any]

HEAD_HEX_BYTES = 64
_DESCRIBE_CACHE_MAX = 4096


class FrameFields:
    """Sets a call event's frame fields; frames alike share one cached preview."""

    def __init__(self) -> None:
        self._describe_cache: dict[bytes, tuple[str, str]] = {}
        self._bytes_cache: dict[bytes, tuple[str, str]] = {}

    def fill(self, event: Event, op: int, head: bytes, nbytes: int, h: int, flags: int) -> None:
        """The frame's size, hash (completed here from the stored head), head and preview."""
        if flags & FLAG_SAMPLED:
            h = complete_sample(nbytes, head, h)
        elif not flags & FLAG_HASHED:
            h = zlib.crc32(head)
        event["nbytes"] = nbytes
        event["hash"] = f"{h:08x}"
        event["head"] = head[:HEAD_HEX_BYTES].hex()
        event["type"], event["preview"] = self._describe(op, head, nbytes)

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
                preview = "bytes", clip(text[:-1] + "…" if nbytes > PREVIEW_CHARS else text)
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
