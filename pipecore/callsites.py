"""CallSites: the user's `file:line` of each traced call, defined once per ring."""

from __future__ import annotations

import multiprocessing
import os
from types import FrameType

from pipecore.ring import REC_DEFINE
from pipecore.ringwriter import RingWriter

_HERE = os.path.dirname(os.path.abspath(__file__))
_OWN_FILES = frozenset(
    os.path.join(_HERE, n)
    for n in (
        "callrecords.py",
        "recorder.py",
        "telemetry.py",
        "traced.py",
        "tracedcalls.py",
        "tracedconnection.py",
        # `pipescope trace` puts its Pipe in multiprocessing's place: the user calls it
        os.path.join("autotrace", "boot.py"),
    )
)
_MP_DIR = os.path.dirname(os.path.abspath(multiprocessing.__file__)) + os.sep


def _library_file(filename: str) -> bool:
    # The tracing's own frames and multiprocessing's internals are not the user's site.
    return filename in _OWN_FILES or filename.startswith(_MP_DIR)


class CallSites(RingWriter):
    """Site ids of a ring: each call site gets an id, recorded once with its text."""

    def __init__(self, run_dir: str) -> None:
        super().__init__(run_dir)
        # (id(code), lasti) -> site id; -1: a library frame, walk further up.
        self.sites: dict[tuple[int, int], int] = {}
        # (id(code), line) -> site id: a call of a C method is seen at one of two
        # instructions (the specialised one or the generic one), which is one site.
        self.line_sites: dict[tuple[int, int], int] = {}
        self.site_codes: list[object] = []  # keeps ids in `sites` from being reused

    def site(self, frame: FrameType | None) -> int:
        """The site id of the user's frame at or above `frame`, defining it if new."""
        sites = self.sites
        while frame is not None:
            key = (id(frame.f_code), frame.f_lasti)
            sid = sites.get(key)
            if sid is None:
                sid = self._define_site(key, frame)
            if sid >= 0:
                return sid
            frame = frame.f_back
        return 0

    def _define_site(self, key: tuple[int, int], frame: FrameType) -> int:
        filename = frame.f_code.co_filename
        with self.lock:
            line = frame.f_lineno
            if _library_file(filename):
                sid = -1
            elif (key[0], line) in self.line_sites:
                sid = self.line_sites[key[0], line]
            else:
                sid = len(self.line_sites) + 1
                self.line_sites[key[0], line] = sid
                text = f"{filename}:{line}"
                self._write_json(REC_DEFINE, {"site_id": sid, "site": text}, False, 0)
            self.site_codes.append(frame.f_code)
            self.sites[key] = sid
        return sid

    def site_of(self, frame: FrameType | None) -> str | None:
        """The user's `file:line` for `frame`, walking past library frames."""
        while frame is not None:
            filename = frame.f_code.co_filename
            if not _library_file(filename):
                return f"{filename}:{frame.f_lineno}"
            frame = frame.f_back
        return None
