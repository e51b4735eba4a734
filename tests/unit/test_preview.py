"""Previews of pickled frames (pipecore.preview): type names without importing, bounded text."""

import array
import datetime
import decimal
import io
import pickle
import sys
from multiprocessing.reduction import ForkingPickler
from pathlib import Path
from typing import Any

import pytest

from pipecore.preview import clip, describe_pickle
from pipecore.ring import HEAD_STORE


class Point:
    def __init__(self, x: int) -> None:
        self.x = x


@pytest.mark.parametrize(
    ("obj", "type_name", "preview"),
    [
        ("hello", "str", "'hello'"),
        ({"k": [1, 2]}, "dict", "{'k': [1, 2]}"),
        (None, "NoneType", "None"),
        (Point(1), "Point", "Point(…)"),
        ({1, 2}, "set", "{1, 2}"),
    ],
)
def test_describe_pickle_previews_without_importing(
    obj: object, type_name: str, preview: str
) -> None:
    data = pickle.dumps(obj, protocol=4)
    assert describe_pickle(data, complete=True) == (type_name, preview)


def test_describe_pickle_of_a_truncated_frame_bounds_the_preview() -> None:
    data = pickle.dumps("x" * 100_000, protocol=4)
    type_name, preview = describe_pickle(data[:192], complete=False)
    assert type_name == "str"
    assert preview.startswith("'xxx")
    assert preview.endswith("…")
    assert len(preview) <= 80
    big = pickle.dumps(b"\x00" * 100_000, protocol=4)
    assert describe_pickle(big[:192], complete=False)[0] == "bytes"
    assert describe_pickle(pickle.dumps([Point(1)] * 50)[:64], complete=False)[0] == "list"


def work(x: int) -> int:
    return x


def _looped() -> list[object]:
    looped: list[object] = [1]
    looped.append(looped)
    return looped


def _self_keyed() -> dict[str, object]:
    mapping: dict[str, object] = {}
    mapping["self"] = mapping
    return mapping


def _tuple_cycle() -> tuple[list[object]]:
    cycle: tuple[list[object]] = ([],)
    cycle[0].append(cycle)
    return cycle


def _named(obj: Any) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


# Payloads, each pickled as Connection.send pickles it; None: (type(obj).__name__, repr, cut).
# Otherwise the documented form, where the preview deliberately differs from repr.
STDLIB_PAYLOADS = [
    pytest.param(0, None, id="int-0"),
    pytest.param(-(2**100), None, id="int-big"),
    pytest.param(1.5, None, id="float"),
    pytest.param(float("-inf"), None, id="float-inf"),
    pytest.param(1 + 2j, None, id="complex"),
    pytest.param("héllo 世界", None, id="str"),
    pytest.param("it's", None, id="str-quote"),
    pytest.param("x" * 500, None, id="str-large"),
    pytest.param(b"\x00\xff", None, id="bytes"),
    pytest.param(b"y" * 500, None, id="bytes-large"),
    pytest.param(bytearray(b"ab"), None, id="bytearray"),
    pytest.param(bytearray(b"z" * 500), None, id="bytearray-large"),
    pytest.param(None, None, id="none"),
    pytest.param(True, None, id="true"),
    pytest.param(False, None, id="false"),
    pytest.param((), None, id="tuple-0"),
    pytest.param((1,), None, id="tuple-1"),
    pytest.param((1, "a"), None, id="tuple-2"),
    pytest.param((1, "a", None), None, id="tuple-3"),
    pytest.param((1, 2, 3, 4), None, id="tuple-4"),
    pytest.param((1, 2.5, "c", b"d", None), None, id="tuple-5"),
    pytest.param(((1, 2), (3, (4, (5,)))), None, id="tuple-nested"),
    pytest.param((1, "x" * 2000), None, id="tuple-2-large"),
    pytest.param(("job", 3, {"k": "v" * 3000}), None, id="tuple-3-large"),
    pytest.param((7, 0, (True, list(range(100)))), None, id="tuple-pool-result"),
    pytest.param((1, 2, 3, 4, "x" * 500), None, id="tuple-5-large"),
    # The head of a longer frame cannot show that (1, 'x…') is itself an item: its tuple
    # opcode comes after the string, beyond the stored bytes.
    pytest.param(
        ((1, "x" * 2000), 2), ("tuple", clip("(1, '" + "x" * 100)), id="tuple-in-tuple-large"
    ),
    pytest.param([], None, id="list-0"),
    pytest.param([1, [2, [3, [4, [5]]]]], None, id="list-deep"),
    pytest.param(list(range(10)), None, id="list-10"),
    pytest.param(list(range(1000)), None, id="list-large"),
    pytest.param({}, None, id="dict-0"),
    pytest.param({"k": (1, 2), (1, 2): {3}}, None, id="dict"),
    pytest.param({i: str(i) for i in range(200)}, None, id="dict-large"),
    pytest.param(set(), None, id="set-0"),
    pytest.param({1, 2, 3}, None, id="set"),
    pytest.param(set(range(300)), None, id="set-large"),
    pytest.param(frozenset(), None, id="frozenset-0"),
    pytest.param(frozenset({"z"}), None, id="frozenset"),
    # A frozenset is its items then one opcode, like a tuple of four or more: from the
    # first bytes of a longer frame it reads as the tuple.
    pytest.param(
        frozenset(range(300)), ("tuple", clip(repr(tuple(range(300))) + "…")), id="frozenset-large"
    ),
    pytest.param(range(3), None, id="range"),
    pytest.param(slice(1, 5), None, id="slice"),
    # A global pickles by name: whether __main__.work is a function or a class would take
    # importing the sender's module, which the collector never does.
    pytest.param(work, ("global", _named(work)), id="function"),
    pytest.param(Point, ("global", _named(Point)), id="class"),
    pytest.param((work, (1, 2)), ("tuple", f"({_named(work)}, (1, 2))"), id="function-in-tuple"),
    pytest.param(len, None, id="builtin-len"),
    pytest.param(print, None, id="builtin-print"),
    pytest.param(int, None, id="builtin-class"),
    pytest.param(ValueError, None, id="builtin-exception-class"),
    pytest.param(type(None), None, id="none-type"),
    pytest.param(Ellipsis, None, id="ellipsis"),
    pytest.param(NotImplemented, None, id="notimplemented"),
    # An instance of a class the collector does not import: its name, never its repr.
    pytest.param(Point(1), ("Point", "Point(…)"), id="instance"),
    pytest.param(ValueError("bad"), None, id="exception"),
    pytest.param(KeyError("k" * 300), None, id="exception-large"),
    pytest.param(array.array("i", [1, 2]), None, id="array"),
    pytest.param(array.array("d", range(100)), None, id="array-large"),
    pytest.param(decimal.Decimal("1.10"), None, id="decimal"),
    pytest.param(datetime.datetime(2024, 1, 2, 3, 4, 5), None, id="datetime"),
    pytest.param(datetime.date(2024, 1, 2), None, id="date"),
    pytest.param(datetime.timedelta(days=1, seconds=2), None, id="timedelta"),
    # A tzinfo is an instance of a class not imported, so the datetime keeps its name only.
    pytest.param(
        datetime.datetime(2024, 1, 2, tzinfo=datetime.UTC),
        ("datetime", "datetime(…)"),
        id="datetime-tz",
    ),
    pytest.param(_looped(), None, id="list-self"),
    pytest.param(_self_keyed(), None, id="dict-self"),
    pytest.param(_tuple_cycle(), None, id="tuple-cycle"),
]


@pytest.mark.parametrize(("obj", "documented"), STDLIB_PAYLOADS)
def test_describe_pickle_reads_as_type_and_repr(
    obj: object, documented: tuple[str, str] | None
) -> None:
    frame = bytes(ForkingPickler.dumps(obj))
    # What the collector has: the first HEAD_STORE bytes, and whether that is all of it.
    got = describe_pickle(frame[:HEAD_STORE], complete=len(frame) <= HEAD_STORE)
    assert got == (documented or (type(obj).__name__, clip(repr(obj))))


def _as_managers_pickle_it(a: "array.array[Any]") -> tuple[Any, tuple[str, bytes]]:
    # multiprocessing.managers registers this reducer with copyreg when it is imported
    return array.array, (a.typecode, a.tobytes())


@pytest.mark.parametrize("size", [2, 100])
@pytest.mark.parametrize("protocol", [4, 5])  # what multiprocessing's pickler uses
@pytest.mark.parametrize("by_managers", [False, True])
def test_an_array_reads_as_its_repr_however_it_was_pickled(
    size: int, protocol: int, by_managers: bool
) -> None:
    # One process's arrays pickle as _array_reconstructor(...), another's, once it has
    # imported multiprocessing.managers, as array.array(typecode, bytes).
    obj = array.array("i", range(size))
    out = io.BytesIO()
    pickler = pickle.Pickler(out, protocol)
    if by_managers:
        pickler.dispatch_table = {array.array: _as_managers_pickle_it}
    pickler.dump(obj)
    frame = out.getvalue()
    got = describe_pickle(frame[:HEAD_STORE], complete=len(frame) <= HEAD_STORE)
    assert got == ("array", clip(repr(obj)))


def _global(module: str, name: str) -> bytes:
    # SHORT_BINUNICODE module, SHORT_BINUNICODE name, STACK_GLOBAL
    return b"".join(b"\x8c" + bytes([len(s)]) + s.encode() for s in (module, name)) + b"\x93"


def test_describe_pickle_never_imports_or_calls_what_a_frame_names(tmp_path: Path) -> None:
    assert "tabnanny" not in sys.modules
    touched = tmp_path / "touched"
    frames = {
        # os.system("touch …"), and a module the collector has not imported
        "system": _global("os", "system") + b"X" + _sized(f"touch {touched}") + b"\x85R.",
        "check": _global("tabnanny", "check") + b")R.",
        # set(range(2**40)): a few bytes that would exhaust memory if range were real
        "set": _global("builtins", "set")
        + _global("builtins", "range")
        + b"K\x00\x8a\x06\x00\x00\x00\x00\x00\x01\x86R\x85R.",
    }
    for name, body in frames.items():
        frame = b"\x80\x04" + body
        for head, complete in ((frame, True), (frame[:-2], False)):
            assert len(describe_pickle(head, complete)[1]) <= 80, name
    assert describe_pickle(b"\x80\x04" + frames["system"], True) == ("system", "system(…)")
    assert not touched.exists()
    assert "tabnanny" not in sys.modules


def _sized(text: str) -> bytes:
    return len(text).to_bytes(4, "little") + text.encode()
