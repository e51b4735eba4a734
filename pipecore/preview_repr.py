"""How a previewed object reads: a repr of plain data and stand-ins that stops early."""

from __future__ import annotations

from typing import Any

from pipecore.preview_standins import MISSING, Opaque, named, rebuilt, shows_args

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


def _is_str(*args: object) -> bool:
    return len(args) == 1 and type(args[0]) is str
