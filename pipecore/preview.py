"""Type names and short previews of frames, without importing the user's classes."""

from __future__ import annotations

import builtins
import pickle
import reprlib
from typing import Any

PREVIEW_CHARS = 80


def clip(text: str, limit: int = PREVIEW_CHARS) -> str:
    """`text`, cut to `limit` characters (ending in … when cut)."""
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
        return type_name, value if len(data) == size else clip(value + "…", PREVIEW_CHARS)
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
        return type_name, clip(_repr.repr(obj))
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
