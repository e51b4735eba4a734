"""How a previewed object reads: stand-ins for named globals, and a repr that stops early."""

from __future__ import annotations

import array
import builtins
import datetime
from types import BuiltinFunctionType
from typing import Any

MISSING: Any = object()


class Opaque:
    """An object a frame rebuilds with a callable the collector does not import: it keeps
    the arguments, so that a few known reconstructors can be read back safely."""

    module = ""
    qualname = "object"
    args: tuple[Any, ...] = ()

    def __new__(cls, *args: object, **kwargs: object) -> Opaque:
        self = object.__new__(cls)
        self.args = args
        return self

    def __init__(self, *args: object, **kwargs: object) -> None:
        """Its state (BUILD), its items (a list or dict subclass): not shown."""

    __setstate__ = __setitem__ = append = extend = __init__

    def __repr__(self) -> str:
        return f"{self.qualname}(…)"


# Classes a frame may name that are harmless to call with plain data: the unpickler gets
# the real class. Not range: set(range(2**40)) would fit in a few bytes.
REAL_CLASSES: dict[str, type] = {t.__name__: t for t in (set, frozenset, complex, slice, object)}
_stand_ins: dict[tuple[str, str], type[Opaque]] = {}


def find_global(module: str, qualname: str) -> Any:
    """What a frame's global `module.qualname` unpickles to: never an import."""
    if module == "builtins" and qualname in REAL_CLASSES:
        return REAL_CLASSES[qualname]
    cls = _stand_ins.get((module, qualname))
    if cls is None:
        cls = type("StandIn", (Opaque,), {"module": module, "qualname": qualname})
        if len(_stand_ins) < 1024:
            _stand_ins[module, qualname] = cls
    return cls


def named(cls: type[Opaque]) -> Any:
    """The object a global reference denotes, when the collector holds it without an
    import (builtins, array.array) and its repr runs no user code; else MISSING."""
    if cls.module == "builtins":
        obj = vars(builtins).get(cls.qualname, MISSING)
        if isinstance(obj, type | BuiltinFunctionType) or obj is Ellipsis or obj is NotImplemented:
            return obj
    elif (cls.module, cls.qualname) == ("array", "array"):
        return array.array
    return MISSING


def _array(cls: object, code: object, mformat: object, items: object) -> Any:
    # cls is the stand-in for array.array: the unpickler never hands out the class itself.
    if (
        getattr(cls, "module", "") == "array" == getattr(cls, "qualname", "")
        and type(items) is bytes
    ):
        return array._array_reconstructor(array.array, code, mformat, items)  # type: ignore[attr-defined]
    return MISSING


def _array_of(code: object, items: object) -> Any:
    # array.array(typecode, bytes or list): how arrays pickle once multiprocessing.managers
    # is imported (it registers that reducer with copyreg), and under protocols 0-2.
    if type(code) is str and code in array.typecodes and type(items) in (bytes, list):
        return array.array(code, items)  # type: ignore[call-overload]
    return MISSING


def _ints(kind: Any) -> Any:
    return lambda *args: kind(*args) if all(type(a) is int for a in args) else MISSING


def _from_state(kind: Any) -> Any:
    # date, time and datetime pickle as one bytes state, then a tzinfo (not rebuilt).
    return lambda *args: kind(*args) if len(args) == 1 and type(args[0]) is bytes else MISSING


# Reconstructors (as pickle protocols 4 and 5 name them) whose result is cheap and safe
# to rebuild from plain data; whatever one raises leaves the object as Name(…).
_REBUILD: dict[tuple[str, str], Any] = {
    ("array", "_array_reconstructor"): _array,
    ("array", "array"): _array_of,
    ("builtins", "bytearray"): lambda data: bytearray(data) if type(data) is bytes else MISSING,
    ("builtins", "range"): _ints(range),
    ("builtins", "type"): lambda obj: type(None) if obj is None else MISSING,
    ("datetime", "timedelta"): _ints(datetime.timedelta),
    ("datetime", "date"): _from_state(datetime.date),
    ("datetime", "time"): _from_state(datetime.time),
    ("datetime", "datetime"): _from_state(datetime.datetime),
}


def rebuilt(obj: Opaque) -> Any:
    """The object a stand-in instance stands for, when a known reconstructor made it."""
    rebuild = _REBUILD.get((obj.module, obj.qualname))
    if rebuild is None:
        return MISSING
    try:
        return rebuild(*obj.args)
    except Exception:
        return MISSING


PLAIN = frozenset((int, float, complex, str, bytes, bool, type(None)))


class Full(Exception):
    """The preview has all the characters it can show."""


class ReprWriter:
    """`repr` of plain data, bounded: stops once it has written `limit` characters, and
    shows a container that holds itself as repr does (`[1, [...]]`)."""

    def __init__(self, limit: int) -> None:
        self.parts: list[str] = []
        self.left = limit
        self._active: set[int] = set()

    def text(self) -> str:
        return "".join(self.parts)

    def put(self, text: str) -> None:
        self.parts.append(text)
        self.left -= len(text)
        if self.left < 0:
            raise Full

    def items(self, items: Any, comma: bool = False) -> None:
        """Items separated by commas (and one before the first, if `comma`)."""
        for item in items:
            if type(item) in PLAIN:
                self.put(f", {item!r}" if comma else repr(item))
            else:
                if comma:
                    self.put(", ")
                self.write(item)
            comma = True

    def write(self, obj: Any) -> None:
        kind = type(obj)
        if kind in (list, tuple, dict, set, frozenset):
            if id(obj) in self._active:
                self.put("[...]" if kind is list else "(...)" if kind is tuple else "{...}")
            else:
                self._container(obj)
        elif isinstance(obj, Opaque):
            self._opaque(obj)
        elif kind is slice:
            self.put("slice(")
            self.items((obj.start, obj.stop, obj.step))
            self.put(")")
        elif isinstance(obj, type) and issubclass(obj, Opaque):
            held = named(obj)
            self.put(f"{obj.module}.{obj.qualname}" if held is MISSING else repr(held))
        else:
            self.put(repr(obj))

    def _container(self, obj: Any) -> None:
        kind = type(obj)
        if kind is tuple:
            self.put("(")
            self.contents(obj)
            self.put(",)" if len(obj) == 1 else ")")
        elif kind is list or kind is dict:
            self.put("[" if kind is list else "{")
            self.contents(obj)
            self.put("]" if kind is list else "}")
        elif not obj:
            self.put(f"{kind.__name__}()")
        else:
            self.put("{" if kind is set else "frozenset({")
            self.contents(obj)
            self.put("}" if kind is set else "})")

    def contents(self, obj: Any) -> None:
        """The items of a tuple, list, set or dict, without its brackets."""
        self._active.add(id(obj))
        if type(obj) is dict:
            for i, (key, value) in enumerate(obj.items()):
                self.put(", " if i else "")
                self.write(key)
                self.put(": ")
                self.write(value)
        else:
            self.items(obj)
        self._active.discard(id(obj))

    def _opaque(self, obj: Opaque) -> None:
        again = rebuilt(obj)
        if again is not MISSING:
            self.write(again)
            return
        if shows_args(type(obj)):
            self.put(f"{obj.qualname}(")
            self.items(obj.args)
            self.put(")")
        elif (obj.module, obj.qualname) == ("decimal", "Decimal") and _is_str(*obj.args):
            self.put(f"Decimal({obj.args[0]!r})")  # pickled as its str, which repr quotes
        else:
            self.put(repr(obj))


def shows_args(cls: type[Opaque]) -> bool:
    """Whether `cls` is a built-in exception: its repr is its name and its arguments."""
    held = named(cls) if cls.module == "builtins" else MISSING
    return isinstance(held, type) and issubclass(held, BaseException)


def _is_str(*args: object) -> bool:
    return len(args) == 1 and type(args[0]) is str


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
    whole = data[: len(data) // array.array(code).itemsize * array.array(code).itemsize]
    try:
        if base == ("array", "array"):
            return _array_of(code, whole)
        return _array(args[0], code, args[2], whole)
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
