"""What a frame's head cut short holds (Partial, Open) and how it reads, up to the cut."""

from __future__ import annotations

import array
from typing import Any

from pipecore.preview_repr import PLAIN, ReprWriter
from pipecore.preview_standins import MISSING, Opaque, array_of, named, rebuild_array, shows_args

STR, BYTES, BYTEARRAY, LONG = range(4)


class Partial:
    """A str, bytes, bytearray or int that a frame's head cuts short."""

    def __init__(self, kind: int, data: bytes) -> None:
        self.kind, self.data = kind, data

    def text(self) -> str:
        if self.kind == LONG:
            return ""  # little-endian: its leading digits are in the bytes not seen
        if self.kind == STR:
            return repr(self.data.decode("utf-8", "ignore"))[:-1]
        text = repr(self.data)[:-1]
        return f"bytearray({text}" if self.kind == BYTEARRAY else text


class Open:
    """A tuple, list, dict, set or call (`base` the global) whose closing opcode lies
    beyond a frame's head; `items` are those the head shows, the last maybe open too."""

    def __init__(self, kind: str, base: Any, items: list[Any]) -> None:
        self.kind, self.base, self.items = kind, base, items


_BRACKETS = {"tuple": "(", "list": "[", "dict": "{", "set": "{"}


def write_open(writer: ReprWriter, node: Any) -> bool:
    """Writes `node`; True when the frame goes on inside it (so the text is cut short)."""
    if isinstance(node, Partial):
        writer.put(node.text())
        return True
    if not isinstance(node, Open):
        writer.write(node)
        return False
    if node.kind == "call":
        return _write_call(writer, node)
    writer.put(_BRACKETS[node.kind])
    if node.base:
        writer.contents(node.base)
    items, comma = node.items, bool(node.base)
    if node.kind != "dict":
        _write_items(writer, items, comma)
        return True
    for i in range(0, len(items), 2):
        key, value = items[i], items[i + 1] if i + 1 < len(items) else MISSING
        if type(key) in PLAIN and type(value) in PLAIN:
            writer.put(f"{', ' if i or comma else ''}{key!r}: {value!r}")
            continue
        writer.put(", " if i or comma else "")
        if write_open(writer, key) or value is MISSING:
            break
        writer.put(": ")
        write_open(writer, value)
    return True


def _write_items(writer: ReprWriter, items: list[Any], comma: bool = False) -> None:
    last = items[-1] if items and isinstance(items[-1], Open | Partial) else None
    writer.items(items[:-1] if last else items, comma)
    if last:
        writer.put(", " if len(items) > 1 or comma else "")
        write_open(writer, last)


_ITEMS_REPR = frozenset(array.typecodes) - {"u"}  # (array('u', 'text') shows a str)


def cut_array(node: Open) -> Any:
    # array._array_reconstructor(array.array, typecode, machine format, bytes cut short),
    # or array.array(typecode, bytes cut short): the array of the whole items shown.
    args = node.items[0].items if node.items and isinstance(node.items[0], Open) else []
    base = (getattr(node.base, "module", ""), getattr(node.base, "qualname", ""))
    if base == ("array", "_array_reconstructor") and len(args) == 4:
        code, cut = args[1], args[3]
    elif base == ("array", "array") and len(args or node.items) == 2:
        code, cut = args or node.items  # (typecode, bytes) is a TUPLE2: no MARK, no Open
    else:
        return MISSING
    data = cut.data if isinstance(cut, Partial) else b""
    if type(code) is not str or code not in _ITEMS_REPR:
        return MISSING
    size = array.array(code).itemsize
    whole = data[: len(data) // size * size]
    try:
        if base == ("array", "array"):
            return array_of(code, whole)
        return rebuild_array(args[0], code, args[2], whole)
    except Exception:
        return MISSING


def _write_call(writer: ReprWriter, node: Open) -> bool:
    cut = cut_array(node)
    if cut is not MISSING:
        writer.put(f"array({cut.typecode!r}, [")
        writer.items(cut.tolist())
        return True
    base, first = node.base, node.items[0] if node.items else None
    cut_bytes = isinstance(first, Partial) and first.kind == BYTES  # so bytearray(b'…
    if issubclass(base, Opaque) and (shows_args(base) or (cut_bytes and named(base) is bytearray)):
        writer.put(f"{base.qualname}(")
        _write_items(writer, node.items)
        return True
    writer.put(f"{getattr(base, 'qualname', base.__name__)}(…)")
    return False
