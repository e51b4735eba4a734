"""Type names and short previews of frames, without importing the user's classes."""

from __future__ import annotations

import io
import pickle
import struct
from typing import Any

from pipecore.preview_cut import BYTEARRAY, BYTES, LONG, STR, Open, Partial, cut_array, write_open
from pipecore.preview_repr import PLAIN, Full, ReprWriter
from pipecore.preview_standins import MISSING, Opaque, find_global, named, rebuilt

PREVIEW_CHARS = 80


def clip(text: str, limit: int = PREVIEW_CHARS) -> str:
    """`text`, cut to `limit` characters (ending in … when cut)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def type_name(obj: Any) -> str:
    """The type name of a (rebuilt) object; a global that is not held reads as `global`."""
    if isinstance(obj, Opaque):
        return obj.qualname.rpartition(".")[2]
    if isinstance(obj, type) and issubclass(obj, Opaque):
        held = named(obj)
        return "global" if held is MISSING else type(held).__name__
    return type(obj).__name__


class _SafeUnpickler(pickle.Unpickler):
    """Unpickles plain data; any other global becomes an inert stand-in (preview_standins)."""

    def find_class(self, module: str, name: str) -> Any:
        return find_global(module, name)

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not decoded")


_heads: dict[bytes, tuple[str, str]] = {}


def describe_pickle(head: bytes, complete: bool) -> tuple[str, str]:
    """The type name and preview (repr, <= 80 chars) of a pickled frame's object.

    `head` is the frame's first bytes; `complete` says whether it is the whole frame.
    Only plain data is rebuilt; other classes are named, never imported. A frame longer
    than its head is read from the head's opcodes (see docs/protocol.md).
    """
    if not complete:
        # Reading a head costs more than a small frame; a stream often repeats one.
        described = _heads.get(head)
        if described is None:
            if len(_heads) >= 1024:
                _heads.clear()
            described = _heads[head] = _describe_head(head)
        return described
    try:
        obj = _SafeUnpickler(io.BytesIO(head)).load()
    except Exception:
        return _describe_head(head)
    if type(obj) in PLAIN:  # most frames: no writer needed
        return type(obj).__name__, clip(repr(obj))
    if isinstance(obj, Opaque):
        again = rebuilt(obj)
        obj = obj if again is MISSING else again
    writer = ReprWriter(PREVIEW_CHARS)
    try:
        writer.write(obj)
    except Full:
        pass
    except Exception:  # such as a recursion too deep: the name is still known
        return type_name(obj), "…"
    return type_name(obj), clip(writer.text())


# The head of a longer frame: its opcodes are read (globals only through find_global) up
# to where it ends, leaving a stack of values, MARKs, and containers still open.
_MARK: Any = object()
_MOST_OPS = 64  # values enough to fill a preview, unless most are inside a Name(…)
# Opcodes with an argument -> (what they do, its width). Kinds below _PUT push a value;
# those below _INT are a length, then that many bytes of data.
_INT, _SINT, _FLOAT, _GET, _PUT, _PROTO, _FRAME = range(4, 11)  # after STR … LONG
_ARG = {
    0x4B: (_INT, 1), 0x4D: (_INT, 2), 0x4A: (_SINT, 4), 0x47: (_FLOAT, 8),
    0x8C: (STR, 1), 0x58: (STR, 4), 0x8D: (STR, 8),
    0x43: (BYTES, 1), 0x42: (BYTES, 4), 0x8E: (BYTES, 8), 0x96: (BYTEARRAY, 8),
    0x8A: (LONG, 1), 0x8B: (LONG, 4), 0x68: (_GET, 1), 0x6A: (_GET, 4),
    0x71: (_PUT, 1), 0x72: (_PUT, 4), 0x80: (_PROTO, 1), 0x95: (_FRAME, 8),
}  # fmt: skip
_BININT1, _GLOBAL, _MEMOIZE, _STACK_GLOBAL = 0x4B, 0x63, 0x94, 0x93
_REDUCE, _NEWOBJ, _BUILD, _APPEND, _SETITEM, _MARK_OP = 0x52, 0x81, 0x62, 0x61, 0x73, 0x28
_CONSTANTS = {0x4E: None, 0x88: True, 0x89: False}
_EMPTY = {0x5D: list, 0x7D: dict, 0x8F: set, 0x29: tuple}
_TUPLES = {0x85: 1, 0x86: 2, 0x87: 3}
_TO_MARK: dict[int, Any] = {  # TUPLE, FROZENSET, APPENDS, SETITEMS, ADDITEMS
    0x74: tuple, 0x91: frozenset, 0x65: list.extend, 0x75: dict.update, 0x90: set.update,
}  # fmt: skip


def _scan(head: bytes) -> tuple[list[Any], bool]:
    """The stack the head leaves, and whether a value follows beyond it."""
    stack: list[Any] = []
    memo: dict[int, Any] = {}
    pos, end, frame_end = 0, len(head), -1
    try:
        for _ in range(_MOST_OPS):
            if pos >= end:
                return stack, frame_end >= pos + 3
            op = head[pos]
            pos += 1
            if op == _MEMOIZE:  # the commonest two first
                memo[len(memo)] = stack[-1]
                continue
            if op == _BININT1 and pos < end:
                stack.append(head[pos])
                pos += 1
                continue
            spec = _ARG.get(op)
            if spec is None:
                if op == _GLOBAL:
                    lines = head[pos:].split(b"\n", 2)
                    if len(lines) < 3:
                        return stack, True
                    module, name = lines[0], lines[1]
                    pos += len(module) + len(name) + 2
                    stack.append(find_global(module.decode(), name.decode()))
                elif not _apply(op, stack, memo):
                    return stack, False
                continue
            kind, width = spec
            if pos + width > end:
                return stack, kind < _PUT
            arg = head[pos : pos + width]
            pos += width
            if kind < _INT:
                size = int.from_bytes(arg, "little")
                data, pos = head[pos : pos + size], pos + size
                if pos > end:
                    stack.append(Partial(kind, data))
                    # A frame (under 64 KiB) tells how much follows: MEMOIZE and STOP, or more.
                    return stack, frame_end >= pos + 3
                stack.append(
                    data.decode("utf-8", "surrogatepass") if kind == STR
                    else data if kind == BYTES
                    else bytearray(data) if kind == BYTEARRAY
                    else int.from_bytes(data, "little", signed=True)
                )  # fmt: skip
            elif kind <= _SINT:
                stack.append(int.from_bytes(arg, "little", signed=kind == _SINT))
            elif kind == _FLOAT:
                stack.append(struct.unpack(">d", arg)[0])
            elif kind == _GET:
                stack.append(memo[int.from_bytes(arg, "little")])
            elif kind == _PUT:
                memo[int.from_bytes(arg, "little")] = stack[-1]
            elif kind == _FRAME:
                frame_end = pos + int.from_bytes(arg, "little")
    except Exception:  # unreadable, or hostile: what was read stands
        return stack, False
    return stack, True  # enough for the preview: a value follows


def _apply(op: int, stack: list[Any], memo: dict[int, Any]) -> bool:
    """One opcode without argument; False at STOP or at an opcode not read here."""
    if op in _TUPLES:
        size = _TUPLES[op]
        stack[-size:] = [tuple(stack[-size:])]
    elif op in _CONSTANTS:
        stack.append(_CONSTANTS[op])
    elif op in _EMPTY:
        stack.append(_EMPTY[op]())
    elif op == _MARK_OP:
        stack.append(_MARK)
    elif op in _TO_MARK:
        at = len(stack) - 1 - stack[::-1].index(_MARK)
        items = stack[at + 1 :]
        del stack[at:]
        if op in (0x74, 0x91):
            stack.append(_TO_MARK[op](items))
        elif not isinstance(stack[-1], Opaque):  # (the items of a list or dict subclass)
            pairs = zip(items[::2], items[1::2], strict=True)
            _TO_MARK[op](stack[-1], pairs if op == 0x75 else items)
    elif op == _APPEND:
        stack[-2].append(stack.pop())
    elif op == _SETITEM:
        value = stack.pop()
        stack[-2][stack.pop()] = value
    elif op == _STACK_GLOBAL and type(stack[-1]) is str and type(stack[-2]) is str:
        name = stack.pop()
        stack[-1] = find_global(stack[-1], name)
    elif op in (_REDUCE, _NEWOBJ) and isinstance(stack[-2], type):
        # Only find_global puts a class on the stack: a stand-in, or a harmless builtin.
        args = stack.pop()
        cls = stack[-1]
        stack[-1] = cls(*args) if op == _REDUCE else cls.__new__(cls, *args)
    elif op == _BUILD and isinstance(stack[-2], Opaque):
        stack.pop()
    else:
        return False
    return True


_CONTAINERS = (list, dict, set)
_SHOWN = PREVIEW_CHARS // 3 + 1  # items of one container that fit: ≥ 3 characters each


def _siblings(stack: list[Any], at: int, most: int, args: bool = False) -> list[Any]:
    """The items from `stack[at]` on, read as siblings: a MARK, or a container followed by
    one, opens what follows; beyond `most` items (if not 0; a TUPLE1-3 holds at most 3),
    the last ones are an inner tuple, the reading that leaves the fewest tuples open."""
    items: list[Any] = []
    end = len(stack)
    while at < end and len(items) < _SHOWN:
        item = stack[at]
        if type(item) in PLAIN and (len(items) < most - 1 or not most or at + 1 == end):
            items.append(item)  # the common case, first
            at += 1
            continue
        after = stack[at + 1] if at + 1 < end else None
        if item is _MARK:
            items.append(Open("tuple", None, _siblings(stack, at + 1, 0, args)))
            break
        if after is None or type(item) in PLAIN:
            pass
        elif isinstance(item, _CONTAINERS) and (after is _MARK or not item):
            # APPENDS, SETITEMS, ADDITEMS after a MARK; APPEND or SETITEM of a 1-item one.
            opened = _siblings(stack, at + (2 if after is _MARK else 1), 0)
            items.append(Open(type(item).__name__, item, opened))
            break
        elif isinstance(item, type) and not args:
            # REDUCE, NEWOBJ: a global, then its arguments (which may name a class, such
            # as array.array). A tuple that starts with a global reads so too.
            items.append(Open("call", item, _siblings(stack, at + 1, 0, True)))
            break
        elif isinstance(item, Opaque) and (after is _MARK or isinstance(after, dict | tuple)):
            items.append(item)  # then its items or its state (BUILD): it shows as Name(…)
            break
        if len(items) == most - 1 and after is not None:
            items.append(Open("tuple", None, _siblings(stack, at, 3)))
            break
        items.append(item)
        at += 1
    return items


def _describe_head(head: bytes) -> tuple[str, str]:
    """Type and preview from the head of a frame longer than the head."""
    stack, more = _scan(head)
    items = _siblings(stack, 0, 3)
    if not items:
        return "object", "…"
    top = items[0]
    if len(items) > 1 or (more and not isinstance(top, type | Opaque | Open)):
        top = Open("tuple", None, items)  # only a TUPLE1-3 takes such a first item
    elif more and isinstance(top, type):
        top = Open("call", top, [])
    elif isinstance(top, Opaque):
        again = rebuilt(top)
        top = top if again is MISSING else again
    writer = ReprWriter(PREVIEW_CHARS)
    try:
        if write_open(writer, top):
            writer.put("…")
    except Full:
        pass
    except Exception:
        return _open_type_name(top), "…"
    return _open_type_name(top), clip(writer.text())


def _open_type_name(top: Any) -> str:
    """`type_name`, for what a frame's head shows."""
    if isinstance(top, Partial):
        return ("str", "bytes", "bytearray", "int")[top.kind]
    if not isinstance(top, Open):
        return type_name(top)
    if top.kind != "call":
        return top.kind
    if cut_array(top) is not MISSING:
        return "array"
    base = top.base
    return type_name(base.__new__(base)) if issubclass(base, Opaque) else str(base.__name__)
