"""Stand-ins for the globals a frame names: never imported, read back only when known safe."""

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


def rebuild_array(cls: object, code: object, mformat: object, items: object) -> Any:
    # cls is the stand-in for array.array: the unpickler never hands out the class itself.
    if (
        getattr(cls, "module", "") == "array" == getattr(cls, "qualname", "")
        and type(items) is bytes
    ):
        return array._array_reconstructor(array.array, code, mformat, items)  # type: ignore[attr-defined]
    return MISSING


def array_of(code: object, items: object) -> Any:
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
    ("array", "_array_reconstructor"): rebuild_array,
    ("array", "array"): array_of,
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


def shows_args(cls: type[Opaque]) -> bool:
    """Whether `cls` is a built-in exception: its repr is its name and its arguments."""
    held = named(cls) if cls.module == "builtins" else MISSING
    return isinstance(held, type) and issubclass(held, BaseException)
