"""Previews of pickled frames (pipecore.preview): type names without importing, bounded text."""

import pickle

import pytest

from pipecore.preview import describe_pickle


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
